/**
 * The wire protocol: request and response shapes of every action (`POST /api/v3/workers<Action>`),
 * as the official ntn 0.4.0 sends and reads them, plus Workyard's own actions in the same style.
 * The server validates requests with the JSON Schemas of api/actions/; the CLI imports the types
 * only. Shapes a concern defines as its own (an upload's ticket, an env entry) are re-exported
 * from it, not written again.
 */
import type { ConnectionStatus } from "../oauth/connections.js";
import type { EnvEntry, EnvNotice } from "../secrets/service.js";
import type { UploadTicket } from "../workers/uploads.js";

export type { EnvEntry, EnvNotice, UploadTicket };

// ---------------------------------------------------------------------------------------------
// Shapes

/** A webhook capability as listed: its URL (a shared secret), whether it takes deliveries, its last one. */
export interface WebhookView {
  key: string;
  url: string;
  status: "active" | "blocked" | "verification off";
  verificationFailures: number;
  lastDelivery: { status: string; receivedAt: string } | null;
}

/** One delivery of a webhook: the same deliveryId on every attempt, and the runs that made them. */
export interface DeliveryView {
  deliveryId: string;
  status: "queued" | "running" | "succeeded" | "failed" | "verification_failed";
  attempts: number;
  runIds: string[];
  receivedAt: string;
  finishedAt: string | null;
  error: string | null;
}

export interface WorkerView {
  workerId: string;
  name: string;
  spaceId: string;
  createdAt: string;
  updatedAt: string;
}

export interface CapabilityView {
  _tag: string;
  key: string;
  /** Workyard: connection state of an OAuth capability. */
  connection?: { status: string; expiresAt: string | null } | undefined;
}

export interface SecretView {
  key: string;
  createdAt: string;
  updatedAt?: string;
}

export interface TokenView {
  id: string;
  name: string;
  issuedAt: string;
  /** Always a string: the official CLI fails to list tokens when it is not (`never` for no expiry). */
  expiresAt: string;
  revokedAt?: string;
}

export interface RunView {
  workerId: string;
  spaceId: string;
  runId: string;
  name: string;
  exitCode: number | null;
  startedAt: string;
  endedAt: string | null;
  status: "running" | "succeeded" | "failed";
  durationMs: number | null;
  error: string | null;
  /** Set for a webhook's run: the delivery it attempted. */
  deliveryId?: string;
}

/** One line of a streamed answer (BuildWorker, RunCapability with stream:true). */
export type StreamLine =
  | { _tag: "log"; event: { stream: "stdout" | "stderr"; data: string } }
  | { _tag: "result"; result: unknown; runId?: string }
  | { _tag: "error"; error: string; code?: string; runId?: string }
  | { _tag: "run"; runId: string };

/** GetOauthStatus sends the OAuth service's own shape as it is. */
export type ConnectionStatusView = ConnectionStatus;

/**
 * Every error answer: the Notion public API's error body. `name` repeats the code: given a string
 * `name` and `message`, the official ntn prints `Failed to <verb> (<status> <reason> <name>):
 * <message>` instead of the raw JSON, so its users read our message as plainly as ours do. An
 * error's details (never secrets) come as extra fields, such as `redirectUrl` on OAuth failures.
 */
