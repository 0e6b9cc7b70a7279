#!/usr/bin/env node
// The `ntn` command: the built CLI, bundled into one file (dist/bundle/ntn.mjs; scripts/bundle.mjs).
// A file of its own in the repository, so npm can link it into node_modules/.bin at install,
// before `prepare` has built dist/.
import "../dist/bundle/ntn.mjs";
