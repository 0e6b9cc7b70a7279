import type { Kysely, Selectable } from "kysely";
import type { CliLoginSessionsTable, Database } from "./schema.js";

type Db = Kysely<Database>;
export type LoginSession = Selectable<CliLoginSessionsTable>;

export async function insertSession(db: Db, row: LoginSession): Promise<void> {
  await db.insertInto("cli_login_sessions").values(row).execute();
}

export async function findSession(db: Db, id: string): Promise<LoginSession | undefined> {
  return db.selectFrom("cli_login_sessions").selectAll().where("id", "=", id).executeTakeFirst();
}

export async function findSessionByBrowserId(db: Db, browserId: string): Promise<LoginSession | undefined> {
  return db.selectFrom("cli_login_sessions").selectAll().where("browser_id", "=", browserId).executeTakeFirst();
}

export async function approveSession(db: Db, browserId: string, workspaceId: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("cli_login_sessions")
    .set({ approved_workspace_id: workspaceId, approved_at: now })
    .where("browser_id", "=", browserId)
    .where("approved_at", "is", null)
    .where("expires_at", ">", now)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Single use: true for the one caller that marks the approved session redeemed. */
export async function redeemSession(db: Db, id: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("cli_login_sessions")
    .set({ redeemed_at: now })
    .where("id", "=", id)
    .where("redeemed_at", "is", null)
    .where("approved_at", "is not", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function deleteExpiredSessions(db: Db, now: number): Promise<void> {
  await db.deleteFrom("cli_login_sessions").where("expires_at", "<=", now - 24 * 3600 * 1000).execute();
}
