import type { Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { ApiToken, Database } from "./schema.js";

type Db = Kysely<Database>;

export async function insertToken(db: Db, row: ApiToken): Promise<void> {
  await db.insertInto("api_tokens").values(row).execute();
}

/** The token with this hash and its workspace's name: one indexed read per authenticated request. */
const tokenByHash = prepared((db: Db, p: { tokenHash: string }) =>
  db
    .selectFrom("api_tokens")
    .innerJoin("workspaces", "workspaces.id", "api_tokens.workspace_id")
    .select([
      "api_tokens.id",
      "api_tokens.workspace_id",
      "api_tokens.name",
      "api_tokens.role",
      "api_tokens.expires_at",
      "api_tokens.revoked_at",
      "workspaces.name as workspace_name",
    ])
    .where("api_tokens.token_hash", "=", p.tokenHash),
);

export async function findTokenByHash(db: Db, tokenHash: string) {
  return (await tokenByHash(db, { tokenHash }))[0];
}

/** A token as listed: everything but its hash. */
export type ApiTokenListing = Omit<ApiToken, "token_hash">;

const LISTED = ["id", "workspace_id", "name", "role", "created_at", "expires_at", "revoked_at"] as const;

export async function listTokens(db: Db, workspaceId: string): Promise<ApiTokenListing[]> {
  return db
    .selectFrom("api_tokens")
    .select(LISTED)
    .where("workspace_id", "=", workspaceId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
}

/** Marks a token revoked; undefined when the workspace has no such token. Revoking twice keeps the first time. */
export async function revokeToken(db: Db, workspaceId: string, tokenId: string, now: number): Promise<ApiTokenListing | undefined> {
  const row = await db
    .selectFrom("api_tokens")
    .select(LISTED)
    .where("workspace_id", "=", workspaceId)
    .where("id", "=", tokenId)
    .executeTakeFirst();
  if (!row) return undefined;
  if (row.revoked_at === null) {
    await db.updateTable("api_tokens").set({ revoked_at: now }).where("id", "=", tokenId).where("revoked_at", "is", null).execute();
    return { ...row, revoked_at: now };
  }
  return row;
}
