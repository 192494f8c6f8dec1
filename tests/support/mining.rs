//! Partitioned mining on vector corpora in `memory://` run roots, through the library: exact
//! mode equals brute force (including pairs placed across cell borders), `--worker` shares add
//! up to one run, a run cut short resumes by cell, and nightly increments give what a full run
//! gives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use blindspot::mine::candidates::{self, CandidateParams, CandidatesSummary};
use blindspot::mine::cells::Layout;
use blindspot::mine::partition::{self, PartitionParams, PartitionSummary};
use blindspot::mine::vectors;
use blindspot::progress::NoProgress;
use blindspot::sift::filter;
use blindspot::storage::Location;
use blindspot::synth::vectors::{VectorKind, VectorParams};
use blindspot::table::{self, io, Catalog, CommitSet, Generations};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

fn corpus(n: usize, kind: VectorKind, prefix: &str, seed: u64) -> VectorParams {
    VectorParams {
        n,
        dim: 32,
        kind,
        shard_rows: 1000,
        seed,
        prefix: prefix.into(),
        ..Default::default()
    }
}

/// Exact placement on random vectors copies widely; these tests want exactness, not speed.
fn exact_layout(cells: usize) -> PartitionParams {
    PartitionParams {
        cells: Some(cells),
        max_copies: 1e9,
        ..Default::default()
    }
}

async fn place(root: &Location, p: &PartitionParams) -> PartitionSummary {
    partition::partition(root, p, Arc::new(NoProgress))
        .await
        .unwrap()
}

async fn mine(root: &Location, worker: Option<(u32, u32)>) -> CandidatesSummary {
    candidates::candidates(
        root,
        &CandidateParams::default(),
        worker,
        None,
        None,
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

/// The candidates table: `(a, b) -> clip_sim`.
async fn table(root: &Location) -> BTreeMap<(String, String), f32> {
    let catalog = Catalog::new(root);
    let mut out = BTreeMap::new();
    let mut s = catalog
        .scan(&table::CANDIDATES, &[], Generations::All)
        .await
        .unwrap();
    while let Some(b) = s.try_next().await.unwrap() {
        let (a, bb, sim) = (
            io::strings(&b, "a").unwrap(),
            io::strings(&b, "b").unwrap(),
            io::floats(&b, "clip_sim").unwrap(),
        );
        for i in 0..b.num_rows() {
            let key = (a.value(i).to_string(), bb.value(i).to_string());
            assert!(key.0 < key.1, "{key:?}");
            assert!(out.insert(key, sim.value(i)).is_none(), "a pair twice");
        }
    }
    out
}

/// Brute force over the root's unique vectors (the double loop, not the tiled kernel).
async fn brute_force(root: &Location) -> BTreeMap<(String, String), f32> {
    let v = vectors::unique_vectors(&Catalog::new(root)).await.unwrap();
    candidates::exact_pairs(&v, 0.95, &NoProgress)
        .into_iter()
        .map(|(i, j, s)| {
            let (a, b) = (v.keys[i as usize].clone(), v.keys[j as usize].clone());
            (if a < b { (a, b) } else { (b, a) }, s)
        })
        .collect()
}

/// Each key's home cell, from the `cells` table (which holds each vector once, at home).
async fn homes(root: &Location) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let catalog = Catalog::new(root);
    let mut s = catalog
        .scan(&table::CELLS, &["key", "cell"], Generations::All)
        .await
        .unwrap();
    while let Some(b) = s.try_next().await.unwrap() {
        let keys = io::strings(&b, "key").unwrap();
        let cell = b
            .column_by_name("cell")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::UInt32Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            let again = out.insert(keys.value(i).to_string(), cell.value(i));
            assert!(again.is_none(), "{} written twice", keys.value(i));
        }
    }
    out
}

