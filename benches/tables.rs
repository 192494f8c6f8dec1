//! Peak memory and time of reading a 2-million-row `candidates` table, three ways, each in a
//! fresh process so peak RSS (`VmHWM`) belongs to that read alone:
//!
//! - `whole`: the way tables were read before the catalog: the object fetched whole, every
//!   batch decoded and kept (the old `tables::read`), on an object written the old way (one
//!   zstd `ArrowWriter` with its default 1M-row row groups);
//! - `stream`: the catalog's scan of a table written by its writer (64k-row row groups),
//!   batches consumed as they come;
//! - `baseline`: the process with the runtime started and nothing read.
//!
//! `cargo bench --bench tables` (or `--profile dev` to reuse the test build). Prints one JSON
//! line per mode and a summary.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float32Array, RecordBatch, StringArray};
use blindspot::storage::Location;
use blindspot::table::{self, io, schema, Catalog, Commit, CommitSet, Generations, WriteParams};
use futures::TryStreamExt;

const ROWS: usize = 2_000_000;
const CHILD: &str = "BLINDSPOT_TABLES_BENCH_MODE";
const ROOT: &str = "BLINDSPOT_TABLES_BENCH_ROOT";

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Keys shaped like img2dataset's (`00042/000421337`), pairs sorted as the stage writes them.
fn batches() -> Vec<RecordBatch> {
    let key = |i: usize| format!("{:05}/{:09}", i / 10_000, i);
    (0..ROWS)
        .step_by(64 * 1024)
        .map(|start| {
            let end = (start + 64 * 1024).min(ROWS);
            RecordBatch::try_new(
                schema::candidates(),
                vec![
                    Arc::new(StringArray::from_iter_values((start..end).map(key))),
                    Arc::new(StringArray::from_iter_values(
                        (start..end).map(|i| key(i + 1 + i % 7)),
                    )),
                    Arc::new(Float32Array::from_iter_values(
                        (start..end).map(|i| 0.95 + (i % 50) as f32 / 1000.0),
                    )),
                ],
            )
            .expect("a candidates batch")
        })
        .collect()
}

async fn write_both(dir: &std::path::Path) {
    let batches = batches();
    // The old way: one object, zstd, the writer's default row groups (1M rows), as the old
    // `tables::write` wrote it.
    let old = dir.join("old");
    std::fs::create_dir_all(old.join("candidates")).unwrap();
    let file = std::fs::File::create(old.join("candidates/candidates.parquet")).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, schema::candidates(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    // The catalog's way.
    let root = Location::open(dir.join("new").to_str().unwrap()).unwrap();
    let catalog = Catalog::new(&root);
    let mut w = catalog
        .writer(
            &table::CANDIDATES,
            "candidates",
            schema::candidates(),
            WriteParams::default(),
        )
        .unwrap();
    for b in &batches {
        w.write(b).await.unwrap();
    }
    let objects = w.finish().await.unwrap();
    let commit = Commit::new("", 1, &serde_json::json!({"pairs": ROWS}))
        .unwrap()
        .with(&table::CANDIDATES, objects);
    catalog
        .commit(CommitSet::CANDIDATES, &commit)
        .await
        .unwrap();
}

async fn child(mode: &str, dir: &str) {
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let rows: usize = match mode {
        "whole" => {
            let root = Location::open(&format!("{dir}/old")).unwrap();
            let path = root.path("candidates/candidates.parquet");
            let bytes = root.get_bytes(&path).await.unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            let all: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
            all.iter().map(|b| b.num_rows()).sum()
        }
        "stream" => {
            let root = Location::open(&format!("{dir}/new")).unwrap();
            let mut s = Catalog::new(&root)
                .scan(&table::CANDIDATES, &[], Generations::All)
                .await
                .unwrap();
            let mut n = 0;
            while let Some(b) = s.try_next().await.unwrap() {
                n += b.num_rows();
            }
            n
        }
        _ => 0,
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "rows": rows,
            "seconds": seconds,
            "rss_before_mib": before as f64 / 1024.0,
            "peak_rss_mib": status_kib("VmHWM:") as f64 / 1024.0,
        })
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(mode) = std::env::var(CHILD) {
        let dir = std::env::var(ROOT).unwrap();
        rt.block_on(child(&mode, &dir));
        return;
    }
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) skips.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(write_both(dir.path()));
    let size = |p: &str| {
        walk(&dir.path().join(p))
            .iter()
            .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    println!(
        "{} rows: old object {:.1} MiB, catalog objects {:.1} MiB",
        ROWS,
        size("old/candidates") as f64 / 1048576.0,
        size("new/candidates") as f64 / 1048576.0
    );
    println!("scan batch rows: {}", io::SCAN_BATCH_ROWS);
    for mode in ["baseline", "whole", "stream"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, mode)
            .env(ROOT, dir.path())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
