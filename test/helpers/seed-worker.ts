import fs from "node:fs";
import path from "node:path";
import type { TestProvider } from "./start-provider.js";

/**
 * The seed's worker (SPEC section 1), unchanged but for its endpoints: they point at the test's
 * authorization server, and the tool fetches the test's resource API instead of api.github.com.
 */
export function seedWorkerSource(
  provider: Pick<TestProvider, "authorizationEndpoint" | "tokenEndpoint" | "resourceUrl">,
  options: { accessTokenExpireMs?: number; imports?: string; moreTools?: string } = {},
): string {
  const ttl = options.accessTokenExpireMs ? `\n  accessTokenExpireMs: ${options.accessTokenExpireMs},` : "";
  return `${options.imports ?? ""}import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;

const githubAuth = worker.oauth("githubAuth", {
  name: "github-oauth",
  authorizationEndpoint: ${JSON.stringify(provider.authorizationEndpoint)},
  tokenEndpoint: ${JSON.stringify(provider.tokenEndpoint)},
  scope: "repo user",
  clientId: process.env.GITHUB_CLIENT_ID ?? "",
  clientSecret: process.env.GITHUB_CLIENT_SECRET ?? "",${ttl}
});

worker.tool("getGitHubRepos", {
  title: "Get GitHub Repos",
  description: "Fetch the user's repositories",
  schema: j.object({}),
  execute: async () => {
    const token = await githubAuth.accessToken();
    const response = await fetch(${JSON.stringify(provider.resourceUrl)}, {
      headers: { Authorization: \`Bearer \${token}\` },
    });
    return response.json();
  },
});
${options.moreTools ?? ""}`;
}

export function writeSeedWorker(dir: string, provider: Pick<TestProvider, "authorizationEndpoint" | "tokenEndpoint" | "resourceUrl">): void {
  fs.mkdirSync(path.join(dir, "src"), { recursive: true });
  fs.writeFileSync(path.join(dir, "src", "index.ts"), seedWorkerSource(provider));
}

/** The runtime variable of the seed's connection: OAUTH_ + hex("github-oauth") + _ACCESS_TOKEN. */
export const SEED_TOKEN_VAR = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