/// Checks every generation's `guests` table against its `cells` objects: each run's rows are
/// home rows of its home cell whose guest cells name the run's cell, and the runs cover every
/// (row, guest cell) once. Returns the guest placements covered.
async fn check_guest_runs(root: &Location) -> u64 {
    let catalog = Catalog::new(root);
    let mut placements = 0u64;
    for commit in catalog.commits_of(CommitSet::PARTITION).await.unwrap() {
        // Each object's rows in order: (cell, guest cells).
        let mut objects: Vec<Vec<(u32, Vec<u32>)>> = Vec::new();
        for o in commit.objects(&table::CELLS) {
            let mut rows = Vec::new();
            let mut s = io::scan_objects(root, vec![o.path], &["cell", "guest_cells"], 8192);
            while let Some(b) = s.try_next().await.unwrap() {
                let cell = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt32Array>();
                let lists = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<arrow::array::ListArray>();
                let (cell, lists) = (cell.unwrap(), lists.unwrap());
                for i in 0..b.num_rows() {
                    let l = lists.value(i);
                    let l = l
                        .as_any()
                        .downcast_ref::<arrow::array::UInt32Array>()
                        .unwrap();
                    rows.push((cell.value(i), l.values().to_vec()));
                }
            }
            objects.push(rows);
        }
        let expected: usize = objects.iter().flatten().map(|r| r.1.len()).sum();
        let mut covered = BTreeSet::new();
        let paths = commit
            .objects(&table::GUESTS)
            .into_iter()
            .map(|o| o.path)
            .collect();
        let mut s = io::scan_objects(root, paths, &[], 8192);
        while let Some(b) = s.try_next().await.unwrap() {
            let u32s = |name: &str| {
                let c = b.column_by_name(name).unwrap();
                let c = c
                    .as_any()
                    .downcast_ref::<arrow::array::UInt32Array>()
                    .unwrap();
                c.values().to_vec()
            };
            let (cells, homes, objs, lens) = (
                u32s("cell"),
                u32s("home_cell"),
                u32s("object"),
                u32s("rows"),
            );
            let first = b.column_by_name("first").unwrap();
            let first = first
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap();
            for i in 0..b.num_rows() {
                assert!(lens[i] > 0, "an empty run");
                for row in first.value(i)..first.value(i) + lens[i] as u64 {
                    let (home, guest_of) = &objects[objs[i] as usize][row as usize];
                    assert_eq!(
                        *home, homes[i],
                        "run {i}: row {row} is not homed where it says"
                    );
                    assert!(
                        guest_of.contains(&cells[i]),
                        "run {i}: row {row} is no guest of {}",
                        cells[i]
                    );
                    assert!(
                        covered.insert((objs[i], row, cells[i])),
                        "row {row} listed twice for {}",
                        cells[i]
                    );
                }
            }
        }
        assert_eq!(
            covered.len(),
            expected,
            "every guest placement is in one run"
        );
        placements += expected as u64;
    }
    placements
}

/// Pairs of vectors on the bisector of two centroids, one just on each side, cosine about
/// 0.97: every one of them straddles a cell border. Then near-copies (cosine about 0.97) of the
/// first `pairs` vectors of `old`, so the increment pairs with old vectors too.
async fn border_pairs(root: &Location, layout: &Layout, pairs: usize, old: &[f32]) {
    let c = &layout.centroids;
    let dim = c.ncols();
    let mut rng = blindspot::rng::Rng(77);
    let mut clip = Vec::new();
    for p in 0..pairs {
        let (i, j) = (p % c.nrows(), (p * 7 + 1) % c.nrows());
        let (i, j) = if i == j {
            (i, (j + 1) % c.nrows())
        } else {
            (i, j)
        };
        let mid: Vec<f32> = (0..dim).map(|d| c[[i, d]] + c[[j, d]]).collect();
        let towards: Vec<f32> = (0..dim).map(|d| c[[i, d]] - c[[j, d]]).collect();
        let jitter: Vec<f32> = (0..dim).map(|_| rng.normal() as f32 * 0.01).collect();
        for side in [1.0f32, -1.0] {
            let mut v: Vec<f32> = (0..dim)
                .map(|d| mid[d] + side * 0.12 * towards[d] + jitter[d])
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            clip.extend(v);
        }
    }
    for v in old.chunks_exact(dim).take(pairs) {
        let mut w: Vec<f32> = v.iter().map(|x| x + rng.normal() as f32 * 0.04).collect();
        let n = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        w.iter_mut().for_each(|x| *x /= n);
        clip.extend(w);
    }
    let n = clip.len() / dim;
    blindspot::synth::vectors::write_given(root, "border", &clip, dim, 16)
        .await
        .unwrap_or_else(|e| panic!("{n} border vectors: {e}"));
}

