//! The filter stage: DataFusion runs `sql/pairs.sql` over each candidates unit on its own,
//! keeping the pairs whose DINOv2 similarity is below the threshold, and commits that unit's
//! `pairs` by itself.
//!
//! A unit is one candidates commit (a mining cell of one partition generation, or the whole
//! table of `--method index|exact`). Its filter reads the unit's candidates and only the
//! DINOv2 vectors of the keys they name, registers both as the tables `candidates` and
//! `dino_vectors` of a session, and runs the query there (on a Ballista cluster with
//! `--cluster`). The vectors are local to a cell: `partition` copies each row's uri and DINOv2
//! vector into the cell's row groups beside its CLIP vector, so the filter of a cell reads them
//! with range reads of those groups, keeping only the keys its candidates name. Where a cell
//! has none (shards embedded with CLIP only, whose vectors `blindspot dino` wrote later, or
//! cells placed before the layout carried them), the unit scans the vector tables for its keys
//! instead: bounded memory still, but a read of every vector per such unit. Memory is bounded
//! by the largest unit, never by the number of candidates or images.
//!
//! Units commit one by one, so a killed run resumes with the units not committed, `--worker
//! i/N` takes every N-th unit and `--claim` leases units to any number of workers. A filter
//! commit names the candidates unit it covers (`unit@generation`) and its threshold; commits of
//! another threshold, or of candidates units that are gone, are withdrawn when a run starts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::channel::mpsc::Receiver;
use futures::SinkExt;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::aggregates::UnitAggregates;
use crate::cluster;
use crate::error::{Error, Result};
use crate::lease::ClaimParams;
use crate::mine::cells::{CellReader, Layout, UnitCell};
use crate::progress::{Every, NoProgress, Progress};
use crate::sql;
use crate::stage::Stage;
use crate::storage::Location;
pub use crate::table::records::FilterCommit;
use crate::table::records::UnitId;
use crate::table::{self, io, Catalog, Commit, CommitSet, DataObject, WriteParams};
use crate::units::{self, Outcome, Runner, Sharing};

/// A progress line at most this often while units are filtered.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Settings of the filter stage: a spec's `[filter]` section and the flags of `blindspot
/// filter` (one shape, one check). How workers share units (`worker`, `claim`) is the command
/// line's alone.
#[derive(Clone, Debug, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilterParams {
    /// Keep pairs with DINOv2 similarity strictly below this.
    #[arg(long, default_value_t = 0.6)]
    pub dino_max: f32,
    /// Candidates with DINOv2 similarity at or above this are near-duplicates (the same
    /// picture): their connected components become the `groups` table, and the report shows
    /// one row per pair of groups.
    #[arg(long, default_value_t = DEFAULT_DUP_MIN)]
    pub dup_min: f32,
    /// Run the query on a Ballista cluster at df://HOST:PORT (this process writes the pairs).
    #[arg(long, value_name = "df://HOST:PORT", env = "BLINDSPOT_CLUSTER")]
    pub cluster: Option<String>,
    /// Candidates units are gathered, in order, into units of work of about this many MiB
    /// (their cells' DINOv2 vectors and their candidates), each one query and one commit; a
    /// larger unit is one by itself. Workers sharing a root must pass the same value.
    // Given in MiB, held in bytes.
    #[arg(long = "work-mib", value_name = "MIB", default_value_t = DEFAULT_WORK_MIB, value_parser = mib_to_bytes)]
    #[serde(rename = "work-mib", deserialize_with = "mib_de")]
    pub work_bytes: u64,
    /// Units filtered at once, each its own task (memory is this many units; one with
    /// --cluster) [default: one per core, at most 4].
    #[arg(long, default_value_t = default_units_at_once())]
    #[serde(skip)]
    pub units_at_once: usize,
    /// Only this worker's share of the units, as `(i, n)`: every n-th unit from the i-th.
    #[arg(skip)]
    #[serde(skip)]
    pub worker: Option<(u32, u32)>,
    /// Lease units instead (elastic workers).
    #[arg(skip)]
    #[serde(skip)]
    pub claim: Option<ClaimParams>,
}

/// `--work-mib` and `work-mib`: MiB given, bytes held.
fn mib_to_bytes(s: &str) -> std::result::Result<u64, String> {
    let mib: u64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a whole number of MiB: {e}"))?;
    mib.checked_mul(1 << 20)
        .ok_or_else(|| format!("{mib} MiB is too large"))
}

fn mib_de<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    let mib = <u64 as Deserialize>::deserialize(d)?;
    mib.checked_mul(1 << 20)
        .ok_or_else(|| serde::de::Error::custom(format!("{mib} MiB is too large")))
}

impl FilterParams {
    /// Every problem with these settings, by field name.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = check_thresholds(self.dino_max, self.dup_min) {
            problems.push(e);
        }
        if let Some(url) = &self.cluster {
            if let Err(e) = crate::cluster::scheduler_url(url) {
                problems.push(format!("cluster: {e}"));
            }
        }
        problems
    }
}

/// The default budget of a unit of work, in MiB.
pub const DEFAULT_WORK_MIB: u64 = 64;

