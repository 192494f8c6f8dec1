//! Issue 19: the filter works unit by unit, in memory bounded by a unit, and gives exactly what
//! the single global `sql/pairs.sql` query gives over the whole run root: on planted roots with
//! DINOv2 vectors of the real dimension (1024, f16), after an increment, at another threshold,
//! and when workers share the units.

use std::sync::Arc;

use blindspot::mine::candidates::{self, CandidateParams};
use blindspot::mine::partition::{self, PartitionParams};
use blindspot::progress::NoProgress;
use blindspot::sift::filter::{self, FilterParams, FilterSummary};
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

/// The filter's unit-of-work budget in these tests: small, so that cells are gathered into
/// several units of work.
const WORK_BYTES: u64 = 8 << 20;

async fn filter_as(root: &Location, dino_max: f32, worker: Option<(u32, u32)>) -> FilterSummary {
    filter_in(root, dino_max, worker, WORK_BYTES).await
}

/// The filter with units of work of `work_bytes` (0: every candidates unit alone).
async fn filter_in(
    root: &Location,
    dino_max: f32,
    worker: Option<(u32, u32)>,
    work_bytes: u64,
) -> FilterSummary {
    let params = FilterParams {
        dino_max,
        worker,
        dup_min: dino_max.max(filter::DEFAULT_DUP_MIN),
        work_bytes,
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
    // The largest unit of work is a few units, not the table.
    assert!(first.largest_unit < first.candidate_rows, "{first:?}");
    assert!(1 < first.work && first.work < first.units, "{first:?}");

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

/// Units of work are planned afresh by each run: half the units filtered one by one, then the
/// rest gathered into a single unit of work, give the table of one run, no pair twice.
#[tokio::test]
async fn units_of_work_of_any_size_write_the_same_table() {
    let root = mined("budgets").await;
    let half = filter_in(&root, 0.6, Some((0, 2)), 0).await;
    assert_eq!(half.work, half.units, "{half:?}");
    let rest = filter_in(&root, 0.6, None, u64::MAX).await;
    assert_eq!((rest.skipped, rest.work), (half.units, 1), "{rest:?}");
    assert_eq!(half.units + rest.units, rest.units_total);
    assert_eq!(table(&root).await, global(&root, 0.6).await);
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
    let record: candidates::RecallCommit = record.record().unwrap();
    assert_eq!(record.probe, Some(probe));
    assert_eq!(record.recall.found, recall.found);
    // A later run without --probe keeps the chosen probe (no retraining).
    let again = partition::partition(&root, &PartitionParams::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(again.generation.is_none(), "{again:?}");
    // The report shows the recall that candidates measured.
    filter_as(&root, 0.6, None).await;
    let out = Location::open("memory://filter-units/clip-like-report").unwrap();
    let params = blindspot::report::ReportParams {
        thumbnails: 0,
        ..Default::default()
    };
    blindspot::report::report(&root, &out, &params, &NoProgress)
        .await
        .unwrap();
    let page = String::from_utf8(
        out.get_bytes(&out.path("thresholds.html"))
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let shown = format!("<b>{:.5}</b>", recall.recall);
    assert!(
        page.contains("id=\"recall\"") && page.contains(&shown),
        "{page}"
    );
    assert!(page.contains(&format!("probe {probe} chosen by partition")));
}

/// A small union-find of its own, over strings: the reference the `groups` table is checked
/// against.
#[derive(Default)]
struct Reference {
    parent: std::collections::HashMap<String, String>,
}

impl Reference {
    fn find(&mut self, k: &str) -> String {
        let p = self
            .parent
            .entry(k.to_string())
            .or_insert_with(|| k.to_string())
            .clone();
        if p == k {
            return p;
        }
        let r = self.find(&p);
        self.parent.insert(k.to_string(), r.clone());
        r
    }

    fn union(&mut self, a: &str, b: &str) {
        let (x, y) = (self.find(a), self.find(b));
        if x != y {
            let (lo, hi) = if x < y { (x, y) } else { (y, x) };
            self.parent.insert(hi, lo);
        }
    }

    /// Members by group, each group sorted, groups sorted.
    fn groups(mut self) -> Vec<Vec<String>> {
        let keys: Vec<String> = self.parent.keys().cloned().collect();
        let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for k in keys {
            let r = self.find(&k);
            by.entry(r).or_default().push(k);
        }
        let mut out: Vec<Vec<String>> = by
            .into_values()
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        out.sort();
        out
    }
}

async fn collect(root: &Location, query: &str) -> Vec<arrow::array::RecordBatch> {
    let (ctx, _) = blindspot::sql::session(root).await.unwrap();
    ctx.sql(query).await.unwrap().collect().await.unwrap()
}

/// A string column of a query result (the report's reader, nulls refused).
fn strings_of(b: &arrow::array::RecordBatch, c: &str) -> Vec<String> {
    blindspot::report::data::strs(b, c)
        .unwrap()
        .into_iter()
        .map(|s| s.expect("no nulls"))
        .collect()
}

/// An integer column of a query result (the report's reader).
fn ints_of(b: &arrow::array::RecordBatch, c: &str) -> Vec<Option<i64>> {
    blindspot::report::data::i64s(b, c).unwrap()
}

/// The `groups` table as the reference's shape, checking sizes and representatives.
async fn groups_table(root: &Location) -> Vec<Vec<String>> {
    let mut by: std::collections::BTreeMap<i64, Vec<(String, i64, String)>> = Default::default();
    for b in collect(
        root,
        "SELECT key, \"group\", size, representative FROM groups",
    )
    .await
    {
        let (k, g, s, r) = (
            strings_of(&b, "key"),
            ints_of(&b, "group"),
            ints_of(&b, "size"),
            strings_of(&b, "representative"),
        );
        for i in 0..b.num_rows() {
            by.entry(g[i].unwrap())
                .or_default()
                .push((k[i].clone(), s[i].unwrap(), r[i].clone()));
        }
    }
    let mut out = Vec::new();
    let mut last_size = i64::MAX;
    for (g, members) in by {
        let mut keys: Vec<String> = members.iter().map(|m| m.0.clone()).collect();
        keys.sort();
        for (_, size, rep) in &members {
            assert_eq!(*size as usize, keys.len(), "group {g}: size");
            assert_eq!(rep, &keys[0], "group {g}: representative");
        }
        assert!(
            keys.len() as i64 <= last_size,
            "group {g}: groups are numbered largest first"
        );
        last_size = keys.len() as i64;
        out.push(keys);
    }
    out.sort();
    out
}

/// The reference groups: union-find over every candidate at or above `dup_min` in DINOv2
/// similarity, from the global `similarities` view.
async fn reference_groups(root: &Location, dup_min: f32) -> Vec<Vec<String>> {
    let mut uf = Reference::default();
    let q = format!("SELECT a, b FROM similarities WHERE dino_sim >= {dup_min:?}");
    for b in collect(root, &q).await {
        let (a, bb) = (strings_of(&b, "a"), strings_of(&b, "b"));
        for i in 0..b.num_rows() {
            uf.union(&a[i], &bb[i]);
        }
    }
    uf.groups()
}

/// Issue 19: the near-duplicate groups equal a union-find computed independently over every
/// candidate, on a laion-like corpus whose groups span cells, and again after copies of old
/// images arrive in a later generation; `group_pairs` counts member pairs exactly.
#[tokio::test]
async fn groups_equal_an_independent_union_find_across_cells_and_generations() {
    let root = Location::open("memory://filter-units/groups").unwrap();
    let params = VectorParams {
        n: 4000,
        dim: 32,
        dino_dim: 64,
        kind: VectorKind::LaionLike,
        shard_rows: 2000,
        seed: 3,
        prefix: "base".into(),
        max_group: 200,
        ..Default::default()
    };
    blindspot::synth::vectors::write(&root, &params)
        .await
        .unwrap();
    partition::partition(&root, &layout(), Arc::new(NoProgress))
        .await
        .unwrap();
    mine(&root).await;
    let first = filter_in(&root, 0.6, None, 0).await;
    let g = first.groups.clone().expect("groups after every unit");
    let groups = groups_table(&root).await;
    assert_eq!(groups, reference_groups(&root, 0.9).await);
    assert!(g.largest >= 100 && g.groups >= 5, "{g:?}");
    assert_eq!(
        g.grouped as usize,
        groups.iter().map(Vec::len).sum::<usize>()
    );
    // Some group's edges come from more than one unit: the groups span cells.
    let mut units_of: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for c in Catalog::new(&root)
        .commits_of(table::CommitSet::FILTER)
        .await
        .unwrap()
    {
        let paths = c
            .objects(&table::DUP_EDGES)
            .into_iter()
            .map(|o| o.path)
            .collect();
        let batches: Vec<_> = io::scan_objects(&root, paths, &["a"], 1 << 16)
            .try_collect()
            .await
            .unwrap();
        for b in &batches {
            for k in strings_of(b, "a") {
                units_of.entry(k).or_default().insert(c.unit.clone());
            }
        }
    }
    let spanning = groups.iter().any(|members| {
        let units: std::collections::HashSet<&String> = members
            .iter()
            .flat_map(|k| units_of.get(k).into_iter().flatten())
            .collect();
        units.len() > 1
    });
    assert!(spanning, "no group spans two cells");

    // A later generation: exact copies of 150 old images (CLIP and DINOv2), which join the
    // old groups and tie some singletons into new ones.
    let old = blindspot::synth::vectors::generate(&params);
    let pick: Vec<usize> = (0..150).map(|i| i * 26).collect();
    let clip: Vec<f32> = pick
        .iter()
        .flat_map(|i| old.clip[i * 32..(i + 1) * 32].to_vec())
        .collect();
    let dino: Vec<f32> = pick
        .iter()
        .flat_map(|i| old.dino[i * 64..(i + 1) * 64].to_vec())
        .collect();
    blindspot::synth::vectors::write_copies(&root, "later", &clip, &dino, 32, 64)
        .await
        .unwrap();
    partition::partition(&root, &layout(), Arc::new(NoProgress))
        .await
        .unwrap();
    mine(&root).await;
    let inc = filter_in(&root, 0.6, None, 0).await;
    assert!(inc.incremental, "{inc:?}");
    let after = groups_table(&root).await;
    assert_eq!(
        after,
        reference_groups(&root, 0.9).await,
        "after the increment"
    );
    assert!(
        after
            .iter()
            .any(|m| m.iter().any(|k| k.starts_with("later"))
                && m.iter().any(|k| k.starts_with("base"))),
        "no group spans the two generations"
    );
    let inc_groups = inc.groups.unwrap();
    assert!(inc_groups.grouped > g.grouped);

    // group_pairs: one row per pair of groups, counting member pairs exactly.
    let mut group_of: std::collections::HashMap<String, i64> = Default::default();
    for b in collect(&root, "SELECT key, \"group\" FROM groups").await {
        let (k, g) = (strings_of(&b, "key"), ints_of(&b, "group"));
        for i in 0..b.num_rows() {
            group_of.insert(k[i].clone(), g[i].unwrap());
        }
    }
    let side = |k: &str| match group_of.get(k) {
        Some(g) => format!("g{g}"),
        None => format!("k{k}"),
    };
    let mut want: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut n_pairs = 0u64;
    for b in collect(&root, "SELECT a, b FROM pairs").await {
        let (a, bb) = (strings_of(&b, "a"), strings_of(&b, "b"));
        for i in 0..b.num_rows() {
            let (x, y) = (side(&a[i]), side(&bb[i]));
            *want
                .entry((x.clone().min(y.clone()), x.max(y)))
                .or_default() += 1;
            n_pairs += 1;
        }
    }
    let mut got: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for b in collect(
        &root,
        "SELECT a, b, a_group, b_group, member_pairs FROM group_pairs",
    )
    .await
    {
        let (a, bb) = (strings_of(&b, "a"), strings_of(&b, "b"));
        let (ga, gb, n) = (
            ints_of(&b, "a_group"),
            ints_of(&b, "b_group"),
            ints_of(&b, "member_pairs"),
        );
        for i in 0..b.num_rows() {
            assert_eq!(ga[i], group_of.get(&a[i]).copied());
            assert_eq!(gb[i], group_of.get(&bb[i]).copied());
            let (x, y) = (side(&a[i]), side(&bb[i]));
            let before = got.insert((x.clone().min(y.clone()), x.max(y)), n[i].unwrap() as u64);
            assert!(before.is_none(), "one row per pair of groups");
        }
    }
    assert_eq!(got, want);
    assert!(
        got.len() < n_pairs as usize,
        "groups collapse some pairs: {} of {n_pairs}",
        got.len()
    );

    // The report's gallery: a card per pair of groups by default, per pair with every_pair.
    for every_pair in [false, true] {
        let out =
            Location::open(&format!("memory://filter-units/groups-report-{every_pair}")).unwrap();
        let params = blindspot::report::ReportParams {
            thumbnails: 0,
            every_pair,
            ..Default::default()
        };
        let s = blindspot::report::report(&root, &out, &params, &NoProgress)
            .await
            .unwrap();
        assert_eq!((s.pairs, s.group_pairs), (n_pairs, got.len() as u64));
        let rows = if every_pair {
            n_pairs
        } else {
            got.len() as u64
        };
        assert_eq!(s.shown, rows, "every_pair {every_pair}");
        assert_eq!(s.groups as u64, inc_groups.groups);
    }
}
