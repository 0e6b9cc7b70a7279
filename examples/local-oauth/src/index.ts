import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

// The seed's worker, pointed at the local authorization server that
// `node scripts/local-oauth-provider.mjs` starts (see the README): everything on one machine.
const issuer = process.env.LOCAL_OAUTH_ISSUER ?? "http://127.0.0.1:4000";

const worker = new Worker();
export default worker;

const localAuth = worker.oauth("localAuth", {
  name: "local-oauth",
  authorizationEndpoint: `${issuer}/auth`,
  tokenEndpoint: `${issuer}/token`,
  scope: "repo user",
  clientId: process.env.LOCAL_CLIENT_ID ?? "",
  clientSecret: process.env.LOCAL_CLIENT_SECRET ?? "",
});

worker.tool("getRepos", {
  title: "Get Repos",
  description: "Fetch the user's repositories from the local resource API",
  schema: j.object({}),
  execute: async () => {
    const token = await localAuth.accessToken();
    const response = await fetch(`${issuer}/api/user/repos`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    return response.json();
  },
});
