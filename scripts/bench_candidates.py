#!/usr/bin/env python3
"""Candidate mining (every pair with cosine > threshold): blindspot vs faiss vs exact.

All methods run on the same vectors, one of two kinds (--kind):
- planted (default): n random unit vectors (float32, seeded) with planted clusters, so that many
  pairs lie above the threshold. 2% of n are cluster centres; around each centre sits a group of
  2, 3, 5, 10 or 40 vectors whose pairwise cosine is about 0.96-0.995 (groups of 40 make every one
  of the first 32 neighbours pass, which forces a second, larger search). The rest are isolated
  random vectors (cosine about 0 with everything).
- clip-like: what CLIP embeddings look like to a miner (the distribution of `blindspot
  synth-vectors --kind clip-like`): a shared mean direction (unrelated vectors have cosine about
  0.45), Zipf-sized topics, anisotropic noise, and 5% of vectors with 1-4 near-duplicates at
  cosine 0.92-0.98, straddling the threshold.

Methods:
- exact (numpy): X @ X.T in 4096 x 4096 tiles, upper triangle only. This is the ground truth.
  For n <= 50000 (or with --full-exact) it covers all pairs; otherwise it covers the pairs of
  --exact-sample random rows, recall "all" is measured on pairs touching those rows, and the
  full time is extrapolated (marked "est.").
- faiss flat range_search (exact): IndexFlatIP.range_search over the same rows.
- faiss HNSW (top-k): IndexHNSWFlat (inner product) with efConstruction / efSearch; k = 32
  neighbours per vector, searched again with k doubled (up to n) wherever all k pass the
  threshold, the rule blindspot's candidates stage uses.
- faiss HNSW range_search: the same index's approximate range search (faiss has one for
  IndexHNSWFlat; it returns the visited nodes within the radius, so it is bounded by efSearch).
- faiss IVFFlat range_search: an inverted file over sqrt(n) k-means lists (inner product),
  range_search with nprobe doubled from 1 until recall on the exact truth reaches 0.99 (the time
  of that setting is reported, training included).
- blindspot (with --blindspot): the vectors are written as a run root (embeddings shards of
  50000 rows, each followed by its commit manifest). Then, each timed as its own process:
  `partition` + `candidates` (partitioned) exact and with each `--probe` setting (exact mode is
  refused when its copy factor would pass --max-copies; the refusal and its estimate are
  printed), `index` + `candidates --method index`, and with --blindspot-exact
  `candidates --method exact`.

Peak RSS: each faiss method runs in a spawned child, each blindspot command is its own process;
the peak resident set (VmHWM, MiB) of that process is reported, by the child itself or in
blindspot's JSON summary.

Growth (--growth 100000,300000,1000000): `blindspot synth-vectors --kind clip-like` at each n
(768-d f16), then `partition --probe P` and `candidates`: time and peak RSS of each; the
mining time (partition + candidates without the recall check, which is printed apart) against
the GEMM bound (the joins' flops at --gemm-gflops); the joins' seconds and rate, the seconds
spent reading cells, MiB written by partition and fetched by candidates, the copy factor and
the guest runs.

Recall (planted) is measured on the planted pairs (pairs inside a group whose true cosine is
above the threshold), always in full. False positives are found pairs whose true cosine is not
above the threshold. Ratios are blindspot's wall time over the other method's (< 1: blindspot
is faster).

Usage (faiss: pip install -r scripts/requirements-bench.txt):
    python scripts/bench_candidates.py --n 20000 --dim 128
    python scripts/bench_candidates.py --blindspot target/release/blindspot --blindspot-exact
    python scripts/bench_candidates.py --kind clip-like --blindspot target/release/blindspot
    python scripts/bench_candidates.py --blindspot target/release/blindspot --growth 100000,300000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GROUP_SIZES = (2, 3, 5, 10, 40)
CENTRE_FRACTION = 0.02
GROUP_COSINE = (0.96, 0.995)
FIRST_K = 32
TILE = 4096
FULL_EXACT_MAX_N = 50_000
SHARD_ROWS = 50_000
DINO_DIM = 16
ENCODERS = ("synthetic-clip", "synthetic-dino")
VERSION = "0.1.0"
DOT_CHUNK = 65_536


@dataclasses.dataclass
class Corpus:
    """Unit vectors and the pairs planted in them (codes i * n + j, i < j, sorted)."""

    x: np.ndarray
    planted: np.ndarray


@dataclasses.dataclass
class Truth:
    """Exact pairs above the threshold, over all rows or over the pairs touching `rows`."""

    pairs: np.ndarray
    rows: np.ndarray | None
    seconds: float


@dataclasses.dataclass
class Result:
    """One method's line in the table."""

    method: str
    build_s: float
    search_s: float
    pairs: np.ndarray
    # Ran on the sampled rows only: its time is extrapolated to all n, its planted recall unknown.
    sampled: bool = False
    # Peak resident set of the process that ran it, MiB.
    peak_mib: float = float("nan")
    note: str = ""

    @property
    def total_s(self) -> float:
        return self.build_s + self.search_s


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Normalises the rows in place."""
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def pair_codes(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Unique sorted codes of the unordered pairs (i, j), i != j."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    keep = i != j
    lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    return np.unique(lo * n + hi)


def true_sims(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The cosine of each coded pair, in chunks so memory stays small."""
    n = len(x)
    out = np.empty(len(codes), dtype=np.float32)
    for s in range(0, len(codes), DOT_CHUNK):
        c = codes[s : s + DOT_CHUNK]
        out[s : s + len(c)] = np.einsum("ij,ij->i", x[c // n], x[c % n])
    return out


def make_corpus(n: int, dim: int, threshold: float, seed: int) -> Corpus:
    """Planted groups and isolated vectors, shuffled together."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice(GROUP_SIZES, size=max(1, round(CENTRE_FRACTION * n)))
    sizes = sizes[np.cumsum(sizes) <= n]
    clustered = int(sizes.sum())
    centres = unit_rows(rng.standard_normal((len(sizes), dim), dtype=np.float32))
    # A noise vector of norm s makes two members' expected cosine 1 / (1 + s^2).
    cosine = rng.uniform(*GROUP_COSINE, size=len(sizes))
    noise = np.sqrt(1.0 / cosine - 1.0).astype(np.float32)
    group = np.repeat(np.arange(len(sizes)), sizes)
    members = centres[group] + noise[group, None] * rng.standard_normal(
        (clustered, dim), dtype=np.float32
    ) / np.float32(np.sqrt(dim))
    isolated = rng.standard_normal((n - clustered, dim), dtype=np.float32)
    order = rng.permutation(n)
    x = np.empty((n, dim), dtype=np.float32)
    x[order] = unit_rows(np.concatenate([members, isolated]))

    planted = []
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for start, size in zip(starts, sizes):
        rows = order[start : start + size]
        i, j = np.triu_indices(size, k=1)
        above = np.einsum("ij,ij->i", x[rows[i]], x[rows[j]]) > threshold
        planted.append(pair_codes(rows[i][above], rows[j][above], n))
    return Corpus(x=x, planted=np.unique(np.concatenate(planted)))


def make_clip_like(n: int, dim: int, threshold: float, seed: int) -> Corpus:
    """A shared mean direction, Zipf topics, anisotropic noise, near-duplicates around 0.95."""
    rng = np.random.default_rng(seed)
    mean = unit_rows(rng.standard_normal((1, dim), dtype=np.float32))[0]
    topics = max(8, n // 200)
    dirs = unit_rows(rng.standard_normal((topics, dim), dtype=np.float32))
    w = np.arange(1, topics + 1, dtype=np.float64) ** -1.1
    spectrum = (1.0 + np.arange(dim, dtype=np.float32)) ** -0.5
    originals = int(n / 1.125)  # 5% of originals bring 2.5 near-duplicates on average
    topic = rng.choice(topics, size=originals, p=w / w.sum())
    noise = unit_rows(rng.standard_normal((originals, dim), dtype=np.float32) * spectrum)
    base = unit_rows(
        np.float32(np.sqrt(0.45)) * mean
        + np.float32(np.sqrt(0.25)) * dirs[topic]
        + np.float32(np.sqrt(0.30)) * noise
    )
    src = rng.choice(originals, size=n - originals)
    e = rng.standard_normal((n - originals, dim), dtype=np.float32)
    e -= np.einsum("ij,ij->i", e, base[src])[:, None] * base[src]
    e = unit_rows(e)
    cos = rng.uniform(0.92, 0.98, size=(n - originals, 1)).astype(np.float32)
    copies = unit_rows(cos * base[src] + np.sqrt(1 - cos * cos) * e)
    order = rng.permutation(n)
    x = np.empty((n, dim), dtype=np.float32)
    x[order] = np.concatenate([base, copies])
    # "Planted": each copy with its original, where above the threshold.
    a, b = order[originals:], order[src]
    above = np.einsum("ij,ij->i", x[a], x[b]) > threshold
    return Corpus(x=x, planted=pair_codes(a[above], b[above], n))


def _peak_mib() -> float:
    """VmHWM of this process (ru_maxrss would include the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child_main(conn, fn, args):
    result = fn(*args)
    conn.send((result, _peak_mib()))
    conn.close()


def in_child(fn, *args):
    """Runs fn(*args) in a fresh (spawned, so OpenMP-safe) child process; returns its result and
    the child's peak RSS in MiB (the input arrays count, as they would in any process)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child_main, args=(child, fn, args))
    p.start()
    result, peak = parent.recv()
    p.join()
    return result, peak


def exact_numpy(x: np.ndarray, threshold: float, rows: np.ndarray | None) -> Truth:
    """Brute force in tiles: all pairs i < j, or every pair touching `rows`."""
    n = len(x)
    queries = np.arange(n) if rows is None else rows
    found = []
    t0 = time.perf_counter()
    for r0 in range(0, len(queries), TILE):
        q = queries[r0 : r0 + TILE]
        xq = x[q]
        # Over all rows, tile (r, c) with c < r is the transpose of one already done.
        first = r0 if rows is None else 0
        for c0 in range(first, n, TILE):
            qi, cj = np.nonzero(xq @ x[c0 : c0 + TILE].T > threshold)
            found.append(pair_codes(q[qi], cj + c0, n))
    pairs = np.unique(np.concatenate(found))
    return Truth(pairs=pairs, rows=rows, seconds=time.perf_counter() - t0)


def faiss_flat_range(x: np.ndarray, threshold: float, rows: np.ndarray | None) -> Result:
    n, dim = x.shape
    queries = np.arange(n) if rows is None else rows
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    index.add(x)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    lims, _, ids = index.range_search(x[queries], threshold)
    pairs = pair_codes(np.repeat(queries, np.diff(lims).astype(np.int64)), ids, n)
    search = time.perf_counter() - t0
    if rows is not None:
        search *= n / len(rows)
    return Result("faiss flat range_search (exact)", build, search, pairs, sampled=rows is not None)


def faiss_hnsw(
    x: np.ndarray, threshold: float, connectivity: int, expansion_add: int, expansion_search: int
) -> tuple[Result, Result]:
    """Top-k with k doubled while every neighbour passes, and range_search, on one index."""
    n, dim = x.shape
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = expansion_add
    index.add(x)
    build = time.perf_counter() - t0
    index.hnsw.efSearch = expansion_search

    t0 = time.perf_counter()
    found = []
    queries, k = np.arange(n), min(FIRST_K, n)
    while len(queries):
        sims, ids = index.search(x[queries], k)
        passes = (ids >= 0) & (sims > threshold)
        qi, col = np.nonzero(passes)
        found.append(pair_codes(queries[qi], ids[qi, col], n))
        if k == n:
            break
        queries, k = queries[passes.all(axis=1)], min(2 * k, n)
    topk = Result("faiss HNSW top-k", build, time.perf_counter() - t0, np.unique(np.concatenate(found)))

    # faiss (1.15) splits an HNSW search into blocks of this many queries, and its range search
    # aborts ("do_allocation ... failed") when there is more than one: pass one block at a time.
    block = faiss.InterruptCallback.get_period_hint(index.hnsw.max_level * dim * expansion_search)
    t0 = time.perf_counter()
    found = []
    for q0 in range(0, n, block):
        lims, _, ids = index.range_search(x[q0 : q0 + block], threshold)
        queries = np.repeat(np.arange(q0, q0 + len(lims) - 1), np.diff(lims).astype(np.int64))
        found.append(pair_codes(queries, ids, n))
    pairs = np.unique(np.concatenate(found))
    ranged = Result("faiss HNSW range_search", build, time.perf_counter() - t0, pairs)
    return topk, ranged


def faiss_ivf_range(x: np.ndarray, threshold: float, truth: "Truth") -> Result:
    """IVFFlat with sqrt(n) lists; nprobe doubled until recall on the truth reaches 0.99."""
    n, dim = x.shape
    lists = max(1, int(round(np.sqrt(n))))
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.random.default_rng(0).choice(n, size=min(n, 64 * lists), replace=False)])
    index.add(x)
    build = time.perf_counter() - t0
    queries = np.arange(n) if truth.rows is None else truth.rows
    nprobe, best = 1, None
    while nprobe <= lists:
        index.nprobe = nprobe
        t0 = time.perf_counter()
        lims, _, ids = index.range_search(x[queries], threshold)
        search = time.perf_counter() - t0
        if truth.rows is not None:
            search *= n / len(truth.rows)
        pairs = pair_codes(np.repeat(queries, np.diff(lims).astype(np.int64)), ids, n)
        best = Result(
            f"faiss IVFFlat range nprobe={nprobe}", build, search, pairs, sampled=truth.rows is not None
        )
        if recall(touching(pairs, truth.rows, n), truth.pairs) >= 0.99:
            break
        nprobe *= 2
    return best


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def embeddings_schema(dim: int) -> pa.Schema:
    metadata = {"blindspot.version": VERSION}
    for column, encoder, d in (("clip", ENCODERS[0], dim), ("dino", ENCODERS[1], DINO_DIM)):
        metadata[f"blindspot.{column}.id"] = encoder
        metadata[f"blindspot.{column}.digest"] = f"{encoder}-digest"
        metadata[f"blindspot.{column}.dim"] = str(d)
    fields = [pa.field(name, pa.string(), nullable=False) for name in ("key", "uri", "shard")]
    fields += [pa.field(name, pa.uint32(), nullable=False) for name in ("width", "height")]
    fields += [
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("clip", vector_type(dim), nullable=False),
        pa.field("dino", vector_type(DINO_DIM), nullable=False),
    ]
    return pa.schema(fields, metadata=metadata)


def errors_schema() -> pa.Schema:
    names = ("key", "uri", "shard", "stage", "kind", "message")
    return pa.schema(
        [pa.field(name, pa.string(), nullable=False) for name in names],
        metadata={"blindspot.version": VERSION},
    )


def vectors(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])


def write_run_root(root: Path, x: np.ndarray, seed: int) -> None:
    """Embeddings shards, each followed by its (empty) errors object and commit manifest."""
    n, dim = x.shape
    schema = embeddings_schema(dim)
    rng = np.random.default_rng(seed + 1)
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        shard = f"part-{s:05d}"
        rows = range(start, min(start + SHARD_ROWS, n))
        keys = [f"v{i:09d}" for i in rows]
        dino = unit_rows(rng.standard_normal((len(rows), DINO_DIM), dtype=np.float32))
        table = pa.Table.from_arrays(
            [
                pa.array(keys, pa.string()),
                pa.array([f"synthetic://{k}" for k in keys], pa.string()),
                pa.array([shard] * len(rows), pa.string()),
                pa.array(np.ones(len(rows), dtype=np.uint32)),
                pa.array(np.ones(len(rows), dtype=np.uint32)),
                pa.array([f"{i:064x}" for i in rows], pa.string()),
                vectors(x[start : start + len(rows)]),
                vectors(dino),
            ],
            schema=schema,
        )
        embeddings = f"embeddings/{shard}.parquet"
        errors = f"errors/{shard}.parquet"
        for rel, t in ((embeddings, table), (errors, errors_schema().empty_table())):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, root / rel, use_compliant_nested_type=False)
        commit = {
            "shard": shard,
            "shard_uri": f"synthetic://{shard}",
            "id": shard,
            "embeddings": embeddings,
            "errors": errors,
            "rows": len(rows),
            "error_rows": 0,
            "encoders": list(ENCODERS),
            "version": VERSION,
        }
        manifest = root / "_commits" / "embed" / f"{shard}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(commit))


def run_blindspot(binary: str, args: list[str], may_fail: bool = False) -> tuple[float, dict, float]:
    """Wall seconds, the JSON line the command printed, and its peak RSS in MiB. With
    may_fail, a failure returns {"error": stderr} instead of stopping the benchmark."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen([binary, *args, "--json"], stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    # A forked child's ru_maxrss includes the Python parent it was forked from: prefer the
    # peak the command reports itself (VmHWM, after exec).
    peak = usage.ru_maxrss / 1024
    if proc.returncode != 0:
        if may_fail:
            return wall, {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}, peak
        sys.exit(f"{binary} {' '.join(args)} failed ({proc.returncode}):\n{err}")
    lines = [line for line in out.splitlines() if line.strip()]
    report = json.loads(lines[-1])
    if report.get("peak_rss_bytes"):
        peak = report["peak_rss_bytes"] / (1 << 20)
    return wall, report, peak


def read_candidates(root: Path, n: int) -> np.ndarray:
    files = sorted((root / "candidates").rglob("*.parquet"))
    if not files:
        sys.exit(f"no candidates under {root / 'candidates'}")
    table = pa.concat_tables([pq.read_table(f, columns=["a", "b"]) for f in files])
    if not pc.all(pc.less(table["a"], table["b"])).as_py():
        sys.exit("candidates has rows with a >= b")
    index = [pc.cast(pc.utf8_slice_codeunits(table[c], 1), pa.int64()).to_numpy() for c in "ab"]
    return pair_codes(index[0], index[1], n)


def blindspot(args: argparse.Namespace, x: np.ndarray, work: Path) -> list[Result]:
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    write_run_root(root, x, args.seed)
    print(f"run root: {root}")
    print(f"embeddings schema:\n{pq.read_schema(root / 'embeddings' / 'part-00000.parquet')}")
    root_args = ["--root", str(root)]
    threshold = ["--clip-min", str(args.threshold)]
    results = []
    probes = [None] + [int(p) for p in args.probe.split(",") if p]
    for probe in probes:
        extra = ["--max-copies", str(args.max_copies)] if probe is None else ["--probe", str(probe)]
        name = "blindspot partitioned exact" if probe is None else f"blindspot partitioned probe={probe}"
        build, report, peak_p = run_blindspot(
            args.blindspot, ["partition", *root_args, *threshold, "--retrain", *extra], may_fail=True
        )
        print(f"blindspot partition ({name}): {json.dumps(report)}")
        if "error" in report:
            results.append(Result(name, build, float("nan"), np.array([], dtype=np.int64),
                                  note=report["error"]))
            continue
        search, report, peak_c = run_blindspot(args.blindspot, ["candidates", *root_args, *threshold])
        print(f"blindspot candidates ({name}): {json.dumps(report)}")
        results.append(Result(name, build, search, read_candidates(root, len(x)),
                              peak_mib=max(peak_p, peak_c),
                              note=f"copy factor {report.get('copy_factor', 0):.2f}"))
    build, report, peak_i = run_blindspot(
        args.blindspot,
        ["index", *root_args, "--connectivity", str(args.connectivity),
         "--expansion-add", str(args.expansion_add),
         "--expansion-search", str(args.expansion_search)],
    )
    print(f"blindspot index: {json.dumps(report)}")
    search, report, peak_c = run_blindspot(
        args.blindspot, ["candidates", *root_args, *threshold, "--method", "index"]
    )
    print(f"blindspot candidates --method index: {json.dumps(report)}")
    results.append(Result("blindspot HNSW", build, search, read_candidates(root, len(x)),
                          peak_mib=max(peak_i, peak_c)))
    if args.blindspot_exact:
        search, report, peak = run_blindspot(
            args.blindspot, ["candidates", *root_args, *threshold, "--method", "exact"]
        )
        print(f"blindspot candidates --method exact: {json.dumps(report)}")
        results.append(Result("blindspot exact", 0.0, search, read_candidates(root, len(x)),
                              peak_mib=peak))
    return results


def growth(args: argparse.Namespace, work: Path) -> None:
    """partition + candidates on clip-like vectors of growing n: time, peak RSS, the split of
    the candidates' time, and the distance to the GEMM bound."""
    print(f"\ngrowth (clip-like, {args.dim}-d f16, probe {args.growth_probe}; bound: the joins' "
          f"flops at {args.gemm_gflops} GFLOP/s, the criterion GEMM figure):")
    print(f"{'n':>10} {'cells':>7} {'partition s':>12} {'candidates s':>13} {'mining s':>9} "
          f"{'bound s':>8} {'x bound':>8} {'recall s':>9} {'peak MiB':>9} {'pairs':>9} {'join s':>7} "
          f"{'GFLOP/s':>8} {'read s':>7} {'MiB written':>12} {'MiB read':>9} {'copy':>5} {'runs':>8}")
    for n in [int(v) for v in args.growth.split(",")]:
        root = work / f"growth-{n}"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([args.blindspot, "synth-vectors", "--out", str(root), "--n", str(n),
                        "--dim", str(args.dim), "--kind", "clip-like", "--seed", str(args.seed)],
                       check=True, capture_output=True)
        p_s, p, p_peak = run_blindspot(args.blindspot, ["partition", "--root", str(root),
                                                        "--probe", str(args.growth_probe)])
        c_s, c, c_peak = run_blindspot(args.blindspot, ["candidates", "--root", str(root)])
        # The recall check that candidates runs on an approximate layout (a brute force of
        # about 1,000 sampled images against every vector) is timed apart from the mining.
        recall_s = c.get("recall_seconds", 0.0)
        mining = p_s + c_s - recall_s
        # The candidates' split: busy seconds in the joins (GEMM and scan) and in reading
        # cells (which overlaps the joins), and the rate the joins reached.
        join_s, read_s = c.get("join_seconds", 0.0), c.get("read_seconds", 0.0)
        flops = c.get("flops", 0.0)
        gflops = flops / join_s / 1e9 if join_s else float("nan")
        bound = flops / (args.gemm_gflops * 1e9)
        print(f"{n:>10} {p['cells']:>7} {p_s:>12.2f} {c_s - recall_s:>13.2f} {mining:>9.2f} "
              f"{bound:>8.2f} {mining / bound if bound else float('nan'):>8.2f} {recall_s:>9.2f} "
              f"{max(p_peak, c_peak):>9.0f} {c['pairs']:>9} {join_s:>7.2f} {gflops:>8.1f} {read_s:>7.2f} "
              f"{p['bytes'] / 2**20:>12.1f} {c['bytes_read'] / 2**20:>9.1f} {p['copy_factor']:>5.2f} "
              f"{p.get('guest_runs', 0):>8}")
        shutil.rmtree(root, ignore_errors=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.isin(truth, found).mean()) if len(truth) else 1.0


def touching(codes: np.ndarray, rows: np.ndarray | None, n: int) -> np.ndarray:
    """The coded pairs with at least one end in `rows` (all of them when `rows` is None)."""
    if rows is None:
        return codes
    member = np.zeros(n, dtype=bool)
    member[rows] = True
    return codes[member[codes // n] | member[codes % n]]


def print_table(
    results: list[Result], truth: Truth, corpus: Corpus, threshold: float
) -> None:
    n = len(corpus.x)
    head = ("method", "build s", "search s", "total s", "pairs", "recall all", "recall planted",
            "false pos", "peak MiB")
    print("\n{:<38} {:>9} {:>9} {:>10} {:>10} {:>10} {:>14} {:>9} {:>9}".format(*head))
    for r in results:
        if r.note and np.isnan(r.search_s):
            print(f"{r.method:<38} refused: {r.note}")
            continue
        false_pos = int((true_sims(corpus.x, r.pairs) <= threshold).sum())
        total = f"~{r.total_s:.3f}" if r.sampled else f"{r.total_s:.3f}"
        planted = "-" if r.sampled else f"{recall(r.pairs, corpus.planted):.4f}"
        print(
            f"{r.method:<38} {r.build_s:>9.3f} {r.search_s:>9.3f} {total:>10} {len(r.pairs):>10} "
            f"{recall(touching(r.pairs, truth.rows, n), truth.pairs):>10.4f} "
            f"{planted:>14} {false_pos:>9} {r.peak_mib:>9.0f}  {r.note}"
        )


def print_ratios(results: list[Result]) -> None:
    hnsw = next((r for r in results if r.method == "faiss HNSW top-k"), None)
    for mine in [r for r in results if r.method.startswith("blindspot") and not np.isnan(r.search_s)]:
        print(f"\n{mine.method} wall time / other (< 1: blindspot faster):")
        for other in results:
            if other is mine or np.isnan(other.search_s) or other.method.startswith("blindspot"):
                continue
            est = " (est.)" if other.sampled else ""
            print(f"  vs {other.method:<38} total {mine.total_s / other.total_s:7.3f}{est}")
    if hnsw:
        print(f"\ntarget: at most half of faiss HNSW top-k's {hnsw.total_s:.2f} s, recall >= 0.99")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="vectors (200000)")
    ap.add_argument("--dim", type=int, default=768, help="dimension (768)")
    ap.add_argument("--threshold", type=float, default=0.95, help="cosine threshold (0.95)")
    ap.add_argument("--connectivity", type=int, default=16, help="HNSW M (16)")
    ap.add_argument("--expansion-add", type=int, default=128, help="HNSW efConstruction (128)")
    ap.add_argument("--expansion-search", type=int, default=64, help="HNSW efSearch (64)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (0)")
    ap.add_argument("--blindspot", help="blindspot binary (omit to run faiss and exact only)")
    ap.add_argument("--blindspot-exact", action="store_true", help="also time `candidates --method exact`")
    ap.add_argument("--kind", choices=["planted", "clip-like"], default="planted", help="vectors (planted)")
    ap.add_argument("--probe", default="1,2,4", help="partition --probe settings to time (1,2,4)")
    ap.add_argument("--max-copies", type=float, default=16, help="partition --max-copies for exact mode (16)")
    ap.add_argument("--growth", default="", help="also run the growth benchmark at these n (comma-separated)")
    ap.add_argument("--growth-probe", type=int, default=2, help="partition --probe of the growth runs (2)")
    ap.add_argument("--gemm-gflops", type=float, default=121.0,
                    help="the GEMM rate the bound is computed at (121: `cargo bench --bench mining` here)")
    ap.add_argument("--skip-faiss", action="store_true", help="only blindspot (for --growth alone)")
    ap.add_argument("--work", type=Path, help="where the run root goes (default: a temp dir, removed)")
    ap.add_argument("--exact-sample", type=int, default=2000,
                    help=f"rows of exact truth when n > {FULL_EXACT_MAX_N} (2000)")
    ap.add_argument("--full-exact", action="store_true", help="exact truth over all pairs at any n")
    args = ap.parse_args()

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, "
        f"pyarrow {pa.__version__}, faiss threads {faiss.omp_get_max_threads()}"
    )
    print(
        f"n {args.n}, dim {args.dim}, threshold {args.threshold}, connectivity {args.connectivity}, "
        f"expansion add/search {args.expansion_add}/{args.expansion_search}, seed {args.seed}"
    )
    if args.skip_faiss:
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as work:
            growth(args, args.work or Path(work))
        return 0
    t0 = time.perf_counter()
    make = make_corpus if args.kind == "planted" else make_clip_like
    corpus = make(args.n, args.dim, args.threshold, args.seed)
    print(f"corpus ({args.kind}): {time.perf_counter() - t0:.1f} s, {len(corpus.planted)} planted pairs")

    rows = None
    if args.n > FULL_EXACT_MAX_N and not args.full_exact:
        rng = np.random.default_rng(args.seed + 2)
        rows = np.sort(rng.choice(args.n, size=min(args.exact_sample, args.n), replace=False))
        print(f"exact truth on {len(rows)} sampled rows; 'recall all' counts pairs touching them")
    truth = exact_numpy(corpus.x, args.threshold, rows)
    # The full brute force computes the upper triangle only: half of what the sample scales to.
    exact_s = truth.seconds if rows is None else truth.seconds * args.n / len(rows) / 2
    print(f"exact (numpy): {truth.seconds:.3f} s measured, {len(truth.pairs)} pairs")

    results = [Result("exact (numpy)", 0.0, exact_s, truth.pairs, sampled=rows is not None)]
    flat, peak = in_child(faiss_flat_range, corpus.x, args.threshold, rows)
    flat.peak_mib = peak
    results.append(flat)
    (topk, ranged), peak = in_child(
        faiss_hnsw, corpus.x, args.threshold, args.connectivity, args.expansion_add,
        args.expansion_search,
    )
    topk.peak_mib = ranged.peak_mib = peak
    results.extend([topk, ranged])
    ivf, peak = in_child(faiss_ivf_range, corpus.x, args.threshold, truth)
    ivf.peak_mib = peak
    results.append(ivf)
    if args.blindspot:
        if args.work:
            results.extend(blindspot(args, corpus.x, args.work))
        else:
            with tempfile.TemporaryDirectory(prefix="bench-candidates-") as work:
                results.extend(blindspot(args, corpus.x, Path(work)))

    print_table(results, truth, corpus, args.threshold)
    if rows is not None:
        print("~: ran on the sampled rows; time extrapolated to all n, pairs are the sample's")
    print_ratios(results)
    if args.growth and args.blindspot:
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as work:
            growth(args, args.work or Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
