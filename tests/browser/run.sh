#!/usr/bin/env bash
# The web UI's real-browser suite: Debian's Chromium driven by playwright-core (pinned in
# package-lock.json; no browser is downloaded), against real nodes on loopback ports, and the
# marketplace journeys on `neverust devnet` when the binary has it.
#
#   bash tests/browser/run.sh        # prints `N passed, M failed` last; non-zero exit on any failure
#
# NEVERUST_BIN: the node binary [default: ${CARGO_TARGET_DIR:-target}/release/neverust]
# NEVERUST_BROWSER_OUT: screenshots, logs and report/index.html [default: target/browser-report]
# More knobs (fewer profiles, no devnet, the embedded UI): see the top of run.js.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  echo "# installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
# npm ci when playwright-core is missing or not the locked version.
if ! node -e 'const l = require("./tests/browser/package-lock.json").packages["node_modules/playwright-core"].version;
  process.exit(require("./tests/browser/node_modules/playwright-core/package.json").version === l ? 0 : 1)' 2>/dev/null; then
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

export NEVERUST_BIN="${NEVERUST_BIN:-${CARGO_TARGET_DIR:-target}/release/neverust}"
if [ ! -x "$NEVERUST_BIN" ]; then
  echo "no node binary at $NEVERUST_BIN: build it (cargo build --release -p neverust) or set NEVERUST_BIN"
  echo "0 passed, 1 failed"
  exit 1
fi
export NEVERUST_BIN="$(realpath "$NEVERUST_BIN")"
export NEVERUST_BROWSER_OUT="$(realpath -m "${NEVERUST_BROWSER_OUT:-target/browser-report}")"
exec node tests/browser/run.js