/// Units filtered at once by default: one per core, at most four.
pub fn default_units_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The default near-duplicate threshold (see the README on how it was chosen).
pub const DEFAULT_DUP_MIN: f32 = 0.9;

impl Default for FilterParams {
    fn default() -> Self {
        FilterParams {
            dino_max: 0.6,
            worker: None,
            claim: None,
            cluster: None,
            units_at_once: default_units_at_once(),
            dup_min: DEFAULT_DUP_MIN,
            work_bytes: DEFAULT_WORK_MIB << 20,
        }
    }
}

/// What a filter run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FilterSummary {
    /// CLIP-blind pairs written by this run.
    pub pairs: u64,
    /// Pairs in the table after it.
    pub table_pairs: u64,
    /// Candidate units filtered by this run.
    pub units: usize,
    /// Units of work run (candidates units gathered up to the work budget), each one query
    /// and one commit.
    pub work: usize,
    /// Units of this worker (all units without `--worker` or `--claim`).
    pub units_total: usize,
    /// Units already filtered when the run started.
    pub skipped: usize,
    /// Claiming: units committed by other workers while this one ran.
    pub by_others: usize,
    /// Claiming: units filtered here but committed first by another (this copy deleted).
    pub discarded: usize,
    /// True when units filtered by earlier runs were kept (only new ones were filtered).
    pub incremental: bool,
    /// The run id.
    pub run_id: String,
    /// Candidate pairs read by this run.
    pub candidate_rows: u64,
    /// The largest unit of work filtered, in candidate pairs.
    pub largest_unit: u64,
    /// DINOv2 vectors gathered for the largest unit of work.
    pub largest_unit_vectors: u64,
    /// Units whose vectors were not in their cell and were found by scanning.
    pub scanned_units: usize,
    /// Keys named by candidates that have no DINOv2 vector (left out, as the join does).
    pub missing_vectors: u64,
    /// Near-duplicate edges written by this run.
    pub dup_edges: u64,
    /// The near-duplicate groups after the run (when every unit is filtered).
    pub groups: Option<super::groups::GroupsSummary>,
    /// Peak resident set of the process (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Wall time.
    pub seconds: f64,
}

/// Checks the two thresholds: each a cosine similarity, and no pair both CLIP-blind and a
/// near-duplicate.
pub fn check_thresholds(dino_max: f32, dup_min: f32) -> std::result::Result<(), String> {
    for (name, v) in [("dino-max", dino_max), ("dup-min", dup_min)] {
        if !(-1.0..=1.0).contains(&v) {
            return Err(format!("{name} {v} must be between -1 and 1"));
        }
    }
    if dup_min < dino_max {
        return Err(format!(
            "dup-min {dup_min} is below dino-max {dino_max}: a pair cannot be both CLIP-blind and a near-duplicate; raise dup-min to at least {dino_max}"
        ));
    }
    Ok(())
}

/// A run id: UTC time and a few random-enough hex digits.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let tag = blake3::hash(format!("{:?}{}", now, std::process::id()).as_bytes()).to_hex();
    format!("{}-{}", now.as_secs(), &tag[..8])
}

/// The filter stage in this process, every unit, with threshold `dino_max`.
pub async fn filter(root: &Location, dino_max: f32) -> Result<FilterSummary> {
    let params = FilterParams {
        dino_max,
        ..Default::default()
    };
    filter_with(root, &params, Arc::new(NoProgress)).await
}

/// The filter stage.
pub async fn filter_with(
    root: &Location,
    params: &FilterParams,
    progress: Arc<dyn Progress>,
) -> Result<FilterSummary> {
    Stage::Filter.settings(params.check())?;
    let sharing = Sharing::new(params.worker, params.claim.as_ref())?;
    let mut result = units::exclusive(
        root,
        Stage::Filter,
        &sharing,
        filter_units(root, params, &sharing, progress),
    )
    .await;
    if let Ok(summary) = &mut result {
        summary.peak_rss_bytes = crate::progress::peak_rss_bytes();
    }
    result
}

/// The filter unit of a candidates commit (a name for commit and object paths).
fn unit_of(c: &Commit) -> String {
    let unit = if c.unit.is_empty() { "table" } else { &c.unit };
    UnitId::filter(unit, c.generation).into()
}

/// The table the thresholds make: commits of another epoch are another table.
fn epoch_of(dino_max: f32, dup_min: f32) -> String {
    format!(
        "dino-max-{:08x}-dup-min-{:08x}",
        dino_max.to_bits(),
        dup_min.to_bits()
    )
}