#[tokio::test]
async fn exact_partitioned_mining_equals_brute_force_across_borders_and_increments() {
    // Root A mines a base corpus, then a nightly increment of pairs placed on cell borders.
    let a = Location::open("memory://mining-exact/a").unwrap();
    blindspot::synth::vectors::write(&a, &corpus(3000, VectorKind::Planted, "base", 1))
        .await
        .unwrap();
    let first = place(&a, &exact_layout(12)).await;
    assert!(
        first.trained.is_some() && first.vectors == 3000,
        "{first:?}"
    );
    assert_eq!(check_guest_runs(&a).await, first.guests);
    assert!(
        first.guest_runs > 0 && first.guest_runs <= first.guests,
        "{first:?}"
    );
    // What a filter unit of a cell gathers, estimated from the footers: its home and guest
    // rows' DINOv2 vectors (16-d f16, 32 bytes), pages and all.
    let layout = Layout::open(&Catalog::new(&a)).await.unwrap().unwrap();
    let reader = blindspot::mine::cells::CellReader::open(&a, &layout)
        .await
        .unwrap();
    for cell in 0..12 {
        let rows = layout.block_rows(cell, u64::MAX);
        let bytes = reader.column_bytes(cell as u32, u64::MAX, "dino").unwrap();
        assert!(
            bytes >= rows * 32 && bytes <= rows * 48 + 4096,
            "cell {cell}: {bytes} bytes for {rows} rows"
        );
    }
    let mined = mine(&a, None).await;
    assert_eq!(table(&a).await, brute_force(&a).await);
    assert_eq!(mined.cells.done, mined.cells.total);
    // The reader held one cell at a time: never more than the largest block.
    assert!(
        mined.peak_block_bytes <= first.largest_block * 32 * 4,
        "{mined:?}"
    );
    assert!(mined.peak_block_bytes < 3000 * 32 * 4, "{mined:?}");
    filter::filter(&a, 0.6).await.unwrap();

    let layout = Layout::open(&Catalog::new(&a)).await.unwrap().unwrap();
    let base = blindspot::synth::vectors::generate(&corpus(3000, VectorKind::Planted, "base", 1));
    border_pairs(&a, &layout, 40, &base.clip).await;
    let inc = place(&a, &exact_layout(12)).await;
    assert_eq!(
        (inc.trained.clone(), inc.shards, inc.vectors),
        (None, 1, 120),
        "{inc:?}"
    );
    assert_eq!(check_guest_runs(&a).await, first.guests + inc.guests);
    let again = mine(&a, None).await;
    let after = table(&a).await;
    assert_eq!(
        after,
        brute_force(&a).await,
        "the increment equals brute force"
    );
    // Only pairs involving the new vectors were computed, in new units.
    assert_eq!(again.cells.skipped, mined.cells.total);
    assert!(
        again.pairs >= 40 && again.pairs < after.len() as u64,
        "{again:?}"
    );
    let home = homes(&a).await;
    let straddling = after
        .keys()
        .filter(|(x, y)| x.starts_with("border") && home[x] != home[y])
        .count();
    assert!(
        straddling >= 30,
        "{straddling} border pairs in different cells"
    );
    let f = filter::filter(&a, 0.6).await.unwrap();
    assert!(f.incremental && f.units > 0, "{f:?}");

    // Root B: the same vectors mined in one go give the same candidates and pairs.
    let b = Location::open("memory://mining-exact/b").unwrap();
    blindspot::synth::vectors::write(&b, &corpus(3000, VectorKind::Planted, "base", 1))
        .await
        .unwrap();
    let clip = border_clip(&a).await;
    blindspot::synth::vectors::write_given(&b, "border", &clip, 32, 16)
        .await
        .unwrap();
    place(&b, &exact_layout(12)).await;
    mine(&b, None).await;
    assert_eq!(table(&b).await, after, "incremental vs full");
    filter::filter(&b, 0.6).await.unwrap();
    assert_eq!(
        pairs_of(&b).await,
        pairs_of(&a).await,
        "pairs: incremental vs full"
    );
}

