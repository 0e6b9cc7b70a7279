import type { ApiTokenListing } from "../../store/tokens.js";
import { defineAction, id, isoTime, object, shortText, text } from "../action.js";
import type { TokenView } from "../contract.js";

/** `expiresAt` is always a string: the official CLI cannot list tokens otherwise. */
function tokenView(row: ApiTokenListing): TokenView {
  const view: TokenView = {
    id: row.id,
    name: row.name,
    issuedAt: new Date(row.created_at).toISOString(),
    expiresAt: isoTime(row.expires_at) ?? "never",
  };
  if (row.revoked_at !== null) view.revokedAt = new Date(row.revoked_at).toISOString();
  return view;
}

export const tokenActions = [
  defineAction({
    name: "CreateToken",
    auth: "workspace",
    schema: object({ name: text(200, 1), expiresIn: shortText }, ["name"]),
    async handle({ caller, deps, body }) {
      const minted = await deps.tokens.create(caller, body);
      return { token: minted.token, id: minted.id, name: body.name, expiresAt: isoTime(minted.expiresAt) ?? "never" };
    },
  }),
  defineAction({
    name: "ListTokens",
    auth: "workspace",
    schema: object({}),
    async handle({ caller, deps }) {
      return { tokens: (await deps.tokens.list(caller)).map(tokenView) };
    },
  }),
  defineAction({
    name: "RevokeToken",
    auth: "workspace",
    schema: object({ tokenId: id }, ["tokenId"]),
    async handle({ caller, deps, body }) {
      return { token: tokenView(await deps.tokens.revoke(caller, body.tokenId)) };
    },
  }),
];
