#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs every test.
# `.ci/run` calls exactly this; the README gives it as `npm run test:all`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project (better-sqlite3 compiles from source; `prepare` builds the TypeScript).
npm ci --no-audit --no-fund
# The official ntn 0.4.0, in a folder of its own so its `ntn` never shadows ours.
npm ci --no-audit --no-fund --prefix test/official-ntn
# From Debian: Chromium, driven by playwright-core in the OAuth tests; bubblewrap, which puts
# every build and worker process in namespaces of its own.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
fi
if [ "${CI:-}" = "true" ] && ! command -v bwrap >/dev/null 2>&1; then
  echo "CI: bubblewrap (bwrap) is missing; the isolation tests need it." >&2
  exit 1
fi

npx vitest run "$@"