async fn filter_units(
    root: &Location,
    params: &FilterParams,
    sharing: &Sharing,
    progress: Arc<dyn Progress>,
) -> Result<FilterSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let current = catalog.commits_of(CommitSet::CANDIDATES).await?;
    if current.is_empty() {
        return Err(Stage::Candidates.run_first(&root.url));
    }
    let current: BTreeMap<String, Commit> = current.into_iter().map(|c| (unit_of(&c), c)).collect();
    let names: HashMap<String, &String> = current.iter().map(|(u, c)| (c.cited(), u)).collect();
    let epoch = epoch_of(params.dino_max, params.dup_min);
    let gone = withdraw_stale(&catalog, &epoch, &names).await?;
    if gone > 0 {
        progress.message(&format!(
            "filter: {gone} commits of another threshold or of candidates since replaced withdrawn"
        ));
    }
    let done = covered_units(&catalog.commits_of(CommitSet::FILTER).await?, &names);
    let run_id = new_run_id();
    let mut summary = FilterSummary {
        incremental: !done.is_empty(),
        run_id: run_id.clone(),
        ..Default::default()
    };
    let cells = cell_reader(&catalog, &current).await?;
    let todo = todo_of(
        &current,
        cells.as_ref(),
        params,
        sharing,
        &done,
        &mut summary,
    );
    let mut run_generation = None;
    if !todo.is_empty() {
        check_dino_coverage(&catalog, &todo).await?;
        let generation = catalog.begin(Stage::Filter.name()).await?;
        run_generation = Some(generation);
        let runner = Runner::new(&catalog, Stage::Filter, sharing)?;
        let first = current.keys().next().cloned().unwrap_or_default();
        let job = UnitJob::new(
            &catalog,
            params,
            (epoch, run_id),
            generation,
            cells,
            first,
            &runner,
        )
        .await?;
        let ran = run_work(
            &Arc::new(job),
            todo,
            params,
            &runner,
            &mut summary,
            progress.as_ref(),
        )
        .await;
        runner.finish(ran).await?;
    }
    // Once every unit is filtered (by this worker or others), the groups follow.
    let committed = catalog.commits_of(CommitSet::FILTER).await?;
    summary.table_pairs = committed
        .iter()
        .filter_map(|c| c.record::<FilterCommit>().ok())
        .map(|r| r.pairs)
        .sum();
    if covered_units(&committed, &names).len() == current.len() {
        progress.message("filter: near-duplicate groups");
        summary.groups = Some(groups_of(&catalog, &committed, params, run_generation).await?);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The layout's cells, to read the units' vectors from, when the candidates are partitioned.
async fn cell_reader(
    catalog: &Catalog,
    current: &BTreeMap<String, Commit>,
) -> Result<Option<CellReader>> {
    if !current.values().any(|c| UnitCell::of(c).is_some()) {
        return Ok(None);
    }
    match Layout::open(catalog).await? {
        Some(layout) => Ok(Some(CellReader::open(catalog.root(), &layout).await?)),
        None => Ok(None),
    }
}

/// The near-duplicate groups of every filter unit's edges (`committed`).
async fn groups_of(
    catalog: &Catalog,
    committed: &[Commit],
    params: &FilterParams,
    run_generation: Option<u64>,
) -> Result<super::groups::GroupsSummary> {
    let units: Vec<String> = committed.iter().map(Commit::cited).collect();
    super::groups::build(catalog, &units, params.dup_min, run_generation).await
}

/// Withdraws the filter commits of another table (`epoch`: its thresholds) or of candidates
/// units since replaced (not in `names`); returns how many.
async fn withdraw_stale(
    catalog: &Catalog,
    epoch: &str,
    names: &HashMap<String, &String>,
) -> Result<usize> {
    catalog
        .retract(CommitSet::FILTER, |c| match c.record::<FilterCommit>() {
            Ok(r) => {
                r.epoch != epoch
                    || r.candidates.is_empty()
                    || r.candidates.iter().any(|u| !names.contains_key(u))
            }
            Err(_) => true,
        })
        .await
}

/// This worker's units of work (every worker plans the same units of work from the same
/// candidates), less the candidates units filtered already; counts both into `summary`.
fn todo_of(
    current: &BTreeMap<String, Commit>,
    cells: Option<&CellReader>,
    params: &FilterParams,
    sharing: &Sharing,
    done: &HashSet<String>,
    summary: &mut FilterSummary,
) -> Vec<Work> {
    let mine: Vec<Vec<&String>> = plan_work(current, cells, params.work_bytes)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| sharing.takes(*i as u64))
        .map(|(_, units)| units)
        .collect();
    summary.units_total = mine.iter().map(Vec::len).sum();
    let todo: Vec<Work> = mine
        .into_iter()
        .filter_map(|units| {
            let members: Vec<(String, Commit)> = units
                .into_iter()
                .filter(|u| !done.contains(*u))
                .map(|u| (u.clone(), current[u].clone()))
                .collect();
            Some(Work {
                name: members.first()?.0.clone(),
                members,
            })
        })
        .collect();
    let left: usize = todo.iter().map(|w| w.members.len()).sum();
    summary.skipped = summary.units_total - left;
    todo
}

/// The session unit queries run in: this process's, or a Ballista cluster's.
async fn unit_session(root: &Location, cluster: Option<&str>) -> Result<SessionContext> {
    let ctx = match cluster {
        None => sql::bare_session(),
        Some(url) => {
            if root.url.starts_with("memory:") {
                return Err(Error::Usage(format!(
                    "{} lives in this process only; a cluster's executors cannot read it",
                    root.url
                )));
            }
            cluster::connect(url).await?
        }
    };
    plan_for_units(&ctx);
    Ok(ctx)
}

