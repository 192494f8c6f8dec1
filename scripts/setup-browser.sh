#!/usr/bin/env bash
# Installs what the report's browser tests need, idempotently:
#  - Debian's chromium (headless; /usr/bin/chromium), through apt-get when it is missing;
#  - playwright-core (tests/browser/package-lock.json) into tests/browser/node_modules; it
#    drives that chromium and downloads no browser of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  echo "setup-browser: installing Debian's chromium" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null; then
  echo "setup-browser: node (Node.js 18+) is not on PATH; install it (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
stamp=tests/browser/node_modules/.lock.sha256
want=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-browser: installing playwright-core into tests/browser" >&2
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
  echo "$want" > "$stamp"
fi
echo "setup-browser: $(chromium --version 2>/dev/null | head -1), playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")" >&2
