import { describe, expect, it } from "vitest";
import { clientSecretNamesFrom, clientSecretProbeEnv, referencedEnvNames } from "../builder/client-secret-names.js";
import type { ExecTarget } from "../executor/pool.js";
import type { DeploymentMeta } from "../store/deployments.js";
import type { WorkerRow } from "../store/schema.js";
import { clientSecretNamesOf, clientSecretsHint, createClientSecretProbe } from "./client-secrets.js";

describe("clientSecretsHint", () => {
  it("names the secrets behind the client id and secret", () => {
    expect(clientSecretsHint(["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"])).toBe(
      "Check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET: ntn workers env set GITHUB_CLIENT_ID=... GITHUB_CLIENT_SECRET=...",
    );
  });

  it("says what to look for when they could not be found", () => {
    expect(clientSecretsHint([])).toContain("ntn workers env set");
  });
});

describe("the probe's pure parts (what a build records once)", () => {
  const bundle = `const id = process.env.GH_ID; const secret = process.env["GH_SECRET"]; const other = process.env.OTHER; const again = process.env.GH_ID;`;

  it("finds the env names a bundle reads, each once, and marks each with its own name", () => {
    expect(referencedEnvNames(bundle)).toEqual(["GH_ID", "GH_SECRET", "OTHER"]);
    expect(clientSecretProbeEnv(bundle)).toEqual({ GH_ID: "__workyard_probe_GH_ID__", GH_SECRET: "__workyard_probe_GH_SECRET__", OTHER: "__workyard_probe_OTHER__" });
    expect(clientSecretProbeEnv("export default 1;")).toEqual({});
  });

  it("reads the names back from a manifest loaded under the markers, per OAuth capability, client id first", () => {
    const env = clientSecretProbeEnv(bundle);
    const manifest = {
      capabilities: [
        { _tag: "tool", key: "sayHello", config: { clientId: env.OTHER } },
        { _tag: "oauth", key: "githubAuth", config: { clientSecret: env.GH_SECRET, clientId: ` ${env.GH_ID}` } },
        { _tag: "oauth", key: "plain", config: { clientId: "literal", clientSecret: env.GH_SECRET } },
      ],
    };
    const found = clientSecretNamesFrom(manifest);
    expect(found).toEqual([
      { key: "githubAuth", names: ["GH_ID", "GH_SECRET"] },
      { key: "plain", names: ["GH_SECRET"] },
    ]);
    expect(clientSecretNamesOf(found, "plain")).toEqual(["GH_SECRET"]);
    expect(clientSecretNamesOf(found)).toEqual(["GH_ID", "GH_SECRET"]);
    expect(clientSecretNamesOf(found, "nope")).toEqual([]);
    expect(clientSecretNamesFrom(undefined)).toEqual([]);
  });
});

describe("createClientSecretProbe", () => {
  const worker = { id: "w1" } as WorkerRow;
  const deployment = (clientSecretNames: string | null) => ({ id: "d1", client_secret_names: clientSecretNames }) as DeploymentMeta;
  const refusingExecutor = { probe: async () => expect.unreachable("the recorded names need no sandbox") };

  it("answers the names the build recorded, without loading the worker", async () => {
    const probe = createClientSecretProbe({
      builder: { liveDeployment: async () => deployment(JSON.stringify([{ key: "githubAuth", names: ["GH_ID", "GH_SECRET"] }])), liveBundle: async () => expect.unreachable(), execTarget: async () => expect.unreachable() },
      executor: refusingExecutor,
    });
    expect(await probe(worker, "githubAuth")).toEqual(["GH_ID", "GH_SECRET"]);
    expect(await probe(worker, "other")).toEqual([]);
  });

  it("for a deployment built before the record, probes the live bundle", async () => {
    let probed = 0;
    const probe = createClientSecretProbe({
      builder: {
        liveDeployment: async () => deployment(null),
        liveBundle: async () => "const id = process.env.GH_ID;",
        execTarget: async () => ({ secrets: async () => ({}) }) as unknown as ExecTarget,
      },
      executor: {
        probe: async (target) => {
          probed += 1;
          const env = await target.secrets();
          return { capabilities: [{ _tag: "oauth", key: "githubAuth", config: { clientId: env.GH_ID } }] };
        },
      },
    });
    expect(await probe(worker)).toEqual(["GH_ID"]);
    expect(probed).toBe(1);
  });
});
