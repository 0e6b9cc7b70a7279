import type { Generated, Selectable } from "kysely";

/**
 * Row types of every table. Times are epoch milliseconds (BIGINT on PostgreSQL, INTEGER on
 * SQLite); sealed values are a key id column beside a binary column (vault/seal.ts), so key
 * rotation can find what is left under an old key with an indexed query.
 */
export interface WorkspacesTable {
  id: string;
  name: string;
  created_at: number;
  /**
   * Unique per workspace, from 1: its builds and workers run as uid (and gid) base + index when
   * the server runs as root (config.workerUids).
   */
  sandbox_index: number;
}

export interface ApiTokensTable {
  id: string;
  workspace_id: string;
  name: string;
  /** SHA-256 of the token, hex; the token itself is never stored. */
  token_hash: string;
  /** `admin` may manage the server (workspaces, key rotation); `member` only its workspace. */
  role: "admin" | "member";
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

export interface WorkersTable {
  id: string;
  workspace_id: string;
  name: string;
  created_at: number;
  updated_at: number;
  /** The live deployment: a pointer, flipped in one statement when a build succeeds. */
  live_deployment_id: string | null;
  /**
   * Bumped with every change to the worker's secrets, in the same transaction: a warm process or a
   * manifest read with an older version is stale, in this server process or any other.
   */
  secrets_version: number;
}

export interface UploadsTable {
  id: string;
  workspace_id: string;
  worker_id: string;
  created_at: number;
  expires_at: number;
  /** Set once the archive arrived; an upload is accepted once. */
  received_at: number | null;
  /** The source archive, sealed under archive_key_id (in clear when that is null: rows from before 0.2). */
  archive: Buffer | null;
  archive_key_id: string | null;
  archive_size: number | null;
  /** Set when a build took this upload. */
  built_at: number | null;
}

export interface DeploymentsTable {
  id: string;
  workspace_id: string;
  worker_id: string;
  upload_id: string;
  created_at: number;
  finished_at: number | null;
  status: "building" | "ready" | "failed";
  lockfile_hash: string | null;
  /** Rows from before 0.2 only: the bundle and map in clear. Newer rows use bundle_sealed. */
  bundle: string | null;
  source_map: string | null;
  /** Sealed JSON `{code, sourceMap}` of the bundle (the worker's code is the tenant's data). */
  bundle_key_id: string | null;
  bundle_sealed: Buffer | null;
  /** Capability tags and keys (no configuration): safe to keep in clear for listings. */
  capabilities: string | null;
  manifest_key_id: string | null;
  manifest_sealed: Buffer | null;
  /** The worker's secrets_version the manifest was read with. */
  manifest_secrets_version: number | null;
  /** JSON [{key, names}]: the secrets behind each OAuth client id and secret (names only), read at build. */
  client_secret_names: string | null;
  build_log: string | null;
  error: string | null;
}

export interface SecretsTable {
  workspace_id: string;
  worker_id: string;
  name: string;
  key_id: string;
  sealed: Buffer;
  created_at: number;
  updated_at: number;
}

export interface RunsTable {
  id: string;
  workspace_id: string;
  worker_id: string;
  deployment_id: string;
  capability_key: string;
  status: "running" | "succeeded" | "failed";
  exit_code: number | null;
  started_at: number;
  ended_at: number | null;
  duration_ms: number | null;
  error: string | null;
  logs: string | null;
  /** The webhook delivery the run attempted (null for other runs). */
  delivery_id: string | null;
}

export interface CliLoginSessionsTable {
  /** Secret: only the CLI that started the session knows it, and redeems with it. */
  id: string;
  /** What the browser page's URL carries: seeing it does not let anyone redeem the session. */
  browser_id: string;
  verification_code: string;
  created_at: number;
  expires_at: number;
  /** Set when a person approved the session in the browser. */
  approved_workspace_id: string | null;
  approved_at: number | null;
  redeemed_at: number | null;
}

export interface OauthConnectionsTable {
  worker_id: string;
  capability_key: string;
  workspace_id: string;
  /** `connected`, or `needs_reauthorization` once the provider refused the refresh token. */
  status: "connected" | "needs_reauthorization";
  key_id: string;
  /** Sealed JSON: access token, refresh token, token type, scope. The refresh token lives here only. */
  sealed: Buffer;
  has_refresh_token: number;
  access_expires_at: number | null;
  /**
   * Where the expiry came from: `provider` (expires_in), `config` (accessTokenExpireMs), `catalog`
   * (the provider's usual lifetime), `default` (unknown: Workyard's interval), or `none`.
   */
  expiry_source: "provider" | "config" | "catalog" | "default" | "none";
  connected_at: number;
  /** When the current access token was obtained (its lifetime starts here). */
  obtained_at: number;
  last_refresh_at: number | null;
  next_refresh_at: number | null;
  last_error: string | null;
  last_error_at: number | null;
  /** reauthorize | configuration | transient: a transient failure backs off the next attempt. */
  last_error_kind: string | null;
  failure_count: number;
  /** Bumped by every credential write; a write names the version it read (compare-and-set). */
  version: number;
  /** Refresh lease: a random owner id per acquisition, so a holder whose lease ran out cannot write. */
  lease_owner: string | null;
  lease_expires_at: number | null;
  updated_at: number;
}

export interface OauthFlowsTable {
  id: string;
  /** SHA-256 of the state: the state itself travels only through the browser. */
  state_hash: string;
  workspace_id: string;
  worker_id: string;
  capability_key: string;
  key_id: string;
  /** Sealed JSON: PKCE code verifier and redirect URI. */
  sealed: Buffer;
  created_at: number;
  expires_at: number;
  consumed_at: number | null;
  status: "pending" | "connected" | "failed";
  error: string | null;
  hint: string | null;
  completed_at: number | null;
}

export interface WebhooksTable {
  worker_id: string;
  /** The webhook capability's key. */
  key: string;
  workspace_id: string;
  /** SHA-256 (hex) of the URL's secret id: what a request is checked against. */
  secret_hash: string;
  /** The secret id itself, sealed (aad.webhookSecret), for listing the URL. */
  secret_key_id: string;
  secret_sealed: Buffer;
  verification_enabled: number;
  /** Consecutive runs that ended in WebhookVerificationError; 5 block the webhook. */
  verification_failures: number;
  blocked_at: number | null;
  created_at: number;
  updated_at: number;
}

export type DeliveryStatus = "queued" | "running" | "succeeded" | "failed" | "verification_failed";

export interface WebhookDeliveriesTable {
  /** The deliveryId the worker sees, the same on every attempt. */
  id: string;
  workspace_id: string;
  worker_id: string;
  webhook_key: string;
  status: DeliveryStatus;
  attempts: number;
  /** JSON array of the ids of the runs that attempted it. */
  run_ids: string;
  /** Runs stopped for another run's time limit, not counted in `attempts` (at most a few). */
  spared_runs: number;
  /** The request as received (method, headers, body), sealed (aad.webhookDelivery). */
  request_key_id: string;
  request_sealed: Buffer;
  received_at: number;
  /** When it may run (again): now, or after a retry's backoff. */
  next_attempt_at: number;
  /** The server process running it, and until when: a process killed mid-run loses it only until then. */
  lease_owner: string | null;
  lease_until: number | null;
  finished_at: number | null;
  last_error: string | null;
}

export interface Database {
  oauth_connections: OauthConnectionsTable;
  oauth_flows: OauthFlowsTable;
  workspaces: WorkspacesTable;
  api_tokens: ApiTokensTable;
  workers: WorkersTable;
  uploads: UploadsTable;
  deployments: DeploymentsTable;
  secrets: SecretsTable;
  runs: RunsTable;
  cli_login_sessions: CliLoginSessionsTable;
  webhooks: WebhooksTable;
  webhook_deliveries: WebhookDeliveriesTable;
}

export type Workspace = Selectable<WorkspacesTable>;
export type ApiToken = Selectable<ApiTokensTable>;
export type WorkerRow = Selectable<WorkersTable>;
export type UploadRow = Selectable<UploadsTable>;
export type DeploymentRow = Selectable<DeploymentsTable>;
export type SecretRow = Selectable<SecretsTable>;
export type RunRow = Selectable<RunsTable>;
export type OauthConnectionRow = Selectable<OauthConnectionsTable>;
export type OauthFlowRow = Selectable<OauthFlowsTable>;
export type WebhookRow = Selectable<WebhooksTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;
export type { Generated };
