#!/usr/bin/env bash
# The release binary as it ships: builds it (stripped, no debug info: Cargo.toml's release
# profile), prints its size and what `file` says of it, then copies it away from the checkout
# and runs `--version` and the demo with BLINDSPOT_HOME holding the demo's pipelines and tiny
# encoders, as the container image does.
#
#   scripts/check_release.sh            # builds with cargo build --release --locked
#   scripts/check_release.sh --no-build # uses the release binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release --locked --bin blindspot
fi
bin="$target/release/blindspot"
[[ -x "$bin" ]] || { echo "no release binary at $bin (run without --no-build)" >&2; exit 2; }
echo "size: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
if command -v file >/dev/null; then file "$bin"; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/blindspot"
mkdir -p "$work/home/models"
cp -r pipelines "$work/home/"
cp -r models/tiny "$work/home/models/"
# ONNX Runtime, as scripts/setup.sh installs it for the checkout.
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
  ORT_DYLIB_PATH="$(ls "$PWD"/.ort/lib/libonnxruntime.so* 2>/dev/null | head -n1)"
  export ORT_DYLIB_PATH
fi
cd "$work"
BLINDSPOT_HOME="$work/home" ./blindspot --version
start=$(date +%s)
BLINDSPOT_HOME="$work/home" RUST_LOG=warn ./blindspot demo --out "$work/demo" > "$work/demo.log"
echo "demo: ok in $(( $(date +%s) - start )) s ($(grep -c . "$work/demo.log") lines; report at $work/demo/report/index.html)"
tail -n 4 "$work/demo.log"
