import { postgresAvailable } from "./pg.js";

/**
 * The store engines a test runs against: SQLite always; PostgreSQL when it answers at
 * 127.0.0.1:5432 (and under CI=true, where a missing PostgreSQL fails instead of skipping).
 */
export const DIALECTS = ["sqlite", ...((await postgresAvailable()) ? ["postgres" as const] : [])] as const;
