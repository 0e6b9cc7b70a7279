import fs from "node:fs";
import path from "node:path";
import { sql, type Kysely } from "kysely";
import type { TokenService } from "../auth/tokens.js";
import { AppError } from "../errors.js";
import { newId } from "../ids.js";
import type { Dialect } from "../store/db.js";
import type { Database, Workspace } from "../store/schema.js";
import * as workspacesStore from "../store/workspaces.js";

export interface BootstrapResult {
  /** True when this start created the first workspace and the admin token. */
  created: boolean;
  workspace: Workspace;
  /** `<dataDir>/admin-token`, mode 0600, when this data dir holds it. */
  adminTokenFile: string | undefined;
}

/** Writes a token to a new file readable by its owner only; refuses to replace an existing file. */
export function writeTokenFile(file: string, token: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: "wx" });
}

/**
 * First start against an empty store: one workspace and an admin API token, written to
 * `<dataDir>/admin-token`. Later starts find the workspace and change nothing.
 */
export async function bootstrap(options: {
  db: Kysely<Database>;
  dialect: Dialect;
  dataDir: string;
  tokens: TokenService;
  now?: () => number;
}): Promise<BootstrapResult> {
  const now = options.now ?? Date.now;
  const adminTokenFile = path.join(options.dataDir, "admin-token");
  const existing = await workspacesStore.firstWorkspace(options.db);
  if (existing) {
    return { created: false, workspace: existing, adminTokenFile: fs.existsSync(adminTokenFile) ? adminTokenFile : undefined };
  }
  const workspace = await options.db.transaction().execute(async (trx) => {
    // Several servers may start at once against one PostgreSQL: only one creates the workspace.
    if (options.dialect === "postgres") await sql`LOCK TABLE workspaces IN EXCLUSIVE MODE`.execute(trx);
    if ((await workspacesStore.countWorkspaces(trx)) > 0) return undefined;
    return workspacesStore.insertWorkspace(trx, { id: newId(), name: "Default workspace", created_at: now() });
  });
  if (!workspace) return bootstrap(options);
  const admin = await options.tokens.createFor(workspace.id, "admin", "admin", null);
  fs.rmSync(adminTokenFile, { force: true });
  writeTokenFile(adminTokenFile, admin.token);
  return { created: true, workspace, adminTokenFile };
}

/** Workspaces as the CreateWorkspace action makes them. */
export interface WorkspaceService {
  /** A workspace and its first token (a member token named `owner`). */
  create(name: string): Promise<{ workspace: Workspace; token: string }>;
}

export function createWorkspaceService(db: Kysely<Database>, tokens: TokenService, now: () => number = Date.now): WorkspaceService {
  return { create: (name) => createWorkspace(db, tokens, name, now) };
}

/** `ntn server workspace create NAME` and the CreateWorkspace action: a workspace and its first token. */
export async function createWorkspace(
  db: Kysely<Database>,
  tokens: TokenService,
  name: string,
  now: () => number = Date.now,
): Promise<{ workspace: Workspace; token: string }> {
  const trimmed = name.trim();
  if (!trimmed) throw new AppError("validation_error", "A workspace needs a name.");
  const workspace = await workspacesStore.insertWorkspace(db, { id: newId(), name: trimmed, created_at: now() });
  const minted = await tokens.createFor(workspace.id, "owner", "member", null);
  return { workspace, token: minted.token };
}
