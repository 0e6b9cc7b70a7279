import crypto from "node:crypto";
import type { Kysely } from "kysely";
import type { Caller, TokenService } from "../auth/tokens.js";
import { AppError } from "../errors.js";
import { randomToken } from "../ids.js";
import * as sessions from "../store/login-sessions.js";
import type { Database } from "../store/schema.js";
import * as workspacesStore from "../store/workspaces.js";

export const LOGIN_TTL_MS = 10 * 60 * 1000;

/** A code the person compares between terminal and browser: 8 letters without look-alikes. */
function verificationCode(): string {
  const alphabet = "BCDFGHJKLMNPQRSTVWXZ";
  const bytes = crypto.randomBytes(8);
  const letters = [...bytes].map((b) => alphabet[b % alphabet.length]).join("");
  return `${letters.slice(0, 4)}-${letters.slice(4)}`;
}

export type RedeemResult =
  | { status: "pending" | "expired" }
  | { status: "confirmed"; token: string; spaceId: string; spaceName: string };

/**
 * `ntn login URL` on a terminal: the CLI opens a session (CliLoginInit), a person holding an API
 * token approves it on the server's page, and the CLI redeems it (CliLoginRedeem) for a new token.
 */
export interface LoginService {
  init(publicUrl: string): Promise<{ sessionId: string; browserUrl: string; verificationCode: string }>;
  describe(browserId: string): Promise<{ verificationCode: string; state: "open" | "approved" | "expired" }>;
  approve(browserId: string, caller: Caller): Promise<void>;
  redeem(sessionId: string): Promise<RedeemResult>;
}

export function createLoginService(db: Kysely<Database>, tokens: TokenService, now: () => number = Date.now): LoginService {
  return {
    async init(publicUrl) {
      const created = now();
      const row = {
        id: randomToken(32),
        browser_id: randomToken(16),
        verification_code: verificationCode(),
        created_at: created,
        expires_at: created + LOGIN_TTL_MS,
        approved_workspace_id: null,
        approved_at: null,
        redeemed_at: null,
      };
      await sessions.insertSession(db, row);
      void sessions.deleteExpiredSessions(db, created).catch(() => {});
      return { sessionId: row.id, browserUrl: `${publicUrl}/cli-login/${row.browser_id}`, verificationCode: row.verification_code };
    },

    async describe(browserId) {
      const row = await sessions.findSessionByBrowserId(db, browserId);
      if (!row) throw new AppError("login_session_not_found", "This login link is unknown or has expired.");
      const state = row.approved_at !== null ? "approved" : row.expires_at <= now() ? "expired" : "open";
      return { verificationCode: row.verification_code, state };
    },

    async approve(browserId, caller) {
      if (!(await sessions.approveSession(db, browserId, caller.workspaceId, now()))) {
        throw new AppError("login_session_not_found", "This login link is unknown, expired, or already used.", {
          hint: "Run `ntn login` again for a new link.",
        });
      }
    },

    async redeem(sessionId) {
      const row = await sessions.findSession(db, sessionId);
      if (!row) throw new AppError("login_session_not_found", "Unknown login session.", { hint: "Run `ntn login` again." });
      if (row.redeemed_at !== null) return { status: "expired" };
      if (row.approved_at === null || row.approved_workspace_id === null) {
        return { status: row.expires_at <= now() ? "expired" : "pending" };
      }
      if (!(await sessions.redeemSession(db, sessionId, now()))) return { status: "expired" };
      const workspace = await workspacesStore.findWorkspace(db, row.approved_workspace_id);
      if (!workspace) return { status: "expired" };
      const minted = await tokens.createFor(workspace.id, `ntn login ${new Date(now()).toISOString().slice(0, 10)}`, "member", null);
      return { status: "confirmed", token: minted.token, spaceId: workspace.id, spaceName: workspace.name };
    },
  };
}
