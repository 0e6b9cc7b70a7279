import { openBrowser } from "../../../browser.js";
import { defineCommand } from "../../../define-command.js";
import ms from "ms";
import { UsageError, UserError } from "../../../errors.js";

/** `--timeout`: a duration as the server's flags take them (20s, 5m), or bare seconds. */
export function parseTimeout(value: unknown): number {
  const text = String(value).trim();
  const parsed = /^\d+$/.test(text) ? Number(text) * 1000 : ms(text as ms.StringValue);
  if (typeof parsed !== "number" || !Number.isFinite(parsed) || parsed <= 0) {
    throw new UsageError(`--timeout must be a duration such as 90s, 5m or 300 (seconds); got ${JSON.stringify(text)}.`);
  }
  return parsed;
}

export default defineCommand({
  summary: "Start the OAuth flow for a capability and wait until it completes",
  args: [{ name: "KEY", description: "The OAuth capability key", required: true }],
  options: [
    { flags: "--no-wait", description: "Return once the browser is opened, as the official CLI does" },
    { flags: "--timeout <DURATION>", description: "How long to wait for the authorization, e.g. 90s or 5m", default: "5m" },
  ],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const timeoutMs = parseTimeout(ctx.opts.timeout);
    const workerId = ctx.workerId();
    const api = ctx.api();
    const flow = await api.call("StartOauth", { workerId, oauthCapabilityKey: key });
    const opened = await openBrowser(flow.authorizationUrl, ctx.env);
    if (!opened) {
      ctx.out.warn("Could not open browser automatically. Please visit:");
      ctx.out.status(`  ${flow.authorizationUrl}`);
    }
    ctx.out.success("Opening browser to complete OAuth flow...");
    ctx.out.status("");
    ctx.out.status("If the browser did not open, visit:");
    ctx.out.status(`  ${flow.authorizationUrl}`);
    ctx.out.status("");
    if (ctx.opts.wait === false) {
      ctx.out.status("After completing the flow in your browser, return to the CLI.");
      return;
    }
    // A provider that does not know this redirect URL shows its own error page and never comes back.
    ctx.out.status(`The provider must have this redirect URL registered: ${flow.redirectUrl}`);
    ctx.out.status("Waiting for the authorization... (Ctrl-C to stop waiting)");
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new UserError(`Timed out after ${ms(timeoutMs, { long: true })} waiting for the authorization of ${key}.`, {
          hint: `If the provider showed an error page (a redirect URI mismatch, say), register exactly ${flow.redirectUrl} with the provider, then run \`ntn workers oauth start ${key}\` again.`,
        });
      }
      const status = await api.call("GetOauthFlow", { workerId, state: flow.state, waitMs: Math.min(20_000, left) });
      if (status.status === "connected") {
        ctx.out.success(`Connected ${key}`);
        return;
      }
      if (status.status === "failed") {
        throw new UserError(status.error ?? `The authorization of ${key} failed.`, { hint: status.hint });
      }
    }
  },
});
