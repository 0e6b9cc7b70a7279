import type { CommandSpec } from "./define-command.js";
import login from "./commands/login.js";
import logout from "./commands/logout.js";
import whoami from "./commands/whoami.js";
import serverStart from "./commands/server/start.js";
import serverRotateKey from "./commands/server/rotate-key.js";
import serverWorkspaceCreate from "./commands/server/workspace-create.js";
import tokensCreate from "./commands/tokens/create.js";
import tokensList from "./commands/tokens/list.js";
import tokensRevoke from "./commands/tokens/revoke.js";
import workersCreate from "./commands/workers/create.js";
import workersDelete from "./commands/workers/delete.js";
import workersDeploy from "./commands/workers/deploy.js";
import workersGet from "./commands/workers/get.js";
import workersList from "./commands/workers/list.js";
import envList from "./commands/workers/env/list.js";
import envPull from "./commands/workers/env/pull.js";
import envPush from "./commands/workers/env/push.js";
import envSet from "./commands/workers/env/set.js";
import envUnset from "./commands/workers/env/unset.js";
import capabilitiesList from "./commands/workers/capabilities/list.js";
import { disable as capabilitiesDisable, enable as capabilitiesEnable } from "./commands/workers/capabilities/toggle.js";
import workersExec from "./commands/workers/exec.js";
import workersNew from "./commands/workers/new.js";
import runsList from "./commands/workers/runs/list.js";
import oauthRedirect from "./commands/workers/oauth/show-redirect-url.js";
import oauthStart from "./commands/workers/oauth/start.js";
import oauthToken from "./commands/workers/oauth/token.js";
import oauthStatus from "./commands/workers/oauth/status.js";
import oauthRevoke from "./commands/workers/oauth/revoke.js";
import runsLogs from "./commands/workers/runs/logs.js";
import webhooksList from "./commands/workers/webhooks/list.js";
import webhooksDeliveries from "./commands/workers/webhooks/deliveries.js";
import webhooksRedeliver from "./commands/workers/webhooks/redeliver.js";
import webhooksRotate from "./commands/workers/webhooks/rotate.js";
import webhooksUnblock from "./commands/workers/webhooks/unblock.js";
import { disable as webhooksVerificationDisable, enable as webhooksVerificationEnable } from "./commands/workers/webhooks/verification.js";

/** Groups: summaries and aliases of commands that only hold subcommands. */
export const GROUPS: Record<string, { summary: string; aliases?: string[] }> = {
  tokens: { summary: "Manage tokens" },
  workers: { summary: "Manage workers" },
  "workers env": { summary: "Manage worker environment variables" },
  "workers capabilities": { summary: "Manage worker capabilities" },
  "workers runs": { summary: "Manage worker runs" },
  "workers oauth": { summary: "Manage OAuth connections for a worker" },
  "workers webhooks": { summary: "Manage a worker's webhooks" },
  "workers webhooks verification": { summary: "Turn a webhook's verification on or off" },
  "server workspace": { summary: "Manage workspaces (admin)" },
};

/** The whole command tree, one line per command, in the official CLI's order, then Workyard's own. */
export const COMMANDS: Record<string, CommandSpec> = {
  login,
  logout,
  whoami,
  "tokens create": tokensCreate,
  "tokens list": tokensList,
  "tokens revoke": tokensRevoke,
  "workers capabilities list": capabilitiesList,
  "workers capabilities enable": capabilitiesEnable,
  "workers capabilities disable": capabilitiesDisable,
  "workers create": workersCreate,
  "workers delete": workersDelete,
  "workers deploy": workersDeploy,
  "workers new": workersNew,
  "workers env set": envSet,
  "workers env list": envList,
  "workers env unset": envUnset,
  "workers env pull": envPull,
  "workers env push": envPush,
  "workers exec": workersExec,
  "workers get": workersGet,
  "workers list": workersList,
  "workers oauth show-redirect-url": oauthRedirect,
  "workers oauth start": oauthStart,
  "workers oauth token": oauthToken,
  "workers oauth status": oauthStatus,
  "workers oauth revoke": oauthRevoke,
  "workers runs list": runsList,
  "workers runs logs": runsLogs,
  "workers webhooks list": webhooksList,
  "workers webhooks deliveries": webhooksDeliveries,
  "workers webhooks redeliver": webhooksRedeliver,
  "workers webhooks rotate": webhooksRotate,
  "workers webhooks unblock": webhooksUnblock,
  "workers webhooks verification enable": webhooksVerificationEnable,
  "workers webhooks verification disable": webhooksVerificationDisable,
  server: serverStart,
  "server rotate-key": serverRotateKey,
  "server workspace create": serverWorkspaceCreate,
};
