#!/usr/bin/env node
// A person's browser, for the OAuth tests: given as BROWSER="node browser-approve.mjs %s", it opens
// the authorization URL in headless Chromium (Debian's /usr/bin/chromium via playwright-core),
// logs in and approves on oidc-provider's pages (or denies, with WY_BROWSER_ACTION=deny), waits for
// Workyard's callback page and appends that page's text to WY_BROWSER_LOG.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const url = process.argv[2];
const action = process.env.WY_BROWSER_ACTION ?? "approve";
const log = process.env.WY_BROWSER_LOG;
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.WY_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
let exitCode = 0;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(url);
  for (let step = 0; step < 6 && !page.url().includes("/workers/oauth/callback"); step++) {
    if (await page.locator("input[name=login]").count()) {
      await page.fill("input[name=login]", "alice");
      await page.fill("input[name=password]", "any-password");
      await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    } else if (await page.locator("button[type=submit]").count()) {
      if (action === "deny") {
        // oidc-provider's consent page: "[ Cancel ]" aborts the interaction (access_denied).
        await Promise.all([page.waitForNavigation(), page.click("text=Cancel")]);
      } else {
        await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
      }
    } else {
      break;
    }
  }
  const text = await page.locator("body").innerText().catch(() => "");
  if (log) fs.appendFileSync(log, `URL ${page.url().split("?")[0]}\n${text}\n----\n`);
} catch (error) {
  if (log) fs.appendFileSync(log, `ERROR ${error.message}\n----\n`);
  exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
