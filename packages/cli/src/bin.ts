#!/usr/bin/env node
import { run } from "./main.js";

// The one place the CLI exits: once stdout has drained, so a large result piped to another
// program arrives whole.
const code = await run({ argv: process.argv.slice(2) });
process.stdout.write("", () => process.exit(code));
