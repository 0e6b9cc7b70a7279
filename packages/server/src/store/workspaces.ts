import { sql, type Kysely } from "kysely";
import type { Database, Workspace } from "./schema.js";

type Db = Kysely<Database>;

/**
 * Inserts a workspace with the next free sandbox index (max + 1, in the same statement). Two
 * servers inserting at once on PostgreSQL may pick the same index: the unique index refuses the
 * second, which tries again.
 */
export async function insertWorkspace(db: Db, row: Omit<Workspace, "sandbox_index">): Promise<Workspace> {
  for (let attempt = 0; ; attempt++) {
    try {
      const inserted = await db
        .insertInto("workspaces")
        .values({
          ...row,
          sandbox_index: sql<number>`(select coalesce(max(sandbox_index), 0) + 1 from workspaces)`,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return { ...inserted, sandbox_index: Number(inserted.sandbox_index), created_at: Number(inserted.created_at) };
    } catch (error) {
      if (attempt >= 5 || !/unique|duplicate/i.test((error as Error).message) || /workspaces_pkey|workspaces\.id/i.test((error as Error).message)) throw error;
    }
  }
}

export async function findWorkspace(db: Db, id: string): Promise<Workspace | undefined> {
  return db.selectFrom("workspaces").selectAll().where("id", "=", id).executeTakeFirst();
}

/** The sandbox index of a workspace (its workers' uid offset). */
export async function sandboxIndexOf(db: Db, id: string): Promise<number | undefined> {
  const row = await db.selectFrom("workspaces").select("sandbox_index").where("id", "=", id).executeTakeFirst();
  return row ? Number(row.sandbox_index) : undefined;
}

export async function countWorkspaces(db: Db): Promise<number> {
  const row = await db.selectFrom("workspaces").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function firstWorkspace(db: Db): Promise<Workspace | undefined> {
  return db.selectFrom("workspaces").selectAll().orderBy("created_at").limit(1).executeTakeFirst();
}
