#!/usr/bin/env bash
# Installs what blindspot needs on a fresh machine, idempotently:
#  - .venv: the Python packages of scripts/requirements.txt (the onnxruntime wheel among them);
#  - .ort/lib/libonnxruntime.so: the ONNX Runtime library from that wheel, where the
#    blindspot binary looks for it (ORT_DYLIB_PATH overrides).
# The Rust toolchain (cargo) is expected on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is not on PATH; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

lib=$(.venv/bin/python - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))
if not libs:
    raise SystemExit("setup: the onnxruntime wheel has no libonnxruntime.so")
print(libs[0])
PY
)
mkdir -p .ort/lib
ln -sfn "$lib" .ort/lib/libonnxruntime.so
echo "setup: ONNX Runtime $(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)') at .ort/lib/libonnxruntime.so" >&2
