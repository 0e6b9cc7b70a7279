import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AuthError, LocalError, UserError } from "./errors.js";

/**
 * Where the CLI finds its server, token, workspace and worker. Order: the NOTION_* variables, then
 * workers.json, then the stored login. Our own state lives in `$XDG_CONFIG_HOME/workyard/auth.json`
 * (0600), keyed by server URL; we never write the official CLI's files.
 */

export interface StoredLogin {
  token: string;
  workspaceId: string;
  workspaceName?: string | undefined;
  tokenName?: string | undefined;
}

export interface CliState {
  version: 1;
  /** The server commands talk to when NOTION_API_BASE_URL is not set. */
  current?: string | undefined;
  servers: Record<string, StoredLogin>;
}

/** The worker project file, exactly as the official CLI writes it. */
export interface WorkersJson {
  version: string;
  environment: string;
  workspaceId: string;
  workerId: string;
}

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "workyard");
}

export function statePath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(stateDir(env), "auth.json");
}

/** A base URL as the key of the stored logins: no trailing slash. */
export function normaliseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UserError(`${JSON.stringify(url)} is not a URL.`, { hint: "Use the form http://127.0.0.1:7777." });
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UserError(`${JSON.stringify(url)} is not an http(s) URL.`);
  }
  return parsed.toString().replace(/\/+$/, "");
}

export function readState(env: NodeJS.ProcessEnv = process.env): CliState {
  const file = statePath(env);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, servers: {} };
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as CliState;
    return { version: 1, current: parsed.current, servers: parsed.servers ?? {} };
  } catch {
    throw new UserError(`${file} is not valid JSON.`, { hint: "Delete it and log in again with `ntn login`." });
  }
}

/** Writes the state atomically, readable by the owner only (it holds tokens). */
export function writeState(state: CliState, env: NodeJS.ProcessEnv = process.env): void {
  const file = statePath(env);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function saveLogin(url: string, login: StoredLogin, env: NodeJS.ProcessEnv = process.env): void {
  const state = readState(env);
  const key = normaliseUrl(url);
  state.servers[key] = login;
  state.current = key;
  writeState(state, env);
}

export function removeLogin(url: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const state = readState(env);
  const key = normaliseUrl(url);
  const had = key in state.servers;
  delete state.servers[key];
  if (state.current === key) state.current = Object.keys(state.servers)[0];
  writeState(state, env);
  return had;
}

export function workersJsonPath(explicit: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  const file = explicit ?? env.NOTION_WORKERS_CONFIG_FILE;
  return file ? path.resolve(cwd, file) : path.join(cwd, "workers.json");
}

export function readWorkersJson(file: string): WorkersJson | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new LocalError(`Failed to read ${path.basename(file)}`, { cause: error });
  }
  let parsed: Partial<WorkersJson>;
  try {
    parsed = JSON.parse(text) as Partial<WorkersJson>;
  } catch (error) {
    throw new LocalError(`Failed to parse ${path.basename(file)}`, { hint: "Fix or delete it, then deploy again.", cause: error });
  }
  for (const field of ["version", "environment", "workspaceId", "workerId"] as const) {
    if (typeof parsed[field] !== "string") {
      throw new LocalError(`Failed to parse ${path.basename(file)}`, {
        hint: "Fix or delete it, then deploy again.",
        cause: new Error(`missing field \`${field}\``),
      });
    }
  }
  return parsed as WorkersJson;
}

/** Pretty-printed without a final newline, byte for byte as the official CLI writes it. */
export function writeWorkersJson(file: string, value: WorkersJson): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
}

export interface Connection {
  baseUrl: string;
  token: string;
  workspaceId: string | undefined;
}

/** The server, token and workspace for this command, from the environment, workers.json and the stored login. */
export function resolveConnection(env: NodeJS.ProcessEnv, workersJson: WorkersJson | undefined): Connection {
  const state = readState(env);
  const baseUrl = env.NOTION_API_BASE_URL ? normaliseUrl(env.NOTION_API_BASE_URL) : state.current;
  if (!baseUrl) {
    throw new AuthError("Not logged in to a Workyard server.", {
      hint: "Run `ntn login <server url>`, start one with `ntn server`, or set NOTION_API_BASE_URL and NOTION_API_TOKEN.",
    });
  }
  const stored = state.servers[baseUrl];
  const token = env.NOTION_API_TOKEN || stored?.token;
  if (!token) {
    throw new AuthError(`Not logged in to ${baseUrl}.`, {
      hint: `Run \`ntn login ${baseUrl}\`, or set NOTION_API_TOKEN.`,
    });
  }
  const workspaceId = env.NOTION_WORKSPACE_ID || workersJson?.workspaceId || stored?.workspaceId;
  return { baseUrl, token, workspaceId };
}