/// The candidates units (their names) that the filter commits `committed` cover.
fn covered_units(committed: &[Commit], names: &HashMap<String, &String>) -> HashSet<String> {
    committed
        .iter()
        .filter_map(|c| c.record::<FilterCommit>().ok())
        .flat_map(|r| r.candidates)
        .filter_map(|u| names.get(&u).map(|n| n.to_string()))
        .collect()
}

/// Bytes a candidate row is counted for when units are gathered into units of work.
const CANDIDATE_ROW_BYTES: u64 = 64;

/// Gathers the candidates units, in order, into units of work of at most `budget` estimated
/// bytes each: the DINOv2 column of the unit's cell (all it can gather) and
/// `CANDIDATE_ROW_BYTES` per candidate. A unit over the budget alone, or one without a cell
/// (whose vectors are found by scanning), is a unit of work by itself.
fn plan_work<'a>(
    units: &'a BTreeMap<String, Commit>,
    cells: Option<&CellReader>,
    budget: u64,
) -> Vec<Vec<&'a String>> {
    let mut plan: Vec<Vec<&String>> = Vec::new();
    let mut held = u64::MAX;
    for (name, c) in units {
        let rows: u64 = c
            .objects(&table::CANDIDATES)
            .iter()
            .map(|o| o.rows.unwrap_or(u64::MAX / 4))
            .fold(0, u64::saturating_add);
        let vectors = match (cells, UnitCell::of(c)) {
            (Some(reader), Some((cell, through))) => reader.column_bytes(cell, through, "dino"),
            _ => None,
        };
        let bytes = vectors.map_or(u64::MAX, |v| {
            v.saturating_add(rows.saturating_mul(CANDIDATE_ROW_BYTES))
        });
        match held.checked_add(bytes).filter(|&b| b <= budget) {
            Some(b) => {
                held = b;
                plan.last_mut().expect("held is finite").push(name);
            }
            None => {
                held = bytes;
                plan.push(vec![name]);
            }
        }
    }
    plan
}

/// One unit of work: candidates units filtered by one query and made visible by one commit,
/// named after the first.
struct Work {
    name: String,
    members: Vec<(String, Commit)>,
}

/// Filters and commits the units of work `todo`, a few at once (or leased one by one with
/// `--claim`), adding each to `summary`.
async fn run_work(
    job: &Arc<UnitJob>,
    todo: Vec<Work>,
    params: &FilterParams,
    runner: &Runner,
    summary: &mut FilterSummary,
    progress: &dyn Progress,
) -> Result<()> {
    let mut every = Every::new(PROGRESS_EVERY);
    let units = todo.iter().map(|w| w.members.len() as u64).sum();
    runner.start(progress, "units", Some(units));
    // A few units of work at once, each its own task (so both its reading and its query use a
    // core); each commits when it is done, in any order.
    let at_once = match params.cluster {
        Some(_) => 1,
        None => params.units_at_once.max(1),
    };
    let work = |work: Work| {
        let job = job.clone();
        async move {
            tokio::spawn(async move { job.run(&work).await })
                .await
                .map_err(|e| Error::Internal(format!("a filter unit failed: {e}")))?
        }
    };
    runner
        .drive(
            todo,
            |w| w.name.clone(),
            at_once,
            work,
            |outcome| {
                progress.advance(summary.took(outcome));
                if every.due() {
                    progress.message(&summary.line());
                }
            },
        )
        .await?;
    progress.finish();
    Ok(())
}

impl FilterSummary {
    /// Counts what became of a unit of work; returns the candidates units it did.
    fn took(&mut self, outcome: Outcome<Work, FilterCommit>) -> u64 {
        match outcome {
            Outcome::Committed(record) => {
                self.add(&record);
                record.candidates.len() as u64
            }
            Outcome::Discarded(record) => {
                self.discarded += record.candidates.len();
                record.candidates.len() as u64
            }
            Outcome::ByOthers(work) => {
                self.by_others += work.members.len();
                0
            }
        }
    }

    /// The periodic progress line.
    fn line(&self) -> String {
        format!(
            "filter: {}/{} units, {} pairs from {} candidates",
            self.units + self.skipped,
            self.units_total,
            self.pairs,
            self.candidate_rows
        )
    }

    fn add(&mut self, r: &FilterCommit) {
        self.pairs += r.pairs;
        self.units += r.candidates.len();
        self.work += 1;
        self.candidate_rows += r.candidate_rows;
        if r.candidate_rows >= self.largest_unit {
            self.largest_unit = r.candidate_rows;
            self.largest_unit_vectors = r.vectors;
        }
        self.scanned_units += r.scanned as usize;
        self.missing_vectors += r.missing;
        self.dup_edges += r.dup_edges;
    }
}

/// Shards embedded with CLIP only get their DINOv2 vectors from `blindspot dino`: every
/// candidate unit filtered now must have been covered by a finished dino run.
async fn check_dino_coverage(catalog: &Catalog, todo: &[Work]) -> Result<()> {
    let clip_only = catalog
        .records::<table::records::EmbedCommit>()
        .await?
        .iter()
        .any(|(_, r)| r.without_dino());
    if !clip_only {
        return Ok(());
    }
    let dino = catalog.dino_covered().await?;
    let units = || todo.iter().flat_map(|w| &w.members);
    let missing = units().filter(|(_, c)| !dino.contains(&c.cited())).count();
    if missing > 0 {
        let url = &catalog.root().url;
        return Err(Error::Usage(format!(
            "{missing} of {} candidate units of {url} have no DINOv2 vectors yet (shards were embedded with CLIP only); run `blindspot dino --root {url}` first",
            units().count(),
        )));
    }
    Ok(())
}