/// The CLIP vectors of the `border` shard of a root.
async fn border_clip(root: &Location) -> Vec<f32> {
    let catalog = Catalog::new(root);
    let mut out = Vec::new();
    for c in catalog
        .commits(&table::EMBEDDINGS, Generations::All)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.unit.starts_with("border"))
    {
        let paths = c
            .objects(&table::EMBEDDINGS)
            .into_iter()
            .map(|o| o.path)
            .collect();
        let mut s = io::scan_objects(root, paths, &["clip"], 8192);
        while let Some(b) = s.try_next().await.unwrap() {
            out.extend(io::vectors_flat(&b, "clip").unwrap().0);
        }
    }
    out
}

async fn pairs_of(root: &Location) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut s = Catalog::new(root)
        .scan(&table::PAIRS, &["a", "b"], Generations::All)
        .await
        .unwrap();
    while let Some(b) = s.try_next().await.unwrap() {
        let (x, y) = (io::strings(&b, "a").unwrap(), io::strings(&b, "b").unwrap());
        for i in 0..b.num_rows() {
            assert!(out.insert((x.value(i).to_string(), y.value(i).to_string())));
        }
    }
    out
}

/// Two `memory://NAME/` roots with the same `n` CLIP-like vectors, partitioned alike into
/// `cells` (probe 2): one for a single run, one for the run under test.
async fn twin_roots(name: &str, n: usize, seed: u64, cells: usize) -> [Location; 2] {
    let params = corpus(n, VectorKind::ClipLike, "v", seed);
    let roots = [
        Location::open(&format!("memory://{name}/one")).unwrap(),
        Location::open(&format!("memory://{name}/other")).unwrap(),
    ];
    for root in &roots {
        blindspot::synth::vectors::write(root, &params)
            .await
            .unwrap();
        place(
            root,
            &PartitionParams {
                cells: Some(cells),
                probe: Some(2),
                ..Default::default()
            },
        )
        .await;
    }
    roots
}

