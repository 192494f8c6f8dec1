#!/usr/bin/env python3
"""After mining, at LAION's shape: every stage from partition to report on a LAION-like vector
table (`synth-vectors --kind laion-like`: CLIP 768-d and DINOv2 1024-d in f16, 30% of the
images in near-duplicate groups up to --max-group members, 30% of the groups two pictures in
DINOv2), each command in its own process under /usr/bin/time (wall seconds, peak RSS).

With --compare, the filter is also run as the single global query (`blindspot sql` with
`sql/pairs.sql`, thresholds as literals, over the whole root) and by DuckDB doing the same
join on the same Parquet objects (`list_cosine_similarity`), on the same root in the same run,
and the three pair sets are compared (per-unit against global bit for bit; DuckDB's float
arithmetic differs in the last bits, so its similarities are compared to 1e-5).

Usage:
    python scripts/bench_after_mining.py --blindspot target/release/blindspot --n 200000
    python scripts/bench_after_mining.py --blindspot ... --n 1000000 --max-group 2000
    python scripts/bench_after_mining.py --blindspot ... --n 100000 --max-group 40 --compare
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str], label: str) -> dict:
    """Runs cmd under /usr/bin/time -v; returns wall seconds, peak RSS (MiB) and stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        started = time.time()
        p = subprocess.run(
            ["/usr/bin/time", "-v", "-o", t.name, *cmd],
            capture_output=True,
            text=True,
        )
        wall = time.time() - started
        report = t.read()
    if p.returncode != 0:
        sys.exit(f"{label} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    row = {"stage": label, "seconds": round(wall, 1), "peak_rss_mib": round(rss / 1024)}
    print(json.dumps(row), flush=True)
    row["stdout"] = p.stdout
    return row


def objects(root: str, table: str) -> list[str]:
    """The Parquet objects the catalog's commits name for `table` (relative to root)."""
    out = []
    for path in glob.glob(os.path.join(root, "_commits", "**", "*.json"), recursive=True):
        with open(path) as f:
            try:
                c = json.load(f)
            except json.JSONDecodeError:
                continue
        for o in (c.get("tables") or {}).get(table, []):
            out.append(os.path.join(root, o["path"]))
    return sorted(set(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blindspot", required=True)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--max-group", type=int, default=2000)
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--dir", default=None, help="work folder (default: a temp dir, removed)")
    ap.add_argument("--compare", action="store_true", help="also the global query and DuckDB")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --compare: the per-unit filter and DuckDB this many times each, in turns")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    work = a.dir or tempfile.mkdtemp(prefix="bench-after-mining-")
    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    bs = a.blindspot
    rows = []
    rows.append(timed([bs, "synth-vectors", "--out", root, "--n", str(a.n), "--dim", "768",
                       "--kind", "laion-like", "--dtype", a.dtype,
                       "--max-group", str(a.max_group)], "synth-vectors"))
    rows.append(timed([bs, "partition", "--root", root, "--json"], "partition"))
    rows.append(timed([bs, "candidates", "--root", root, "--json"], "candidates"))
    cand = json.loads(rows[-1]["stdout"])
    rows.append(timed([bs, "filter", "--root", root, "--json"], "filter"))
    filt = json.loads(rows[-1]["stdout"])
    rep = {}
    if not a.no_report:
        rows.append(timed([bs, "report", "--root", root, "--out", os.path.join(work, "site"),
                           "--thumbnails", "0", "--json"], "report"))
        rep = json.loads(rows[-1]["stdout"])
    print(json.dumps({
        "n": a.n,
        "candidates": cand["table_pairs"],
        "recall": cand.get("recall"),
        "copy_factor": cand.get("copy_factor"),
        "pairs": filt["table_pairs"],
        "units": filt["units"],
        "work": filt.get("work"),
        "largest_unit": filt["largest_unit"],
        "largest_unit_vectors": filt["largest_unit_vectors"],
        "groups": filt.get("groups"),
        "group_pairs": rep.get("group_pairs"),
        "filter_over_candidates_time": round(rows[3]["seconds"] / max(rows[2]["seconds"], 1e-9), 2),
    }), flush=True)
    if a.compare:
        compare(bs, root, work, a.repeat)
    if not a.dir:
        shutil.rmtree(work, ignore_errors=True)


def clean_filter(root: str) -> None:
    """Removes what filter wrote, so that it runs again from the candidates."""
    for d in ["pairs", "similarity_grid", "image_minima", "dup_edges", "groups", "_tmp",
              os.path.join("_commits", "filter")]:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    try:
        os.remove(os.path.join(root, "_commits", "groups.json"))
    except FileNotFoundError:
        pass


def compare(bs: str, root: str, work: str, repeat: int = 1) -> None:
    """The global query once, then the per-unit filter and DuckDB `repeat` times each, taking
    turns (the global query's 16 GiB evicts the page cache; later turns read warm files)."""
    import duckdb

    here = os.path.dirname(os.path.abspath(__file__))
    sql = open(os.path.join(here, "..", "sql", "pairs.sql")).read()
    body = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    literal = body.replace("$1", "CAST(0.6 AS FLOAT)").replace("$2", "'global'")
    out = os.path.join(work, "global.parquet")
    timed([bs, "sql", "--root", root, literal, "--format", "parquet", "--output", out], "global query")
    cands = objects(root, "candidates")
    embeds = objects(root, "embeddings")
    duck_out = os.path.join(work, "duckdb.parquet")
    script = f"""
import duckdb, sys
con = duckdb.connect()
con.execute("SET temp_directory = '{work}/duck-tmp'")
con.execute('''
COPY (
  SELECT c.a, c.b, da.uri AS a_uri, db.uri AS b_uri, c.clip_sim,
         list_cosine_similarity(da.dino::FLOAT[], db.dino::FLOAT[]) AS dino_sim
  FROM read_parquet({cands!r}) AS c
  JOIN read_parquet({embeds!r}) AS da ON da.key = c.a
  JOIN read_parquet({embeds!r}) AS db ON db.key = c.b
  WHERE list_cosine_similarity(da.dino::FLOAT[], db.dino::FLOAT[]) < 0.6
  ORDER BY c.a, c.b
) TO '{duck_out}' (FORMAT parquet)
''')
"""
    for turn in range(repeat):
        if turn > 0 or repeat > 1:
            clean_filter(root)
            timed([bs, "filter", "--root", root], f"filter (turn {turn + 1})")
        timed([sys.executable, "-c", script], f"duckdb (turn {turn + 1})" if repeat > 1 else "duckdb")

    def pairs(paths):
        out = {}
        for a, b, d in duckdb.sql(f"SELECT a, b, dino_sim FROM read_parquet({paths!r})").fetchall():
            assert (a, b) not in out, f"{a},{b} twice"
            out[(a, b)] = d
        return out
    mine = pairs(objects(root, "pairs"))
    glob_ = pairs([out])
    duck = pairs([duck_out])
    same_bits = mine == glob_
    duck_keys = set(duck) == set(mine)
    duck_close = duck_keys and all(abs(duck[k] - mine[k]) < 1e-5 for k in mine)
    print(json.dumps({"pairs": len(mine), "per_unit_equals_global_bitwise": same_bits,
                      "duckdb_same_pairs": duck_keys, "duckdb_sims_within_1e-5": duck_close}),
          flush=True)


if __name__ == "__main__":
    main()
