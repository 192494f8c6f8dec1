#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-browser.sh
cargo test --locked "$@"
