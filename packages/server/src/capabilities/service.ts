import type { Caller } from "../auth/tokens.js";
import type { BuildService } from "../builder/service.js";
import type { OAuthService } from "../oauth/service.js";

/** A capability as ListCapabilities shows it: the live deployment's, OAuth ones with their connection's state. */
export type CapabilityListing = Awaited<ReturnType<OAuthService["annotate"]>>[number];

/**
 * What a worker can do, in one place: the builder knows the capabilities of the live deployment,
 * OAuth the state of each connection; this concern puts the two together (neither may call the
 * other for it: OAuth reads the builder's manifests).
 */
export interface CapabilityService {
  list(caller: Caller, workerId: string): Promise<CapabilityListing[]>;
}

export function createCapabilityService(options: {
  builder: Pick<BuildService, "capabilities">;
  oauth: Pick<OAuthService, "annotate">;
}): CapabilityService {
  const { builder, oauth } = options;
  return {
    async list(caller, workerId) {
      return oauth.annotate(caller, workerId, await builder.capabilities(caller, workerId));
    },
  };
}
