import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Our CLI, as built by `npm run build` and as npm links it: `ntn` (one bundled file). */
export const OUR_NTN = path.join(ROOT, "packages/cli/bin/ntn.js");
/** The official ntn 0.4.0 from npm, installed in a folder of its own. */
export const OFFICIAL_NTN = path.join(ROOT, "test/official-ntn/node_modules/.bin/ntn");
