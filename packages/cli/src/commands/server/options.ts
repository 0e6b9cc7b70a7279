import type { OptionSpec } from "../../define-command.js";
import { UserError } from "../../errors.js";

/** Where a server keeps its data: shared by `ntn server` and its offline admin subcommands. */
export const STORE_OPTIONS: OptionSpec[] = [
  { flags: "--data-dir <DIR>", description: "Data directory (default: $XDG_DATA_HOME/workyard); DATABASE_URL selects PostgreSQL" },
];

/** The server package, loaded only by `ntn server ...`: other commands never load the database drivers. */
export async function loadServer() {
  return import("@workyard/server");
}

/** The server's start-up errors (bad options, keys, catalog) are the user's to fix: no stack. */
export function asUserError(server: Awaited<ReturnType<typeof loadServer>>, error: unknown): unknown {
  if (
    error instanceof server.ConfigError ||
    error instanceof server.KeyringError ||
    error instanceof server.CatalogError ||
    error instanceof server.IsolationRefused
  ) {
    return new UserError(error.message);
  }
  return error;
}