/// The schema of the vectors a unit gathers: the DINOv2 vectors as raw bytes in their stored
/// float type (`io::raw_vector_field`: a hash join moves each as one copy, and `cosine_sim`
/// widens f16 to f32 exactly, as the global query does, so similarities are equal bit for bit;
/// vectors of another type in the same unit are cast to the first's).
fn vectors_schema(dino: Field) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("uri", DataType::Utf8, true),
        dino,
    ]))
}

/// The DINOv2 vectors of the keys a unit still needs, gathered from batches of
/// (`key`, `uri`, `dino`) rows.
struct Gather {
    needed: HashSet<String>,
    batches: Vec<RecordBatch>,
    schema: Option<SchemaRef>,
    rows: u64,
}

impl Gather {
    /// Keeps the rows of `batch` whose key is still needed (the first row of a key wins), and
    /// checks each kept vector finite and unit-norm (DINOv2 vectors are stored normalised; a
    /// damaged one would give a wrong similarity, not an error). `from` names where the batch
    /// was read, for the error.
    fn take(&mut self, batch: &RecordBatch, from: &str) -> Result<()> {
        let keys = io::strings(batch, "key")?;
        let mask = BooleanArray::from_iter(
            keys.iter()
                .map(|k| Some(k.is_some_and(|k| self.needed.remove(k)))),
        );
        if mask.true_count() == 0 {
            return Ok(());
        }
        let kept = arrow::compute::filter_record_batch(batch, &mask)
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?;
        let column = |name: &str| {
            kept.column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::table(sql::DINO_VECTORS, format!("no column {name}")))
        };
        let field = kept
            .schema()
            .field_with_name("dino")
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?
            .clone();
        // Cells keep their vectors as raw bytes, the vector tables as lists.
        let list = io::vectors_of(&column("dino")?, &field)?;
        if !matches!(list.data_type(), DataType::FixedSizeList(..)) {
            return Err(Error::table(
                sql::DINO_VECTORS,
                format!("dino is {}, not a vector column", list.data_type()),
            ));
        }
        let schema = self
            .schema
            .get_or_insert_with(|| {
                let of = Field::new("dino", list.data_type().clone(), true);
                vectors_schema(io::raw_vector_field("dino", &of))
            })
            .clone();
        let list_array = list
            .as_any()
            .downcast_ref::<arrow::array::FixedSizeListArray>()
            .ok_or_else(|| Error::table(sql::DINO_VECTORS, "dino is not a vector column"))?;
        let dim = list_array.value_length() as usize;
        let values = arrow::compute::cast(list_array.values(), &DataType::Float32)
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?;
        let values = values
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .expect("cast to f32");
        let from_row = list_array.offset() * dim;
        let flat = &values.values()[from_row..from_row + list_array.len() * dim];
        if let Some(i) = crate::mine::cells::first_bad_vector(flat, dim) {
            let keys = io::strings(&kept, "key")?;
            return Err(Error::table(
                sql::DINO_VECTORS,
                format!(
                    "the DINOv2 vector of {:?} read from {from} is not finite and unit-norm: the object is damaged; re-run `blindspot partition --retrain` from the embeddings",
                    keys.value(i)
                ),
            ));
        }
        let dino = io::raw_vectors(&list, schema.field(2))?;
        let uri = arrow::compute::cast(&column("uri")?, &DataType::Utf8)
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?;
        let key = arrow::compute::cast(&column("key")?, &DataType::Utf8)
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?;
        let out = RecordBatch::try_new(schema, vec![key, uri, dino])
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))?;
        self.rows += out.num_rows() as u64;
        self.batches.push(out);
        Ok(())
    }
}

