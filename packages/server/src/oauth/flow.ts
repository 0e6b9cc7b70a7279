import type { Kysely } from "kysely";
import * as oauth from "oauth4webapi";
import { AppError } from "../errors.js";
import { newId, randomToken, sha256Hex } from "../ids.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthFlowRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal } from "../vault/seal.js";
import type { OAuthSettings } from "./settings.js";

/*
 * A flow's state, from start to end: the authorization request and its sealed PKCE verifier, the
 * single-use state a callback takes, the outcome it records, and GetOauthFlow's wait for it.
 */

/** A flow's state is good for this long and once. */
export const FLOW_TTL_MS = 10 * 60 * 1000;
/** Flows are deleted this long after they expired. */
const FLOW_KEPT_MS = 24 * 3600 * 1000;
/** GetOauthFlow waits at most this long per call. */
const MAX_FLOW_WAIT_MS = 25_000;

/** What a flow keeps sealed until its callback: the PKCE verifier and the exact redirect URI it sent. */
export interface FlowSecret {
  codeVerifier: string;
  redirectUri: string;
}

/** Authorization request parameters (RFC 6749 §4.1.1, RFC 7636 §4.3) only the server sets. */
const PROTOCOL_PARAMS = ["response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method"];

/**
 * The authorization request with PKCE S256 and a single-use state; the state is stored hashed and
 * the verifier sealed.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.3
 */
export async function startFlow(
  db: Kysely<Database>,
  keyring: Keyring,
  worker: WorkerRow,
  settings: OAuthSettings,
  now: number,
): Promise<{ authorizationUrl: string; state: string; redirectUrl: string }> {
  const state = randomToken(32);
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const id = newId();
  const sealed = seal(keyring, JSON.stringify({ codeVerifier, redirectUri: settings.redirectUri } satisfies FlowSecret), aad.oauthFlow(worker.workspace_id, worker.id, id));
  await oauthStore.insertFlow(db, {
    id,
    state_hash: sha256Hex(state),
    workspace_id: worker.workspace_id,
    worker_id: worker.id,
    capability_key: settings.key,
    key_id: sealed.keyId,
    sealed: sealed.sealed,
    created_at: now,
    expires_at: now + FLOW_TTL_MS,
    consumed_at: null,
    status: "pending",
    error: null,
    hint: null,
    completed_at: null,
  });
  void oauthStore.deleteOldFlows(db, now - FLOW_KEPT_MS).catch(() => {});

  const url = new URL(settings.authorizationEndpoint.href);
  const params = url.searchParams;
  // The worker's parameters first, the protocol's last: a manifest (or its endpoint's query) may
  // add prompt or access_type, never send the code elsewhere or replace the state or PKCE.
  for (const [key, value] of Object.entries(settings.authorizationParams)) params.set(key, value);
  for (const key of PROTOCOL_PARAMS) params.delete(key);
  params.set("response_type", "code");
  params.set("client_id", settings.clientId);
  params.set("redirect_uri", settings.redirectUri);
  if (settings.scope) params.set("scope", settings.scope);
  params.set("state", state);
  if (settings.pkce) {
    params.set("code_challenge", await oauth.calculatePKCECodeChallenge(codeVerifier));
    params.set("code_challenge_method", "S256");
  }
  return { authorizationUrl: url.href, state, redirectUrl: settings.redirectUri };
}

/**
 * The flow a callback's state names, consumed: a second use of the same state finds nothing
 * (the state check of RFC 6749 §10.12, by lookup).
 */
export async function takeFlow(db: Kysely<Database>, state: string | null, now: number): Promise<OauthFlowRow> {
  const invalid = new AppError("oauth_state_invalid", "This authorization response is unknown, expired or already used.", {
    hint: "Start again with `ntn workers oauth start <key>`.",
  });
  if (!state) throw invalid;
  const flow = await oauthStore.findFlowByStateHash(db, sha256Hex(state));
  if (!flow || !(await oauthStore.consumeFlow(db, flow.id, now))) throw invalid;
  return flow;
}

/** The verifier and redirect URI a taken flow started with. */
export function openFlowSecret(keyring: Keyring, flow: OauthFlowRow): FlowSecret {
  return JSON.parse(openText(keyring, { keyId: flow.key_id, sealed: flow.sealed }, aad.oauthFlow(flow.workspace_id, flow.worker_id, flow.id))) as FlowSecret;
}

/** Records how a taken flow ended, for GetOauthFlow. */
export async function completeFlow(
  db: Kysely<Database>,
  flow: OauthFlowRow,
  outcome: { status: "connected" } | { status: "failed"; error: string; hint: string | null },
  now: number,
): Promise<void> {
  await oauthStore.completeFlow(db, flow.id, outcome, now);
}

export function flowExpired(flow: OauthFlowRow, now: number): boolean {
  return flow.status === "pending" && flow.expires_at <= now;
}

/** A flow as GetOauthFlow reports it. */
export type FlowStatus = { status: "pending" } | { status: "connected" } | { status: "failed"; error?: string; hint?: string };

/**
 * GetOauthFlow: the flow of `workerId` that `state` names, waited on (polling) until it ends or
 * `waitMs` (at most 25 s) passes.
 */
export async function waitForFlow(db: Kysely<Database>, workerId: string, state: string, waitMs: number, now: () => number): Promise<FlowStatus> {
  const deadline = now() + Math.min(Math.max(waitMs, 0), MAX_FLOW_WAIT_MS);
  for (;;) {
    const flow = await oauthStore.findFlowByStateHash(db, sha256Hex(state));
    if (!flow || flow.worker_id !== workerId) {
      throw new AppError("oauth_flow_not_found", "No such OAuth flow for this worker.", { hint: "Start one with `ntn workers oauth start <key>`." });
    }
    if (flowExpired(flow, now())) {
      return { status: "failed", error: "The authorization was not completed in time.", hint: "Run `ntn workers oauth start` again." };
    }
    if (flow.status !== "pending") {
      return flow.status === "connected"
        ? { status: "connected" }
        : { status: "failed", ...(flow.error ? { error: flow.error } : {}), ...(flow.hint ? { hint: flow.hint } : {}) };
    }
    if (now() >= deadline) return { status: "pending" };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