export interface ErrorBody {
  object: "error";
  status: number;
  code: string;
  name: string;
  message: string;
  hint?: string;
  request_id?: string;
  redirectUrl?: string;
  [extra: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Actions: request -> response

export interface Actions {
  ListWorkers: { request: Record<string, never>; response: { workers: WorkerView[] } };
  CreateWorker: { request: { name: string; uploadType?: string }; response: { worker: WorkerView } & UploadTicket };
  UpdateWorker: { request: { workerId: string; uploadType?: string }; response: UploadTicket };
  GetWorker: { request: { workerId: string }; response: { worker: WorkerView } };
  DeleteWorker: { request: { workerId: string }; response: { worker: WorkerView } };
  BuildWorker: { request: { workerId: string; stream?: boolean }; response: { ok: true; deploymentId: string } };
  ListCapabilities: { request: { workerId: string }; response: { capabilities: CapabilityView[] } };
  FetchAndSaveCapabilities: { request: { workerId: string }; response: { capabilities: CapabilityView[] } };
  UpdateSyncCapabilityDisabled: {
    request: { workerId: string; capabilityKey: string; disabled: boolean };
    response: { capability: CapabilityView };
  };
  UpsertSecrets: {
    request: { workerId: string; secrets: EnvEntry[] };
    response: { updated: string[]; ignored: string[]; warnings: string[] };
  };
  ListSecrets: { request: { workerId: string }; response: { secrets: SecretView[] } };
  DeleteSecret: { request: { workerId: string; key: string }; response: { warnings: string[] } };
  /** Workyard's `refresh`: refresh every OAuth token first (the official CLI never sends it). */
  PullEnv: { request: { workerId: string; refresh?: boolean }; response: { env: EnvEntry[]; notices: EnvNotice[] } };
  RunCapability: {
    request: { workerId: string; capabilityKey: string; args?: unknown; stream?: boolean };
    response: { result: unknown; runId: string };
  };
  ListRunsForWorker: { request: { workerId: string }; response: { runs: RunView[] } };
  GetRunLogs: { request: { workerId: string; runId: string }; response: { logs: string; run: RunView } };
  ListWebhooks: { request: { workerId: string }; response: { webhooks: WebhookView[] } };
  ListWebhookDeliveries: { request: { workerId: string; key: string }; response: { deliveries: DeliveryView[] } };
  RedeliverWebhook: { request: { workerId: string; deliveryId: string }; response: Record<string, never> };
  RotateWebhook: { request: { workerId: string; key: string }; response: { url: string } };
  UnblockWebhook: { request: { workerId: string; key: string }; response: Record<string, never> };
  SetWebhookVerification: { request: { workerId: string; key: string; enabled: boolean }; response: Record<string, never> };
  StartOauth: {
    request: { workerId: string; oauthCapabilityKey: string };
    response: { authorizationUrl: string; state: string; redirectUrl: string };
  };
  GetOauthToken: {
    /** Workyard's `refresh`: refresh first, whatever the expiry (`ntn workers oauth token KEY --refresh`). */
    request: { workerId: string; oauthCapabilityKey: string; refresh?: boolean };
    response: { accessToken: string; expiresAt: string | null };
  };
  CreateToken: {
    request: { name: string; expiresIn?: string };
    response: { token: string; id: string; name: string; expiresAt: string };
  };
  ListTokens: { request: Record<string, never>; response: { tokens: TokenView[] } };
  RevokeToken: { request: { tokenId: string }; response: { token: TokenView } };
  CliLoginInit: { request: Record<string, never>; response: { sessionId: string; browserUrl: string; verificationCode: string } };
  CliLoginRedeem: {
    request: { sessionId: string };
    response:
      | { status: "pending" | "expired" }
      | { status: "confirmed"; token: string; spaceId: string; spaceName: string };
  };
  // Workyard's own
  WhoAmI: {
    request: Record<string, never>;
    response: { workspaceId: string; workspaceName: string; tokenId: string; tokenName: string; role: string; publicUrl: string };
  };
  GetServerInfo: { request: Record<string, never>; response: { publicUrl: string; redirectUrl: string; version: string } };
  CreateWorkspace: { request: { name: string }; response: { workspaceId: string; name: string; token: string } };
  RotateKey: {
    request: { keepOldKeys?: boolean };
    response: { keyId: string; resealed: Record<string, number>; source: "env" | "file"; removedKeyIds: string[] };
  };
  GetOauthFlow: {
    request: { workerId: string; state: string; waitMs?: number };
    response: { status: "pending" | "connected" | "failed"; error?: string; hint?: string };
  };
  GetOauthStatus: { request: { workerId: string; oauthCapabilityKey?: string }; response: { connections: ConnectionStatusView[] } };
  RevokeOauth: {
    request: { workerId: string; oauthCapabilityKey: string };
    response: { revokedAtProvider: boolean; deleted: boolean; message?: string };
  };
}

export type ActionName = keyof Actions;
export type ActionRequest<A extends ActionName> = Actions[A]["request"];
export type ActionResponse<A extends ActionName> = Actions[A]["response"];
