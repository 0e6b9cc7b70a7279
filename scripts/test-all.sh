#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs every test.
# `.ci/run` calls exactly this; the README gives it as `npm run test:all`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project (better-sqlite3 compiles from source; `prepare` builds the TypeScript).
npm ci --no-audit --no-fund
# The official ntn 0.4.0, in a folder of its own so its `ntn` never shadows ours.
npm ci --no-audit --no-fund --prefix test/official-ntn
# Chromium from Debian, driven by playwright-core in the OAuth tests.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

npx vitest run "$@"
