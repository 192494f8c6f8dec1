#!/usr/bin/env bash
# A real img2dataset run on loopback, embedded by blindspot: the synthetic corpus is served by
# `python -m http.server`, img2dataset (installed into its own venv, not the project's: it pulls
# pandas, opencv and albumentations) downloads it in `webdataset` and `parquet` formats with one
# URL that 404s, and blindspot embeds both outputs. Checks: every successful download embedded
# exactly once, with img2dataset's keys, in both formats; the failed row skipped and counted.
#
#   scripts/check_img2dataset.sh [BLINDSPOT] [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$here/target/release/blindspot}"
work="${2:-/tmp/blindspot-img2dataset}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$here/.ort/lib/libonnxruntime.so}" RUST_LOG=warn NO_ALBUMENTATIONS_UPDATE=1
[ -x "$work/venv/bin/img2dataset" ] || { python3 -m venv "$work/venv"; "$work/venv/bin/pip" install -q img2dataset; }
rm -rf "$work/c" "$work"/out-* "$work"/run-*
"$bin" synth --out "$work/c" >/dev/null
port=8765
(cd "$work/c/images" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
trap 'kill $server' EXIT
sleep 1
(cd "$work/c/images" && find . -type f | sort | sed "s#^\./#http://127.0.0.1:$port/#") > "$work/urls.txt"
echo "http://127.0.0.1:$port/missing.png" >> "$work/urls.txt"
want=$(($(wc -l < "$work/urls.txt") - 1))
for f in webdataset parquet; do
  "$work/venv/bin/img2dataset" --url_list "$work/urls.txt" --output_folder "$work/out-$f" \
    --output_format "$f" --processes_count 1 --thread_count 4 --resize_mode no \
    --disable_all_reencoding True --number_sample_per_shard 20 > "$work/log-$f.txt" 2>&1
  "$bin" embed "$work/out-$f" --out "$work/run-$f" --json
  got=$("$bin" sql --root "$work/run-$f" --format csv \
    "SELECT COUNT(*) AS n, COUNT(DISTINCT key) AS k FROM embeddings" | tail -1)
  keys=$("$work/venv/bin/python" -c "
import pyarrow.parquet as pq, glob
ks = sorted(k for f in glob.glob('$work/out-$f/*.parquet') for k, s in zip(pq.read_table(f, columns=['key','status']).column('key').to_pylist(), pq.read_table(f, columns=['status']).column('status').to_pylist()) if s == 'success')
print(','.join(ks))")
  mine=$("$bin" sql --root "$work/run-$f" --format csv "SELECT key FROM embeddings ORDER BY key" | tail -n +2 | paste -sd, -)
  [ "$got" = "$want,$want" ] || { echo "$f: embedded $got, want $want,$want"; exit 1; }
  [ "$keys" = "$mine" ] || { echo "$f: keys differ from img2dataset's successful keys"; exit 1; }
  echo "$f: $want of $want successful downloads embedded once each, with img2dataset's keys"
done