/// What filtering one unit needs besides the unit.
struct UnitJob {
    catalog: Catalog,
    ctx: SessionContext,
    dino_max: f32,
    dup_min: f32,
    epoch: String,
    run_id: String,
    generation: u64,
    cells: Option<CellReader>,
    sources: Vec<(&'static str, Vec<String>)>,
    on_cluster: bool,
    first: String,
    stem_suffix: String,
}

/// The candidate rows of `paths` (cast to the first object's schema) and the keys they name.
async fn read_candidates(
    root: &Location,
    paths: &[String],
) -> Result<(Vec<RecordBatch>, HashSet<String>)> {
    let mut candidates: Vec<RecordBatch> = Vec::new();
    let mut needed = HashSet::new();
    let mut stream = io::scan_objects(
        root,
        paths.to_vec(),
        &["a", "b", "clip_sim"],
        io::SCAN_BATCH_ROWS,
    );
    while let Some(batch) = stream.try_next().await? {
        for column in ["a", "b"] {
            let keys = io::strings(&batch, column)?;
            needed.extend(keys.iter().flatten().map(str::to_string));
        }
        if batch.num_rows() > 0 {
            // Objects of several units: one schema for the table (the first's).
            let batch = match candidates.first() {
                Some(first) if first.schema() != batch.schema() => {
                    io::cast_batch(&batch, &first.schema())?
                }
                _ => batch,
            };
            candidates.push(batch);
        }
    }
    Ok((candidates, needed))
}

impl UnitJob {
    /// What the units of generation `generation` need: its session (this process's or the
    /// cluster's), the table's `(epoch, run id)`, the cells, and `first`, the unit every worker
    /// agrees writes an object, so the table and its schema exist even when no unit has a
    /// pair.
    async fn new(
        catalog: &Catalog,
        params: &FilterParams,
        (epoch, run_id): (String, String),
        generation: u64,
        cells: Option<CellReader>,
        first: String,
        runner: &Runner,
    ) -> Result<UnitJob> {
        Ok(UnitJob {
            catalog: catalog.clone(),
            ctx: unit_session(catalog.root(), params.cluster.as_deref()).await?,
            dino_max: params.dino_max,
            dup_min: params.dup_min,
            epoch,
            run_id,
            generation,
            cells,
            sources: sql::dino_objects(catalog).await?,
            on_cluster: params.cluster.is_some(),
            first,
            stem_suffix: runner.suffix(generation),
        })
    }

    /// Filters the candidates of the units of `work` and writes their pairs; returns the
    /// commit to make.
    async fn run(&self, work: &Work) -> Result<(FilterCommit, Commit)> {
        let root = self.catalog.root();
        let unit = work.name.as_str();
        // A session of its own, so units run side by side (on a cluster, the client's).
        let ctx = match self.on_cluster {
            true => self.ctx.clone(),
            false => {
                let ctx = sql::bare_session();
                plan_for_units(&ctx);
                ctx
            }
        };
        let paths: Vec<String> = work
            .members
            .iter()
            .flat_map(|(_, c)| c.objects(&table::CANDIDATES))
            .map(|o| o.path)
            .collect();
        let (candidates, needed) = read_candidates(root, &paths).await?;
        let candidate_rows: u64 = candidates.iter().map(|b| b.num_rows() as u64).sum();
        let (vectors, scanned) = self.gather(work, needed).await?;
        let stem = format!("{}/{unit}{}", self.epoch, self.stem_suffix);
        let first = work.members.iter().any(|(u, _)| *u == self.first);
        let missing = vectors.needed.len() as u64;
        let gathered = vectors.rows;
        let (mut objects, aggregates) = self
            .similarities(&ctx, unit, &paths, candidates, vectors, first, &stem)
            .await?;
        let (rows, undefined) = (aggregates.rows, aggregates.undefined);
        let written = aggregates.write(&self.catalog, &stem, first).await?;
        let record = FilterCommit {
            pairs: objects.iter().filter_map(|o| o.rows).sum(),
            dino_max: self.dino_max,
            run_id: self.run_id.to_string(),
            candidates: work.members.iter().map(|(_, c)| c.cited()).collect(),
            epoch: self.epoch.to_string(),
            candidate_rows,
            vectors: gathered,
            missing,
            scanned,
            dup_min: self.dup_min,
            dup_edges: written.dup_edges,
            undefined,
            version: crate::VERSION.to_string(),
        };
        tracing::debug!(unit, rows, "unit similarities");
        let mut commit = Commit::new(unit, self.generation, &record)?
            .with(&table::PAIRS, std::mem::take(&mut objects));
        for (def, objects) in written.objects {
            commit = commit.with(def, objects);
        }
        Ok((record, commit))
    }

    /// The DINOv2 vectors of the keys `needed`: from the units' cells first, then by scanning
    /// the vector tables for any left; and whether it scanned.
    async fn gather(&self, work: &Work, needed: HashSet<String>) -> Result<(Gather, bool)> {
        let mut vectors = Gather {
            needed,
            batches: Vec::new(),
            schema: None,
            rows: 0,
        };
        if let Some(reader) = &self.cells {
            for (_, c) in &work.members {
                if let Some((cell, through)) = UnitCell::of(c) {
                    if !vectors.needed.is_empty() {
                        reader
                            .for_each(cell, through, &["key", "uri", "dino"], |b, object| {
                                vectors.take(b, &format!("{object} (cell {cell})"))
                            })
                            .await?;
                    }
                }
            }
        }
        let scanned = !vectors.needed.is_empty();
        for (_, paths) in &self.sources {
            if vectors.needed.is_empty() {
                break;
            }
            let mut stream = io::scan_objects(
                self.catalog.root(),
                paths.clone(),
                &["key", "uri", "dino"],
                io::SCAN_BATCH_ROWS,
            );
            while let Some(batch) = stream.try_next().await? {
                vectors.take(&batch, "the DINOv2 vector tables")?;
                if vectors.needed.is_empty() {
                    break;
                }
            }
        }
        Ok((vectors, scanned))
    }

