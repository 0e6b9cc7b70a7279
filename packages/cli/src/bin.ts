#!/usr/bin/env node
import { run } from "./main.js";

// The one place the CLI exits. stdout and stderr are synchronous for files and pipes on Linux and
// macOS, so nothing written is lost.
const code = await run({ argv: process.argv.slice(2) });
process.exit(code);
