//! Issue 19: the filter works unit by unit, in memory bounded by a unit, and gives exactly what
//! the single global `sql/pairs.sql` query gives over the whole run root: on planted roots with
//! DINOv2 vectors of the real dimension (1024, f16), after an increment, at another threshold,
//! and when workers share the units.

use std::sync::Arc;

use blindspot::mine::candidates::{self, CandidateParams};
use blindspot::mine::filter::{self, FilterParams, FilterSummary};
use blindspot::mine::partition::{self, PartitionParams};
use blindspot::progress::NoProgress;
use blindspot::storage::Location;
use blindspot::synth::vectors::{VectorKind, VectorParams};
use blindspot::table::{self, io, Catalog, Generations};
use datafusion::common::ScalarValue;
use futures::TryStreamExt;

/// A pairs row with its similarities as bits: equal rows are equal bit for bit.
type Row = (String, String, String, String, u32, u32);

fn rows_of(batches: &[arrow::array::RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let s = |c| io::strings(b, c).unwrap();
        let (a, bb, au, bu) = (s("a"), s("b"), s("a_uri"), s("b_uri"));
        let (clip, dino) = (
            io::floats(b, "clip_sim").unwrap(),
            io::floats(b, "dino_sim").unwrap(),
        );
        for i in 0..b.num_rows() {
            out.push((
                a.value(i).to_string(),
                bb.value(i).to_string(),
                au.value(i).to_string(),
                bu.value(i).to_string(),
                clip.value(i).to_bits(),
                dino.value(i).to_bits(),
            ));
        }
    }
    out.sort();
    out
}

/// `sql/pairs.sql` once over the whole root (every candidate, every DINOv2 vector).
async fn global(root: &Location, dino_max: f32) -> Vec<Row> {
    let (ctx, _) = blindspot::sql::session(root).await.unwrap();
    let batches = ctx
        .sql(blindspot::sql::queries::PAIRS)
        .await
        .unwrap()
        .with_param_values(vec![
            ScalarValue::Float32(Some(dino_max)),
            ScalarValue::Utf8(Some("global".into())),
        ])
        .unwrap()
        .collect()
        .await
        .unwrap();
    rows_of(&batches)
}

/// The committed `pairs` table.
async fn table(root: &Location) -> Vec<Row> {
    let batches: Vec<_> = Catalog::new(root)
        .scan(&table::PAIRS, &[], Generations::All)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    rows_of(&batches)
}

fn corpus(prefix: &str, n: usize, seed: u64) -> VectorParams {
    VectorParams {
        n,
        dim: 32,
        dino_dim: 1024,
        kind: VectorKind::Planted,
        shard_rows: 1000,
        seed,
        prefix: prefix.into(),
        ..Default::default()
    }
}

/// Exact placement, whatever it costs: these tests want every pair. Random vectors "drift"
/// from any centroids; keep them.
fn layout() -> PartitionParams {
    PartitionParams {
        cells: Some(12),
        max_copies: 1e9,
        drift_max: 2.0,
        ..Default::default()
    }
}

async fn mined(name: &str) -> Location {
    let root = Location::open(&format!("memory://filter-units/{name}")).unwrap();
    blindspot::synth::vectors::write(&root, &corpus("base", 3000, 5))
        .await
        .unwrap();
    partition::partition(&root, &layout(), Arc::new(NoProgress))
        .await
        .unwrap();
    mine(&root).await;
    root
}

