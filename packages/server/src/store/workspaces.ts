import type { Kysely } from "kysely";
import type { Database, Workspace } from "./schema.js";

type Db = Kysely<Database>;

export async function insertWorkspace(db: Db, row: Workspace): Promise<void> {
  await db.insertInto("workspaces").values(row).execute();
}

export async function findWorkspace(db: Db, id: string): Promise<Workspace | undefined> {
  return db.selectFrom("workspaces").selectAll().where("id", "=", id).executeTakeFirst();
}

export async function countWorkspaces(db: Db): Promise<number> {
  const row = await db.selectFrom("workspaces").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function firstWorkspace(db: Db): Promise<Workspace | undefined> {
  return db.selectFrom("workspaces").selectAll().orderBy("created_at").limit(1).executeTakeFirst();
}
