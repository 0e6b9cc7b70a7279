import type { OptionSpec } from "../../define-command.js";

/** Where a server keeps its data: shared by `ntn server` and its offline admin subcommands. */
export const STORE_OPTIONS: OptionSpec[] = [
  { flags: "--data-dir <DIR>", description: "Data directory (default: $XDG_DATA_HOME/workyard); DATABASE_URL selects PostgreSQL" },
];

/** The server package, loaded only by `ntn server ...`: other commands never load the database drivers. */
export async function loadServer() {
  return import("@workyard/server");
}
