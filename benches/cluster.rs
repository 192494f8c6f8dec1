//! What the cluster and the leases cost, in one run:
//!
//! - `filter`: `sql/pairs.sql` over `CANDIDATES` synthetic candidate pairs among `IMAGES`
//!   images (DINOv2 vectors of `DINO_DIM` in Float16), run by `blindspot filter` in one process
//!   and by `blindspot filter --cluster` on a loopback Ballista cluster of one scheduler and
//!   two executors (real processes of the binary). Both write the same pairs (checked).
//! - `leases`: per unit, what claiming adds to a unit's commit: claim (conditional put, and
//!   the commit check), `commit_once` and deleting the lease, against a plain commit, on a
//!   local root and on `memory://`.
//!
//! `cargo bench --bench cluster` (or `--profile dev` to reuse the test build; figures in the
//! README were measured that way). `BLINDSPOT_BENCH_CANDIDATES` overrides the pair count.
//! Prints one JSON line per measurement.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float32Array, RecordBatch, StringArray};
use blindspot::lease::{self, ClaimParams, Claims};
use blindspot::storage::Location;
use blindspot::synth::vectors::{self, VectorKind, VectorParams};
use blindspot::table::schema::{self, FloatType};
use blindspot::table::{Catalog, Commit, CommitSet};

// Only its commit helper is used here.
#[allow(dead_code)]
#[path = "../tests/support/big_table.rs"]
mod big_table;

const IMAGES: usize = 1_000_000;
const CANDIDATES: usize = 5_000_000;
const DINO_DIM: usize = 32;
const LEASE_UNITS: usize = 200;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_blindspot"));
    c.env("RUST_LOG", "warn");
    c
}

/// The root: embeddings of `IMAGES` vectors and a `candidates` table of `n` pairs among them.
async fn write_root(root: &Location, n: usize) {
    let params = VectorParams {
        n: IMAGES,
        dim: 16,
        dino_dim: DINO_DIM,
        kind: VectorKind::ClipLike,
        shard_rows: 100_000,
        seed: 7,
        float: FloatType::F16,
        prefix: "v".into(),
        ..Default::default()
    };
    vectors::write(root, &params).await.unwrap();
    let key = |i: usize| format!("v/{:010}", i % IMAGES);
    let batches: Vec<RecordBatch> = (0..n)
        .step_by(64 * 1024)
        .map(|start| {
            let end = (start + 64 * 1024).min(n);
            RecordBatch::try_new(
                schema::candidates(),
                vec![
                    Arc::new(StringArray::from_iter_values((start..end).map(key))),
                    Arc::new(StringArray::from_iter_values(
                        (start..end).map(|i| key(i.wrapping_mul(7_919) + 1)),
                    )),
                    Arc::new(Float32Array::from_iter_values(
                        (start..end).map(|i| 0.95 + (i % 50) as f32 / 1000.0),
                    )),
                ],
            )
            .unwrap()
        })
        .collect();
    big_table::commit_candidates(root, &batches).await;
}

fn free_port() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn filter(root: &Path, cluster: Option<&str>) -> (f64, serde_json::Value) {
    let mut c = bin();
    c.args(["filter", "--root", root.to_str().unwrap(), "--json"]);
    if let Some(url) = cluster {
        c.args(["--cluster", url]);
    }
    let started = Instant::now();
    let out = c.output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (seconds, serde_json::from_slice(&out.stdout).unwrap())
}

fn pairs_digest(root: &Path) -> String {
    let out = bin()
        .args([
            "sql",
            "--root",
            root.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT COUNT(*) AS n, SUM(dino_sim) AS s, MIN(a) AS lo, MAX(b) AS hi FROM pairs",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bench_filter(dir: &Path, n: usize) {
    let local = dir.join("local");
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(write_root(
        &Location::open(local.to_str().unwrap()).unwrap(),
        n,
    ));
    let remote = dir.join("cluster");
    let status = Command::new("cp")
        .args(["-r"])
        .arg(&local)
        .arg(&remote)
        .status()
        .unwrap();
    assert!(status.success());
    eprintln!(
        "wrote {n} candidates among {IMAGES} images in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let (local_s, local_summary) = filter(&local, None);
    println!(
        "{}",
        serde_json::json!({"bench": "filter", "mode": "local", "candidates": n, "seconds": local_s, "pairs": local_summary["pairs"]})
    );

    let sched = free_port();
    let _scheduler = Killed(
        bin()
            .args([
                "cluster",
                "scheduler",
                "--bind",
                &format!("127.0.0.1:{sched}"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut executors = Vec::new();
    for i in 0..2 {
        let port = free_port();
        executors.push(Killed(
            bin()
                .args([
                    "cluster",
                    "executor",
                    "--scheduler",
                    &format!("127.0.0.1:{sched}"),
                    "--bind",
                    &format!("127.0.0.1:{port}"),
                    "--work-dir",
                    dir.join(format!("work-{i}")).to_str().unwrap(),
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("df://127.0.0.1:{sched}");
    let (cluster_s, cluster_summary) = filter(&remote, Some(&url));
    println!(
        "{}",
        serde_json::json!({"bench": "filter", "mode": "cluster (1 scheduler, 2 executors, loopback)", "candidates": n, "seconds": cluster_s, "pairs": cluster_summary["pairs"]})
    );
    assert_eq!(local_summary["pairs"], cluster_summary["pairs"]);
    assert_eq!(
        pairs_digest(&local),
        pairs_digest(&remote),
        "the same pairs"
    );
    println!(
        "{}",
        serde_json::json!({"bench": "filter", "cluster_over_local": cluster_s / local_s})
    );
}

async fn bench_leases(root: &Location, label: &str) {
    let catalog = Catalog::new(root);
    let commit = |unit: &str| Commit::new(unit, 1, &serde_json::json!({"bench": true})).unwrap();
    let started = Instant::now();
    for i in 0..LEASE_UNITS {
        catalog
            .commit(CommitSet::EMBED, &commit(&format!("plain-{i:05}")))
            .await
            .unwrap();
    }
    let plain = started.elapsed().as_secs_f64() / LEASE_UNITS as f64;
    let claims = Claims::new(
        root,
        "embed",
        &ClaimParams {
            worker: Some("bench".into()),
            ttl: Duration::from_secs(60),
        },
    )
    .unwrap();
    let started = Instant::now();
    for i in 0..LEASE_UNITS {
        let unit = format!("claimed-{i:05}");
        assert!(claims
            .claim_pending(&catalog, CommitSet::EMBED, &unit)
            .await
            .unwrap());
        assert!(
            lease::commit_claimed(&claims, &catalog, CommitSet::EMBED, &commit(&unit))
                .await
                .unwrap()
        );
    }
    let claimed = started.elapsed().as_secs_f64() / LEASE_UNITS as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "leases", "store": label, "units": LEASE_UNITS,
            "plain_commit_ms": plain * 1e3, "claimed_unit_ms": claimed * 1e3,
            "overhead_ms_per_unit": (claimed - plain) * 1e3,
        })
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) skips.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let local = Location::open(dir.path().join("leases").to_str().unwrap()).unwrap();
        bench_leases(&local, "local").await;
        let memory = Location::open("memory://bench-leases/root").unwrap();
        bench_leases(&memory, "memory").await;
    });
    drop(rt);
    let n = std::env::var("BLINDSPOT_BENCH_CANDIDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CANDIDATES);
    bench_filter(dir.path(), n);
}