async fn mine(root: &Location) {
    candidates::candidates(
        root,
        &CandidateParams::default(),
        None,
        None,
        None,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
}

async fn filter_as(root: &Location, dino_max: f32, worker: Option<(u32, u32)>) -> FilterSummary {
    let params = FilterParams {
        dino_max,
        worker,
        ..Default::default()
    };
    filter::filter_with(root, &params, Arc::new(NoProgress))
        .await
        .unwrap()
}

#[tokio::test]
async fn per_unit_filter_equals_the_global_query_through_increments_and_thresholds() {
    let root = mined("a").await;
    let first = filter_as(&root, 0.6, None).await;
    let pairs = table(&root).await;
    assert_eq!(pairs, global(&root, 0.6).await);
    assert!(pairs.len() > 20, "{first:?}");
    assert_eq!(first.pairs, pairs.len() as u64);
    assert_eq!(first.units, first.units_total);
    assert!(first.units > 1 && !first.incremental, "{first:?}");
    // Every vector came from its cell's own row groups: nothing scanned, nothing missing.
    assert_eq!((first.scanned_units, first.missing_vectors), (0, 0));
    // The largest unit is a unit, not the table.
    assert!(first.largest_unit < first.candidate_rows, "{first:?}");

    // An increment: near-copies of old vectors in a new shard, placed on the same cells.
    let old = blindspot::synth::vectors::generate(&corpus("base", 3000, 5));
    let copies: Vec<f32> = old.clip[..32 * 200].to_vec();
    blindspot::synth::vectors::write_given(&root, "later", &copies, 32, 1024)
        .await
        .unwrap();
    let placed = partition::partition(&root, &layout(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(placed.trained.is_none(), "{placed:?}");
    mine(&root).await;
    let inc = filter_as(&root, 0.6, None).await;
    assert!(inc.incremental && inc.units > 0, "{inc:?}");
    assert_eq!(inc.skipped, first.units);
    let after = table(&root).await;
    assert!(after.len() > pairs.len() + 50, "{inc:?}");
    assert_eq!(after, global(&root, 0.6).await, "after the increment");

    // Nothing new: up to date. Another threshold: a new table, every unit again.
    let again = filter_as(&root, 0.6, None).await;
    assert_eq!((again.units, again.skipped), (0, inc.units_total));
    let loose = filter_as(&root, 0.95, None).await;
    assert!(
        !loose.incremental && loose.units == loose.units_total,
        "{loose:?}"
    );
    let wide = table(&root).await;
    assert!(wide.len() >= after.len());
    assert_eq!(wide, global(&root, 0.95).await, "at dino-max 0.95");
}

#[tokio::test]
async fn filter_workers_shares_add_up_to_one_run() {
    let one = mined("one").await;
    let three = mined("three").await;
    let whole = filter_as(&one, 0.6, None).await;
    let mut units = 0;
    let mut pairs = 0;
    for w in 0..3 {
        let s = filter_as(&three, 0.6, Some((w, 3))).await;
        assert_eq!(s.skipped, 0, "worker {w}: {s:?}");
        units += s.units;
        pairs += s.pairs;
    }
    assert_eq!(units, whole.units);
    assert_eq!(pairs, whole.pairs);
    // The same rows (run ids aside), none twice.
    assert_eq!(table(&three).await, table(&one).await);
    // A fourth worker finds every unit done.
    let late = filter_as(&three, 0.6, None).await;
    assert_eq!((late.units, late.skipped), (0, whole.units));
}

/// Issue 19: on CLIP-like vectors exact placement would copy each vector into a third of the
/// cells; the default partition does not refuse, it chooses probes for the target recall, says
/// so, records it, and `candidates` measures the recall after the join and records it too.
#[tokio::test]
async fn the_default_partition_on_clip_like_vectors_chooses_probes_and_meets_its_recall() {
    let root = Location::open("memory://filter-units/clip-like").unwrap();
    let params = VectorParams {
        n: 20_000,
        dim: 64,
        kind: VectorKind::ClipLike,
        shard_rows: 5_000,
        seed: 11,
        ..Default::default()
    };
    blindspot::synth::vectors::write(&root, &params)
        .await
        .unwrap();
    // --exact refuses, naming the way out.
    let exact = PartitionParams {
        exact: true,
        ..Default::default()
    };
    let err = partition::partition(&root, &exact, Arc::new(NoProgress))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Drop --exact"), "{err}");
    let placed = partition::partition(&root, &PartitionParams::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let probe = placed.probe.expect("probes chosen");
    assert_eq!(placed.auto_probe, Some(0.999));
    let estimated = placed.estimated_recall.unwrap();
    assert!(estimated >= 0.999, "{placed:?}");
    assert!(placed.copy_factor < 1.0 + probe as f64, "{placed:?}");
    let mined = candidates::candidates(
        &root,
        &CandidateParams::default(),
        None,
        None,
        None,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let recall = mined.recall.expect("measured after the join by default");
    assert!(recall.exact_pairs > 100, "{recall:?}");
    assert!(recall.recall >= 0.995, "{recall:?} with probe {probe}");
    let record = Catalog::new(&root)
        .commit_of(blindspot::table::CommitSet::RECALL, "")
        .await
        .unwrap()
        .expect("the recall commit");
    let record: candidates::RecallCommit = record.info().unwrap();
    assert_eq!(record.probe, Some(probe));
    assert_eq!(record.recall.found, recall.found);
    // A later run without --probe keeps the chosen probe (no retraining).
    let again = partition::partition(&root, &PartitionParams::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(again.generation.is_none(), "{again:?}");
}