#[tokio::test]
async fn workers_add_up_to_one_run_and_a_cut_run_resumes_by_cell() {
    let [one, three] = twin_roots("mining-workers", 4000, 3, 16).await;
    let whole = mine(&one, None).await;
    let single = table(&one).await;
    assert!(single.len() > 50, "{} pairs", single.len());
    // The recall check reads the cells' raw vectors (each mined row once) and measures what
    // it measures from the embeddings.
    let catalog = Catalog::new(&one);
    let measure = |vectors| blindspot::mine::recall::measure(&catalog, 0.95, 400, vectors);
    let (from_cells, from_embeddings) = (
        measure(&table::CELLS).await.unwrap(),
        measure(&table::EMBEDDINGS).await.unwrap(),
    );
    assert!(from_cells.exact_pairs > 10, "{from_cells:?}");
    assert_eq!(
        (from_cells.sample, from_cells.exact_pairs, from_cells.found),
        (
            from_embeddings.sample,
            from_embeddings.exact_pairs,
            from_embeddings.found
        )
    );
    let mut done = 0;
    for i in 0..3 {
        let s = mine(&three, Some((i, 3))).await;
        assert!(s.cells.total < whole.cells.total, "{s:?}");
        done += s.cells.done;
    }
    assert_eq!(done, whole.cells.total);
    assert_eq!(table(&three).await, single, "worker union vs one run");

    // A run cut short: some cell commits never landed (their objects may have).
    let catalog = Catalog::new(&one);
    let units: Vec<String> = catalog
        .commits_of(CommitSet::CANDIDATES)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.unit)
        .collect();
    for unit in units.iter().step_by(3) {
        one.store
            .delete(&one.path(&format!("_commits/candidates/{unit}.json")))
            .await
            .unwrap();
    }
    let resumed = mine(&one, None).await;
    assert_eq!(resumed.cells.done as usize, units.iter().step_by(3).count());
    assert_eq!(table(&one).await, single, "resumed vs whole");

    // Probe 2 on CLIP-like vectors: recall against brute force is measured and high.
    let r = candidates::candidates(
        &one,
        &CandidateParams::default(),
        None,
        None,
        Some(500),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let recall = r.recall.unwrap();
    assert!(
        recall.exact_pairs > 10 && recall.recall >= 0.95,
        "{recall:?}"
    );
    let exact = brute_force(&one).await;
    assert!(
        single.keys().all(|k| exact.contains_key(k)),
        "no false pairs"
    );

    // New vectors unlike the old ones retrain the centroids (drift) and redo every cell.
    blindspot::synth::vectors::write(&one, &corpus(1000, VectorKind::Planted, "w", 4))
        .await
        .unwrap();
    let p = place(
        &one,
        &PartitionParams {
            cells: Some(16),
            probe: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert!(
        p.trained.as_deref().unwrap_or("").contains("drift"),
        "{p:?}"
    );
    assert_eq!(p.vectors, 5000);
    let redone = mine(&one, None).await;
    assert_eq!(redone.cells.skipped, 0, "{redone:?}");
}

/// Claiming workers on a `memory://` root (conditional puts in-process): one is stopped while
/// it holds a lease (its task aborted, so it stops renewing, as a killed process would); the
/// others take its cell once the lease expires, and the table equals one run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claiming_workers_share_cells_and_take_over_a_dead_ones_lease() {
    use blindspot::lease::{self, ClaimParams};
    let [one, many] = twin_roots("claims", 6000, 5, 24).await;
    let whole = mine(&one, None).await;
    let single = table(&one).await;
    assert!(single.len() > 50, "{} pairs", single.len());

    let claim = |w: &str| ClaimParams {
        worker: Some(w.into()),
        ttl: std::time::Duration::from_secs(2),
    };
    let worker = |root: Location, c: ClaimParams| async move {
        candidates::candidates(
            &root,
            &CandidateParams::default(),
            None,
            Some(&c),
            None,
            Arc::new(NoProgress),
        )
        .await
    };
    let doomed = tokio::spawn(worker(many.clone(), claim("m0")));
    let held = loop {
        let held: Vec<String> = lease::leases(&many, "candidates")
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.worker == "m0")
            .map(|l| l.unit)
            .collect();
        if !held.is_empty() {
            break held;
        }
        assert!(
            !doomed.is_finished(),
            "m0 finished before it could be stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    doomed.abort();
    let _ = doomed.await;
    let catalog = Catalog::new(&many);
    let by_m0 = catalog
        .commits_of(CommitSet::CANDIDATES)
        .await
        .unwrap()
        .len() as u64;
    assert!(by_m0 < whole.cells.total);

    let (a, b) = tokio::join!(
        worker(many.clone(), claim("m1")),
        worker(many.clone(), claim("m2"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.cells.done + b.cells.done + by_m0,
        whole.cells.total,
        "every cell committed once: {a:?} {b:?}"
    );
    assert_eq!(a.cells.discarded + b.cells.discarded, 0);
    for unit in &held {
        assert!(
            catalog
                .commit_of(CommitSet::CANDIDATES, unit)
                .await
                .unwrap()
                .is_some(),
            "the cell m0 held ({unit}) was taken over and committed"
        );
    }
    assert!(lease::leases(&many, "candidates").await.unwrap().is_empty());
    assert_eq!(table(&many).await, single, "claimed union vs one run");
}

/// The candidates table as one line per pair, the similarity as its f32 bits: what "the same
/// table" means to the golden record.
async fn table_lines(root: &Location) -> String {
    table(root)
        .await
        .into_iter()
        .map(|((a, b), s)| format!("{a}\t{b}\t{:08x}\n", s.to_bits()))
        .collect()
}

/// `name pairs blake3` of a root's candidates table.
async fn golden_line(name: &str, root: &Location) -> String {
    let lines = table_lines(root).await;
    let pairs = lines.lines().count();
    assert!(pairs > 0, "{name}: no candidates");
    format!(
        "{name} {pairs} {}\n",
        blake3::hash(lines.as_bytes()).to_hex()
    )
}

#[tokio::test]
async fn candidates_are_bit_identical_to_the_recorded_tables() {
    // Recorded by the layout that wrote guest copies into `cells` (before issue 23 read guests
    // in place): planted vectors placed exactly, CLIP-like and LAION-like vectors at 768-d f16
    // with probe 2, and a root mined, then mined again after an increment.
    let probe = |cells| PartitionParams {
        cells: Some(cells),
        probe: Some(2),
        ..Default::default()
    };
    let real = |n, kind, prefix: &str, seed| VectorParams {
        n,
        kind,
        shard_rows: 1000,
        seed,
        prefix: prefix.into(),
        ..Default::default()
    };
    let mut got = String::new();
    let roots: [(&str, VectorParams, PartitionParams); 3] = [
        (
            "planted",
            corpus(3000, VectorKind::Planted, "p", 1),
            exact_layout(12),
        ),
        (
            "clip-like",
            real(4000, VectorKind::ClipLike, "c", 2),
            probe(16),
        ),
        (
            "laion-like",
            real(4000, VectorKind::LaionLike, "l", 3),
            probe(16),
        ),
    ];
    for (name, vectors, layout) in roots {
        let root = Location::open(&format!("memory://golden-candidates/{name}")).unwrap();
        blindspot::synth::vectors::write(&root, &vectors)
            .await
            .unwrap();
        place(&root, &layout).await;
        mine(&root, None).await;
        got += &golden_line(name, &root).await;
    }
    // The increment: every sixth vector of one CLIP-like corpus arrives a night later.
    let root = Location::open("memory://golden-candidates/increment").unwrap();
    let all = blindspot::synth::vectors::generate(&real(3600, VectorKind::ClipLike, "v", 4));
    let (dim, ddim) = (768, 16);
    let split = |night: bool| -> (Vec<f32>, Vec<f32>) {
        let rows = (0..3600).filter(|i| (i % 6 == 5) == night);
        let (mut clip, mut dino) = (Vec::new(), Vec::new());
        for i in rows {
            clip.extend_from_slice(&all.clip[i * dim..(i + 1) * dim]);
            dino.extend_from_slice(&all.dino[i * ddim..(i + 1) * ddim]);
        }
        (clip, dino)
    };
    let (clip, dino) = split(false);
    blindspot::synth::vectors::write_copies(&root, "base", &clip, &dino, dim, ddim)
        .await
        .unwrap();
    place(&root, &probe(12)).await;
    mine(&root, None).await;
    got += &golden_line("increment-base", &root).await;
    let (clip, dino) = split(true);
    blindspot::synth::vectors::write_copies(&root, "night", &clip, &dino, dim, ddim)
        .await
        .unwrap();
    let inc = place(&root, &probe(12)).await;
    assert_eq!((inc.trained.clone(), inc.vectors), (None, 600), "{inc:?}");
    mine(&root, None).await;
    got += &golden_line("increment", &root).await;
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/candidates.txt");
    if std::env::var_os("BLINDSPOT_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/candidates.txt (BLINDSPOT_BLESS=1 writes it)");
    assert_eq!(got, want, "the candidates tables changed");
}

/// The first partition commit of a root.
async fn partition_commit(root: &Location) -> blindspot::table::Commit {
    let catalog = Catalog::new(root);
    catalog
        .commits_of(CommitSet::PARTITION)
        .await
        .unwrap()
        .remove(0)
}

/// Replaces a root's `guests` object with `runs` and returns what `candidates` says.
async fn candidates_with_runs(root: &Location, runs: &[[u64; 5]]) -> String {
    let path = partition_commit(root)
        .await
        .objects(&table::GUESTS)
        .remove(0)
        .path;
    let schema = blindspot::mine::cells::guests_schema();
    let u32s = |i: usize| {
        let values: Vec<u32> = runs.iter().map(|r| r[i] as u32).collect();
        Arc::new(arrow::array::UInt32Array::from(values)) as _
    };
    let firsts: Vec<u64> = runs.iter().map(|r| r[3]).collect();
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            u32s(0),
            u32s(1),
            u32s(2),
            Arc::new(arrow::array::UInt64Array::from(firsts)),
            u32s(4),
        ],
    )
    .unwrap();
    let base = path.trim_end_matches(".parquet");
    io::write_batches(root, base, &schema, &[batch])
        .await
        .unwrap();
    let params = CandidateParams::default();
    let err = candidates::candidates(root, &params, None, None, None, Arc::new(NoProgress))
        .await
        .unwrap_err();
    err.to_string()
}

#[tokio::test]
async fn a_guests_table_that_lies_is_an_error_naming_the_object() {
    // A run past the end of its object, and a run naming a row that is no guest of its cell:
    // both stop the cell with a message naming what is damaged, before the cell's pairs.
    let params = corpus(2000, VectorKind::ClipLike, "v", 9);
    let layout = PartitionParams {
        cells: Some(8),
        probe: Some(2),
        ..Default::default()
    };
    let root = Location::open("memory://guests-lie/past-the-end").unwrap();
    blindspot::synth::vectors::write(&root, &params)
        .await
        .unwrap();
    place(&root, &layout).await;
    for first in [1 << 40, u64::MAX - 1] {
        let err = candidates_with_runs(&root, &[[0, 1, 0, first, 3]]).await;
        assert!(
            err.contains("guests") && err.contains("does not have") && err.contains("--retrain"),
            "{err}"
        );
    }
    let err = candidates_with_runs(&root, &[[0, 1, 0, 10, 4], [0, 1, 0, 12, 4]]).await;
    assert!(err.contains("overlap") && err.contains("10..+4"), "{err}");

    let root = Location::open("memory://guests-lie/not-a-guest").unwrap();
    blindspot::synth::vectors::write(&root, &params)
        .await
        .unwrap();
    place(&root, &layout).await;
    // Row 0 of the first cells object: its home, and a cell it is no guest of.
    let first = partition_commit(&root)
        .await
        .objects(&table::CELLS)
        .remove(0)
        .path;
    let mut s = io::scan_objects(&root, vec![first.clone()], &["cell", "guest_cells"], 1);
    let b = s.try_next().await.unwrap().unwrap();
    let home = b
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::UInt32Array>()
        .unwrap()
        .value(0);
    let lists = b
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap();
    let l = lists.value(0);
    let guest_of = l
        .as_any()
        .downcast_ref::<arrow::array::UInt32Array>()
        .unwrap();
    let other = (0..8u32)
        .find(|c| *c != home && !guest_of.values().contains(c))
        .unwrap();
    let err = candidates_with_runs(&root, &[[other as u64, home as u64, 0, 0, 1]]).await;
    assert!(
        err.contains(&first) && err.contains("not where the layout puts it"),
        "{err}"
    );
    assert!(
        err.contains(&format!("a guest of cell {other} homed in {home}")),
        "{err}"
    );
}

/// Every row of a root's `guests` table, in table order.
async fn guest_rows(root: &Location) -> Vec<(u32, u32, u32, u64, u32)> {
    let mut out = Vec::new();
    let mut s = Catalog::new(root)
        .scan(&table::GUESTS, &[], Generations::All)
        .await
        .unwrap();
    while let Some(b) = s.try_next().await.unwrap() {
        let u = |i: usize| {
            let c = b
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::UInt32Array>();
            c.unwrap().values().to_vec()
        };
        let first = b
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::UInt64Array>();
        let (cells, homes, objects, rows) = (u(0), u(1), u(2), u(4));
        for i in 0..b.num_rows() {
            out.push((
                cells[i],
                homes[i],
                objects[i],
                first.unwrap().value(i),
                rows[i],
            ));
        }
    }
    out
}

#[tokio::test]
async fn guest_runs_spilled_and_sorted_on_disk_are_the_runs_held_in_memory() {
    // Root A holds its runs in memory; root B spills them every 7 runs and sorts them with
    // DataFusion. A killed run's scratch object is cleared first.
    let params = corpus(3000, VectorKind::ClipLike, "v", 11);
    let layout = |runs_held| PartitionParams {
        cells: Some(12),
        probe: Some(2),
        runs_held,
        ..Default::default()
    };
    let a = Location::open("memory://guest-runs/held").unwrap();
    let b = Location::open("memory://guest-runs/spilled").unwrap();
    for root in [&a, &b] {
        blindspot::synth::vectors::write(root, &params)
            .await
            .unwrap();
    }
    let left = "_tmp/partition/g0000000009/runs.parquet";
    b.store
        .put(
            &b.path(left),
            bytes::Bytes::from_static(b"cut short").into(),
        )
        .await
        .unwrap();
    let held = place(&a, &layout(PartitionParams::default().runs_held)).await;
    let spilled = place(&b, &layout(7)).await;
    assert!(held.guest_runs > 100, "{held:?}");
    assert_eq!(held.guest_runs, spilled.guest_runs);
    let rows = guest_rows(&a).await;
    assert_eq!(rows.len() as u64, held.guest_runs);
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "sorted, no run twice");
    assert_eq!(guest_rows(&b).await, rows);
    assert_eq!(check_guest_runs(&b).await, spilled.guests);
    assert!(
        b.list("_tmp/partition").await.unwrap().is_empty(),
        "scratch deleted"
    );
    mine(&a, None).await;
    mine(&b, None).await;
    assert_eq!(table(&a).await, table(&b).await);
}

/// Row groups of a root's `cells` objects.
async fn cell_row_groups(root: &Location) -> usize {
    let mut groups = 0;
    for o in partition_commit(root).await.objects(&table::CELLS) {
        let footer = io::object_metadata(root, &o.path).await.unwrap();
        groups += footer.metadata().num_row_groups();
    }
    groups
}

#[tokio::test]
async fn rows_sorted_by_cell_on_disk_make_one_row_group_a_cell() {
    // A buffer too small to gather 64 rows of each cell (as 256 MiB is for the 45,000 cells
    // of two billion vectors): the rows are spilled, sorted by cell with DataFusion and
    // written a cell at a time. Flushing the fullest cell instead writes many small groups.
    // Both mine what the roomy buffer mines.
    let params = corpus(3000, VectorKind::ClipLike, "v", 13);
    let layout = |buffer_bytes, min_group_rows| PartitionParams {
        cells: Some(12),
        probe: Some(2),
        buffer_bytes,
        min_group_rows,
        ..Default::default()
    };
    let roomy = Location::open("memory://by-cell/roomy").unwrap();
    let sorted = Location::open("memory://by-cell/sorted").unwrap();
    let flushed = Location::open("memory://by-cell/flushed").unwrap();
    for root in [&roomy, &sorted, &flushed] {
        blindspot::synth::vectors::write(root, &params)
            .await
            .unwrap();
    }
    let defaults = PartitionParams::default();
    let r = place(
        &roomy,
        &layout(defaults.buffer_bytes, defaults.min_group_rows),
    )
    .await;
    let s = place(&sorted, &layout(32 << 10, defaults.min_group_rows)).await;
    place(&flushed, &layout(32 << 10, 0)).await;
    let cells = Layout::open(&Catalog::new(&sorted)).await.unwrap().unwrap();
    let occupied = (0..12)
        .filter(|&c| cells.latest().cell_rows[c][0] > 0)
        .count();
    assert_eq!(cell_row_groups(&roomy).await, occupied);
    assert_eq!(
        cell_row_groups(&sorted).await,
        occupied,
        "one row group a cell"
    );
    let small = cell_row_groups(&flushed).await;
    assert!(
        small > 2 * occupied,
        "small groups when flushed: {small} for {occupied} cells"
    );
    assert_eq!((s.vectors, s.guests), (r.vectors, r.guests));
    assert_eq!(check_guest_runs(&sorted).await, s.guests);
    assert!(
        sorted.list("_tmp/partition").await.unwrap().is_empty(),
        "scratch deleted"
    );
    for root in [&roomy, &sorted, &flushed] {
        mine(root, None).await;
    }
    let pairs = table(&roomy).await;
    assert!(pairs.len() > 20, "{} pairs", pairs.len());
    assert_eq!(table(&sorted).await, pairs);
    assert_eq!(table(&flushed).await, pairs);
}
