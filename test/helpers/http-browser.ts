/**
 * A person's browser without a browser, for API-level OAuth tests: follows the authorization URL
 * with fetch and a cookie jar, signs in and consents (or cancels) on oidc-provider's development
 * pages, and stops at the redirect to Workyard's callback, which the test then opens (or keeps, to
 * replay it). browser-approve.mjs does the same in Chromium for the CLI tests.
 */

export interface AuthorizationOutcome {
  /** The redirect to the callback (code and state, or error), not opened yet. */
  callbackUrl?: string;
  /** A page the provider showed instead of coming back (its own error page). */
  providerPage?: { status: number; text: string };
}

function decodeEntities(text: string): string {
  return text
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&quot;", '"')
    .replaceAll("&#39;", "'")
    .replaceAll("&#x2F;", "/")
    .replaceAll("&#47;", "/")
    .replaceAll("&amp;", "&");
}

/** What a person reads: the page without styles and tags, entities decoded, white space collapsed. */
function pageText(html: string): string {
  return decodeEntities(
    html
      .replace(/<style[\s\S]*?<\/style>/g, "")
      .replace(/<[^>]+>/g, " ")
      .replace(/\s+/g, " ")
      .trim(),
  );
}

class CookieJar {
  private readonly cookies = new Map<string, string>();

  take(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(";");
      const eq = pair!.indexOf("=");
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attributes.some((a) => {
        const [k, v] = a.split("=").map((s) => s.trim());
        return (k?.toLowerCase() === "expires" && Date.parse(v ?? "") < Date.now()) || (k?.toLowerCase() === "max-age" && Number(v) <= 0);
      });
      if (expired || value === "") this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

/**
 * Walks oidc-provider's pages from `authorizationUrl` until a redirect reaches `callbackPrefix`
 * (returned unopened) or a page without a known form (returned as the provider's page).
 */
export async function authorizeOverHttp(
  authorizationUrl: string,
  options: { callbackPrefix: string; action?: "approve" | "deny"; login?: string },
): Promise<AuthorizationOutcome> {
  const jar = new CookieJar();
  let url = authorizationUrl;
  let init: RequestInit = { method: "GET" };
  for (let step = 0; step < 25; step++) {
    const response = await fetch(url, { ...init, redirect: "manual", headers: { ...(init.headers as Record<string, string>), cookie: jar.header() } });
    jar.take(response);
    if (response.status >= 300 && response.status < 400) {
      await response.arrayBuffer();
      const next = new URL(response.headers.get("location")!, url).href;
      if (next.startsWith(options.callbackPrefix)) return { callbackUrl: next };
      url = next;
      init = { method: "GET" };
      continue;
    }
    const html = await response.text();
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
    if (response.status === 200 && action && prompt === "login") {
      url = new URL(decodeEntities(action), url).href;
      init = {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ prompt: "login", login: options.login ?? "alice", password: "any-password" }).toString(),
      };
      continue;
    }
    if (response.status === 200 && action && prompt === "consent") {
      if (options.action === "deny") {
        const abort = /href="([^"]*\/abort[^"]*)"/.exec(html)?.[1];
        if (!abort) throw new Error("The consent page has no cancel link.");
        url = new URL(decodeEntities(abort), url).href;
        init = { method: "GET" };
      } else {
        url = new URL(decodeEntities(action), url).href;
        init = {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ prompt: "consent" }).toString(),
        };
      }
      continue;
    }
    return { providerPage: { status: response.status, text: pageText(html) } };
  }
  throw new Error("Too many steps on the provider's pages.");
}

/** The callback page as a browser gets it: status, HTML, and its text without tags. */
export async function openPage(url: string): Promise<{ status: number; html: string; text: string }> {
  const response = await fetch(url, { redirect: "manual" });
  const html = await response.text();
  return { status: response.status, html, text: pageText(html) };
}