    /// Registers the candidates and their vectors (in memory, or as scratch objects for a
    /// cluster's executors) and runs the unit's query; without candidates, the first unit
    /// still writes an empty pairs object.
    #[allow(clippy::too_many_arguments)]
    async fn similarities(
        &self,
        ctx: &SessionContext,
        unit: &str,
        paths: &[String],
        candidates: Vec<RecordBatch>,
        vectors: Gather,
        first: bool,
        stem: &str,
    ) -> Result<(Vec<DataObject>, UnitAggregates)> {
        let root = self.catalog.root();
        match (candidates.is_empty(), vectors.schema.clone()) {
            (false, Some(schema)) => {
                let mut scratch = Vec::new();
                if self.on_cluster {
                    // The executors read the vectors as lists: a raw column's element type is
                    // field metadata, which does not survive the trip.
                    let (schema, batches) = as_lists(&schema, vectors.batches)?;
                    scratch = io::write_batches(
                        root,
                        &format!("_tmp/filter/{}/{unit}", self.run_id),
                        &schema,
                        &batches,
                    )
                    .await?;
                    let held: Vec<String> = scratch.iter().map(|o| o.path.clone()).collect();
                    sql::register_objects(ctx, root, sql::DINO_VECTORS, &held).await?;
                    sql::register_objects(ctx, root, table::CANDIDATES.name, paths).await?;
                } else {
                    register_memory(ctx, sql::DINO_VECTORS, schema, vectors.batches)?;
                    let schema = candidates[0].schema();
                    register_memory(ctx, table::CANDIDATES.name, schema, candidates)?;
                }
                let written = self.query(ctx, unit, first, stem).await;
                let scratch: Vec<String> = scratch.into_iter().map(|o| o.path).collect();
                root.delete_scratch(&scratch).await;
                written
            }
            _ if first => {
                let mut w = self.catalog.writer(
                    &table::PAIRS,
                    stem,
                    table::schema::pairs(),
                    WriteParams::default(),
                )?;
                w.write(&RecordBatch::new_empty(table::schema::pairs()))
                    .await?;
                Ok((w.finish().await?, UnitAggregates::default()))
            }
            _ => Ok((Vec::new(), UnitAggregates::default())),
        }
    }

    /// Runs `sql/similarities.sql` over the registered tables (on the cluster with
    /// `--cluster`) and hands its rows, as they come, both to the unit's aggregates and to
    /// `sql/pairs.sql`, which runs here over them as the table `similarities`; writes the pairs
    /// under `stem` (nothing when there are none, unless this is the first unit).
    async fn query(
        &self,
        ctx: &SessionContext,
        unit: &str,
        first: bool,
        stem: &str,
    ) -> Result<(Vec<DataObject>, UnitAggregates)> {
        let failed = |e: datafusion::error::DataFusionError| {
            Error::table("pairs", format!("unit {unit}: {e}"))
        };
        let df = ctx
            .sql(sql::queries::SIMILARITIES)
            .await
            .map_err(|e| Error::table("pairs", format!("sql/similarities.sql: {e}")))?;
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.map_err(failed)?;
        tracing::debug!(unit, plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "unit plan");
        let mut similarities =
            datafusion::physical_plan::execute_stream(plan, task).map_err(failed)?;
        let (tx, rx) = futures::channel::mpsc::channel(2);
        let local = sql::bare_session();
        let fed = Arc::new(Fed {
            schema: similarities.schema(),
            rx: std::sync::Mutex::new(Some(rx)),
        });
        let streaming =
            StreamingTable::try_new(similarities.schema(), vec![fed]).map_err(failed)?;
        local
            .register_table("similarities", Arc::new(streaming))
            .map_err(failed)?;
        let df = local
            .sql(sql::queries::PAIRS)
            .await
            .and_then(|df| {
                df.with_param_values(vec![
                    ScalarValue::Float32(Some(self.dino_max)),
                    ScalarValue::Utf8(Some(self.run_id.to_string())),
                ])
            })
            .map_err(|e| Error::table("pairs", format!("sql/pairs.sql: {e}")))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut pairs = df.execute_stream().await.map_err(failed)?;
        let feed = async {
            let mut tx = tx;
            let mut aggregates = UnitAggregates::default();
            while let Some(batch) = similarities.next().await {
                let batch = batch.map_err(failed)?;
                aggregates.take(&batch, self.dup_min)?;
                if tx.send(Ok(batch)).await.is_err() {
                    break;
                }
            }
            Ok::<_, Error>(aggregates)
        };
        let write = async {
            let mut writer = None;
            if first {
                writer = Some(self.catalog.writer(
                    &table::PAIRS,
                    stem,
                    schema.clone(),
                    WriteParams::default(),
                )?);
            }
            while let Some(batch) = pairs.next().await {
                let batch = batch.map_err(failed)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                if writer.is_none() {
                    writer = Some(self.catalog.writer(
                        &table::PAIRS,
                        stem,
                        schema.clone(),
                        WriteParams::default(),
                    )?);
                }
                writer.as_mut().expect("opened above").write(&batch).await?;
            }
            match writer {
                Some(w) => w.finish().await,
                None => Ok(Vec::new()),
            }
        };
        let (aggregates, objects) = futures::try_join!(feed, write)?;
        Ok((objects, aggregates))
    }
}

/// The rows of `sql/similarities.sql` as one partition of the table `similarities`, fed
/// through a channel while they are computed (so `sql/pairs.sql` streams over them).
struct Fed {
    schema: SchemaRef,
    rx: std::sync::Mutex<Option<Receiver<datafusion::error::Result<RecordBatch>>>>,
}

impl std::fmt::Debug for Fed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("similarities of one unit")
    }
}

