//! A large `candidates` table for memory measurements, shared by `tests/cli.rs` and
//! `benches/tables.rs`: synthetic pairs written and committed through the catalog, and the
//! process's own memory figures.

use std::sync::Arc;

use arrow::array::{Float32Array, RecordBatch, StringArray};
use blindspot::storage::Location;
use blindspot::table::{self, schema, Catalog, Commit, CommitSet, WriteParams};

/// Batches of `rows` candidate pairs, keys shaped like img2dataset's (`00042/000421337`),
/// sorted by `a` as the stage writes them.
pub fn candidate_batches(rows: usize) -> Vec<RecordBatch> {
    let key = |i: usize| format!("{:05}/{:09}", i / 10_000, i);
    (0..rows)
        .step_by(64 * 1024)
        .map(|start| {
            let end = (start + 64 * 1024).min(rows);
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

/// Writes `batches` as the `candidates` table of `root` and commits them.
pub async fn commit_candidates(root: &Location, batches: &[RecordBatch]) {
    let catalog = Catalog::new(root);
    let mut w = catalog
        .writer(
            &table::CANDIDATES,
            "candidates",
            schema::candidates(),
            WriteParams::default(),
        )
        .unwrap();
    for b in batches {
        w.write(b).await.unwrap();
    }
    let objects = w.finish().await.unwrap();
    let commit = Commit::new("", 1, &serde_json::json!({}))
        .unwrap()
        .with(&table::CANDIDATES, objects);
    catalog
        .commit(CommitSet::CANDIDATES, &commit)
        .await
        .unwrap();
}

/// A `/proc/self/status` figure in KiB (`VmRSS:` now, `VmHWM:` the peak).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
