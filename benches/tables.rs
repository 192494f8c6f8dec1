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
use std::time::Instant;

use arrow::array::RecordBatch;
use big_table::status_kib;
use blindspot::storage::Location;
use blindspot::table::{self, io, schema, Catalog, Generations};
use futures::TryStreamExt;

#[path = "../tests/support/big_table.rs"]
mod big_table;

const ROWS: usize = 2_000_000;
const CHILD: &str = "BLINDSPOT_TABLES_BENCH_MODE";
const ROOT: &str = "BLINDSPOT_TABLES_BENCH_ROOT";

async fn write_both(dir: &std::path::Path) {
    let batches = big_table::candidate_batches(ROWS);
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
    big_table::commit_candidates(&root, &batches).await;
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