impl PartitionStream for Fed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().map(|mut r| r.take()).ok().flatten();
        let stream: futures::stream::BoxStream<'static, _> = match rx {
            Some(rx) => rx.boxed(),
            None => futures::stream::once(async {
                Err(datafusion::error::DataFusionError::Execution(
                    "a unit's similarities can be read once".into(),
                ))
            })
            .boxed(),
        };
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Plans every unit's query as `sql/pairs.sql` orders its joins: the unit's DINOv2 vectors
/// (a few thousand rows) on the build side of both hash joins, collected once, and the
/// candidates streamed through them. DataFusion's join reordering would otherwise build on
/// the first join's output, which carries a vector per candidate (8.5 GiB for a unit of two
/// million candidates).
fn plan_for_units(ctx: &SessionContext) {
    // This rule rebuilds the inner joins left-deep, so the second join would build on the
    // first one's output.
    ctx.remove_optimizer_rule("eliminate_cross_join");
    let state = ctx.state_ref();
    let mut state = state.write();
    let options = state.config_mut().options_mut();
    options.optimizer.join_reordering = false;
    options.optimizer.hash_join_single_partition_threshold = 1 << 30;
    options.optimizer.hash_join_single_partition_threshold_rows = 1 << 24;
    // One partition: units run side by side instead (`--units-at-once`), and no repartition
    // sits between the joins and the projection, buffering batches that still carry two
    // vectors per candidate while the consumer catches up.
    options.execution.target_partitions = 1;
    // Join output batches carry two vectors per candidate: 1,024 rows of 1024-d f16 are 4 MiB
    // a column, which the allocator reuses, where DataFusion's 8,192 rows (16 MiB a column,
    // copied again by each join) were faulted in afresh: on the 1M benchmark root 8,192 rows
    // took 5.7 to 6.1 s, 2,048 rows 5.0 to 5.5 s, 1,024 rows 4.4 to 4.9 s (and a fifth less
    // peak RSS), 512 rows 4.4 to 4.6 s.
    if let Ok(rows) = datafusion::config::ConfigNonZeroUsize::try_new(UNIT_BATCH_ROWS) {
        options.execution.batch_size = rows;
    }
}

/// Rows per batch in a unit's session.
const UNIT_BATCH_ROWS: usize = 1024;

/// A unit's vectors with the raw `dino` column turned back into vector lists.
fn as_lists(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let raw = schema.field(2).clone();
    let list = io::list_type_of(&raw)?;
    let schema = vectors_schema(Field::new("dino", list, true));
    let batches = batches
        .into_iter()
        .map(|b| {
            let dino = io::vectors_of(b.column(2), &raw)?;
            RecordBatch::try_new(
                schema.clone(),
                vec![b.column(0).clone(), b.column(1).clone(), dino],
            )
            .map_err(|e| Error::table(sql::DINO_VECTORS, e))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// Registers (or replaces) table `name` of `ctx` as `batches` in memory.
fn register_memory(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::table(name, e))?;
    ctx.deregister_table(name)
        .map_err(|e| Error::table(name, e))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| Error::table(name, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListArray, Float32Array, StringArray};

    fn batch(vectors: Vec<f32>, dim: i32) -> RecordBatch {
        let n = vectors.len() / dim as usize;
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let list = FixedSizeListArray::new(
            item.clone(),
            dim,
            Arc::new(Float32Array::from(vectors)),
            None,
        );
        let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key", DataType::Utf8, true),
                Field::new("uri", DataType::Utf8, true),
                Field::new("dino", DataType::FixedSizeList(item, dim), true),
            ])),
            vec![
                Arc::new(StringArray::from(keys.clone())),
                Arc::new(StringArray::from(keys)),
                Arc::new(list),
            ],
        )
        .unwrap()
    }

    fn gather(keys: &[&str]) -> Gather {
        Gather {
            needed: keys.iter().map(|k| k.to_string()).collect(),
            batches: Vec::new(),
            schema: None,
            rows: 0,
        }
    }

    /// Issue 20: a damaged DINOv2 vector a unit needs is an error naming where it was read;
    /// one it does not need is never looked at.
    #[test]
    fn gathered_vectors_are_checked_finite_and_unit_norm() {
        let good = vec![0.6, 0.8, 1.0, 0.0];
        let mut g = gather(&["k0", "k1"]);
        g.take(&batch(good, 2), "cells.parquet").unwrap();
        assert_eq!(g.rows, 2);
        for bad in [vec![0.6, 0.8, f32::NAN, 0.0], vec![0.6, 0.8, 3.0, 4.0]] {
            let mut g = gather(&["k1"]);
            let e = g
                .take(&batch(bad.clone(), 2), "x/cells.parquet")
                .unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("x/cells.parquet") && text.contains("\"k1\""),
                "{text}"
            );
            // Not needed: not checked.
            let mut g = gather(&["k0"]);
            g.take(&batch(bad, 2), "x/cells.parquet").unwrap();
        }
    }
}
