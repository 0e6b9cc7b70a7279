#!/usr/bin/env node
// A local OAuth 2.0 authorization server for trying Workyard on one machine: oidc-provider (the
// test suite's provider) with development login and consent pages, refresh tokens, a short access
// token lifetime, and a resource API at /api/user/repos that accepts only its valid tokens.
//
//   node scripts/local-oauth-provider.mjs [--port 4000] [--server http://127.0.0.1:7777] [--ttl 120]
//
// The client's redirect URL is the Workyard server's callback: --server names the server (default
// NOTION_API_BASE_URL, else http://127.0.0.1:7777), or --redirect gives the URL whole. Any user
// name and password log in. Stop it with Ctrl-C. For development only.
import http from "node:http";
import { parseArgs } from "node:util";
import Provider from "oidc-provider";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "4000" },
    server: { type: "string", default: process.env.NOTION_API_BASE_URL || "http://127.0.0.1:7777" },
    redirect: { type: "string" },
    ttl: { type: "string", default: "120" },
    "client-id": { type: "string", default: "local-client" },
    "client-secret": { type: "string", default: "local-client-secret" },
  },
});

const issuer = `http://127.0.0.1:${values.port}`;
// What `ntn workers oauth show-redirect-url` prints for that server.
values.redirect ??= `${values.server.replace(/\/+$/, "")}/workers/oauth/callback`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: values["client-id"],
      client_secret: values["client-secret"],
      redirect_uris: [values.redirect],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  ttl: { AccessToken: Number(values.ttl), AuthorizationCode: 60, RefreshToken: 14 * 86400, Grant: 14 * 86400, Session: 86400, Interaction: 600, IdToken: 3600 },
  features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
  scopes: ["openid", "offline_access", "repo", "user"],
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  rotateRefreshToken: true,
});
const oidc = provider.callback();
const server = http.createServer(async (req, res) => {
  if (!req.url?.startsWith("/api/")) return oidc(req, res);
  const token = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "")?.[1];
  const found = token ? await provider.AccessToken.find(token) : undefined;
  res.setHeader("content-type", "application/json");
  if (!found || found.isExpired) {
    res.statusCode = 401;
    return res.end(JSON.stringify({ message: "Bad credentials" }));
  }
  res.end(JSON.stringify([{ name: "hello-world", owner: found.accountId }, { name: "workyard-demo", owner: found.accountId }]));
});
server.listen(Number(values.port), "127.0.0.1", () => {
  console.log(`Local OAuth provider at ${issuer} (access tokens last ${values.ttl}s)`);
  console.log(`  client id:     ${values["client-id"]}`);
  console.log(`  client secret: ${values["client-secret"]}`);
  console.log(`  redirect URL:  ${values.redirect}`);
  console.log(`Set them on the worker: ntn workers env set LOCAL_CLIENT_ID=${values["client-id"]} LOCAL_CLIENT_SECRET=${values["client-secret"]}`);
});
