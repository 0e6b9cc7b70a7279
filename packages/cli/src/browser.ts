import { spawn } from "node:child_process";

/**
 * Opens a URL as the official CLI does: `$BROWSER` split on whitespace, `%s` replaced by the URL
 * (or the URL appended), waiting for that command to exit; otherwise the platform's opener.
 * Resolves false when nothing could be started, so the caller prints the URL for the person.
 */
export async function openBrowser(url: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  const browser = env.BROWSER?.trim();
  let command: string[];
  if (browser) {
    const parts = browser.split(/\s+/);
    command = parts.some((p) => p.includes("%s")) ? parts.map((p) => p.replaceAll("%s", url)) : [...parts, url];
  } else if (process.platform === "darwin") {
    command = ["open", url];
  } else if (process.platform === "win32") {
    command = ["cmd", "/c", "start", "", url];
  } else {
    command = ["xdg-open", url];
  }
  return new Promise((resolve) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: "ignore", env });
    child.on("error", () => resolve(false));
    child.on("exit", (code) => resolve(code === 0));
  });
}
