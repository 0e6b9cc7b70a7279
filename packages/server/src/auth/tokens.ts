import type { Kysely } from "kysely";
import ms from "ms";
import { AppError } from "../errors.js";
import { newId, randomToken, sha256Hex } from "../ids.js";
import type { Database } from "../store/schema.js";
import type { ChangeFeed } from "../store/changes.js";
import { ReadCache } from "../store/read-cache.js";
import * as tokensStore from "../store/tokens.js";

/** Who is calling: resolved once per request from the bearer token. */
export interface Caller {
  tokenId: string;
  tokenName: string;
  workspaceId: string;
  workspaceName: string;
  role: "admin" | "member";
}

/** API tokens start with this prefix, so leaked ones are easy to recognise and scan for. */
export const TOKEN_PREFIX = "wy_";

export function mintToken(): { token: string; hash: string } {
  const token = `${TOKEN_PREFIX}${randomToken(32)}`;
  return { token, hash: sha256Hex(token) };
}

/** A century: beyond it a lifetime is a typo, and far beyond it no longer a date. */
const MAX_TOKEN_LIFETIME_MS = 100 * 365.25 * 86_400_000;

/**
 * "30 days", "12h", "1 year", "never" (as the official CLI sends them) to a lifetime in ms,
 * or null for a token that does not expire.
 */
export function parseExpiresIn(expiresIn: string | undefined): number | null {
  if (expiresIn === undefined || expiresIn.trim() === "" || /^(never|none|0)$/i.test(expiresIn.trim())) return null;
  const text = expiresIn.trim();
  const value = /^\d+$/.test(text) ? Number(text) * 86_400_000 : ms(text as ms.StringValue);
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > MAX_TOKEN_LIFETIME_MS) {
    throw new AppError("validation_error", `Cannot read expiresIn ${JSON.stringify(expiresIn)} as a duration.`, {
      hint: 'Use a duration of at most 100 years such as "30 days", "12h", "1 year", or "never".',
    });
  }
  return value;
}

/** A freshly created token: the only moment its value exists outside the caller. */
export interface MintedToken {
  token: string;
  id: string;
  createdAt: number;
  expiresAt: number | null;
}

export interface TokenService {
  authenticate(bearer: string | undefined): Promise<Caller>;
  create(caller: Caller, input: { name: string; expiresIn?: string | undefined }): Promise<MintedToken>;
  createFor(workspaceId: string, name: string, role: "admin" | "member", lifetimeMs: number | null): Promise<MintedToken>;
  list(caller: Caller): Promise<tokensStore.ApiTokenListing[]>;
  revoke(caller: Caller, tokenId: string): Promise<tokensStore.ApiTokenListing>;
}

const unauthorized = (message: string) =>
  new AppError("unauthorized", message, {
    hint: "Log in again with `ntn login`, or set NOTION_API_TOKEN to a valid Workyard API token.",
  });

/**
 * `changes`: a revocation is told to every server process, and the tokens each keeps in memory
 * (by hash, never the token itself) are read again.
 */
export function createTokenService(db: Kysely<Database>, changes: ChangeFeed, now: () => number = Date.now): TokenService {
  const byHash = new ReadCache<NonNullable<Awaited<ReturnType<typeof tokensStore.findTokenByHash>>>>(changes, "api_tokens", (row) => row.id);
  async function createFor(workspaceId: string, name: string, role: "admin" | "member", lifetimeMs: number | null): Promise<MintedToken> {
    const { token, hash } = mintToken();
    const id = newId();
    const createdAt = now();
    const expiresAt = lifetimeMs === null ? null : createdAt + lifetimeMs;
    await tokensStore.insertToken(db, {
      id,
      workspace_id: workspaceId,
      name,
      token_hash: hash,
      role,
      created_at: createdAt,
      expires_at: expiresAt,
      revoked_at: null,
    });
    return { token, id, createdAt, expiresAt };
  }

  return {
    async authenticate(bearer) {
      if (!bearer) throw unauthorized("Missing API token: send it as `Authorization: Bearer <token>`.");
      const hash = sha256Hex(bearer);
      const row = await byHash.get(hash, () => tokensStore.findTokenByHash(db, hash));
      if (!row) throw unauthorized("Invalid API token.");
      if (row.revoked_at !== null) throw unauthorized("This API token was revoked.");
      if (row.expires_at !== null && row.expires_at <= now()) throw unauthorized("This API token has expired.");
      return {
        tokenId: row.id,
        tokenName: row.name,
        workspaceId: row.workspace_id,
        workspaceName: row.workspace_name,
        role: row.role,
      };
    },

    async create(caller, input) {
      return createFor(caller.workspaceId, input.name, "member", parseExpiresIn(input.expiresIn));
    },

    createFor,

    async list(caller) {
      return tokensStore.listTokens(db, caller.workspaceId);
    },

    async revoke(caller, tokenId) {
      const row = await changes.transaction(db, async (trx, publish) => {
        const revoked = await tokensStore.revokeToken(trx, caller.workspaceId, tokenId, now());
        if (revoked) publish({ table: "api_tokens", id: revoked.id });
        return revoked;
      });
      if (!row) {
        throw new AppError("token_not_found", `Token ${JSON.stringify(tokenId)} not found.`, {
          hint: "Run `ntn tokens list` to see this workspace's tokens.",
        });
      }
      return row;
    },
  };
}
