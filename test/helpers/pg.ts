import crypto from "node:crypto";
import pg from "pg";

export const PG_BASE_URL = process.env.WORKYARD_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

let available: boolean | undefined;

/**
 * Whether the test PostgreSQL answers. Under CI=true a missing PostgreSQL is a failure, not a skip,
 * so this throws there instead of answering false.
 */
export async function postgresAvailable(): Promise<boolean> {
  if (available !== undefined) return available;
  const client = new pg.Client({ connectionString: PG_BASE_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("select 1");
    available = true;
  } catch (error) {
    if (process.env.CI === "true") {
      throw new Error(`PostgreSQL at ${PG_BASE_URL} is required under CI=true: ${(error as Error).message}`);
    }
    available = false;
  } finally {
    await client.end().catch(() => {});
  }
  return available;
}

/** A fresh schema in the test database, as a DATABASE_URL whose search_path points at it. */
export async function freshSchema(): Promise<{ url: string; schema: string; drop(): Promise<void> }> {
  const schema = `wy_test_${crypto.randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_BASE_URL });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  await admin.end();
  const url = new URL(PG_BASE_URL);
  url.searchParams.set("options", `-c search_path=${schema}`);
  return {
    url: url.toString(),
    schema,
    async drop() {
      const client = new pg.Client({ connectionString: PG_BASE_URL });
      await client.connect();
      await client.query(`drop schema if exists ${schema} cascade`);
      await client.end();
    },
  };
}
