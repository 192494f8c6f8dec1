//! The catalog of a run root: the one module that knows which tables exist, where their data
//! objects and commits live, which generation wrote them, and how to read and write them.
//! Stages talk to each other only through it: a stage writes its tables' data objects, then a
//! commit naming them; the next stage reads what commits name, as a stream of record batches.
//!
//! A commit is a small JSON object under `_commits/`. It names the data objects of each table
//! it writes (`tables`), the *generation* that wrote it and the stage's own record (settings,
//! counts), kept beside those fields so older readers of the same object still understand it.
//! Generations are numbered per run root: each stage run takes the next number with a
//! conditional put (`_commits/_generations/<n>.json`), so numbers never repeat even when
//! several processes start at once, and readers can ask for "everything" or "after n".
//!
//! Run roots written before the catalog (commits without `tables`) still read: each table
//! knows where such a commit named its object. Their generation is 0.

pub mod io;
pub mod records;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Location;

pub use io::{BatchStream, TableWriter, WriteParams};

/// Where the commits of a group of tables live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitSet {
    /// One commit per unit of work (an input shard, an evaluation) in this folder; units
    /// accumulate and a unit's rerun replaces its own commit.
    Units(&'static str),
    /// One commit object at this path; every run of its stage replaces the whole table.
    Single(&'static str),
}

impl CommitSet {
    /// The commits of an embed run: one per input shard (`embeddings` and `errors`).
    pub const EMBED: CommitSet = CommitSet::Units("_commits/embed");
    /// The index stage's commit: the index files, in its record.
    pub const INDEX: CommitSet = CommitSet::Single("_commits/index.json");
    /// The partition stage's commits: one per generation of new vectors assigned to cells.
    pub const PARTITION: CommitSet = CommitSet::Units("_commits/partition");
    /// The candidates stage's commits: one per mining cell and partition generation (or one
    /// for the whole table with `--method index|exact`).
    pub const CANDIDATES: CommitSet = CommitSet::Units("_commits/candidates");
    /// The dino stage's commits: one per input shard whose candidate images got DINOv2
    /// vectors in a run, and one per finished run naming the candidate units it covered.
    pub const DINO: CommitSet = CommitSet::Units("_commits/dino");
    /// The filter stage's commits: one per candidates unit filtered, naming it.
    pub const FILTER: CommitSet = CommitSet::Units("_commits/filter");
    /// The recall of the `candidates` table measured after the join (no data objects).
    /// The near-duplicate groups, built from every filter unit's edges.
    pub const GROUPS: CommitSet = CommitSet::Single("_commits/groups.json");
    pub const RECALL: CommitSet = CommitSet::Single("_commits/recall.json");
    /// One commit per evaluation (`answers` and `scores`).
    pub const EVAL: CommitSet = CommitSet::Units("_commits/eval");
    /// The correlate stage's commit.
    pub const CORRELATE: CommitSet = CommitSet::Single("_commits/correlate.json");

    fn path_of(self, unit: &str) -> String {
        match (self, self.former_single()) {
            (CommitSet::Units(_), Some(single)) if unit.is_empty() => single,
            (CommitSet::Units(dir), _) => format!("{dir}/{unit}.json"),
            (CommitSet::Single(path), _) => path.to_string(),
        }
    }

    /// Where a set of units kept its one whole-table commit before it had units
    /// (`_commits/candidates.json`, `_commits/filter.json`): still read, as unit `""`, until
    /// a run retracts it.
    fn former_single(self) -> Option<String> {
        match self {
            CommitSet::Units(dir) if self == CommitSet::CANDIDATES || self == CommitSet::FILTER => {
                Some(format!("{dir}.json"))
            }
            _ => None,
        }
    }
}

/// How a commit written before the catalog (without `tables`) named a table's object.
#[derive(Clone, Copy, Debug)]
enum Legacy {
    /// A field of the commit holds the object's path.
    Field(&'static str),
    /// The object always had this path.
    Fixed(&'static str),
    /// The table is younger than the catalog.
    None,
}

/// A table of the run root.
#[derive(Debug)]
pub struct TableDef {
    /// Its name, in SQL and in commits.
    pub name: &'static str,
    /// One line on what a row is, for `SHOW TABLES`.
    pub about: &'static str,
    /// Where its commits live.
    pub commits: CommitSet,
    /// The folder of its data objects.
    pub dir: &'static str,
    legacy: Legacy,
}

/// `embeddings`: one row per decoded image.
pub const EMBEDDINGS: TableDef = TableDef {
    name: "embeddings",
    about:
        "one row per decoded image: key, uri, shard, size, content hash, clip, dino, caption, url",
    commits: CommitSet::EMBED,
    dir: "embeddings",
    legacy: Legacy::Field("embeddings"),
};
/// `errors`: one row per input that could not be embedded.
pub const ERRORS: TableDef = TableDef {
    name: "errors",
    about: "one row per input that could not be embedded, with its kind",
    commits: CommitSet::EMBED,
    dir: "errors",
    legacy: Legacy::Field("errors"),
};
/// `duplicates`: exact duplicates collapsed before mining (written with the candidates).
pub const DUPLICATES: TableDef = TableDef {
    name: "duplicates",
    about: "byte-identical images collapsed onto the copy kept for mining",
    commits: CommitSet::CANDIDATES,
    dir: "duplicates",
    legacy: Legacy::Fixed("duplicates/duplicates.parquet"),
};
/// `cells`: the mining layout, every unique CLIP vector in its home cell and, as a guest, in
/// every other cell where it could have a pair.
pub const CELLS: TableDef = TableDef {
    name: "cells",
    about: "mining cells: each CLIP vector once, in its home cell, with the cells it is a guest of",
    commits: CommitSet::PARTITION,
    dir: "partition",
    legacy: Legacy::Field("cells"),
};
/// `guests`: where each mining cell's guests are, as runs of other cells' home rows.
pub const GUESTS: TableDef = TableDef {
    name: "guests",
    about: "per mining cell: runs of other cells' home rows (object, first row, rows) that are its guests",
    commits: CommitSet::PARTITION,
    dir: "partition",
    legacy: Legacy::None,
};
/// `centroids`: the unit centroids of the mining cells.
pub const CENTROIDS: TableDef = TableDef {
    name: "centroids",
    about: "the spherical k-means centroid of each mining cell",
    commits: CommitSet::PARTITION,
    dir: "partition",
    legacy: Legacy::Field("centroids"),
};
/// `candidates`: every pair above the CLIP threshold.
pub const CANDIDATES: TableDef = TableDef {
    name: "candidates",
    about: "every pair with CLIP similarity above the threshold (a < b)",
    commits: CommitSet::CANDIDATES,
    dir: "candidates",
    legacy: Legacy::Fixed("candidates/candidates.parquet"),
};
/// `dino`: DINOv2 vectors of candidate images, computed after mining (`blindspot dino`).
pub const DINO: TableDef = TableDef {
    name: "dino",
    about: "DINOv2 vectors computed after mining, only for images in a candidate pair",
    commits: CommitSet::DINO,
    dir: "dino/vectors",
    legacy: Legacy::Field("dino"),
};
/// `dino_errors`: candidate images the dino stage could not fetch or decode.
pub const DINO_ERRORS: TableDef = TableDef {
    name: "dino_errors",
    about: "candidate images the dino stage could not fetch or decode, with the kind",
    commits: CommitSet::DINO,
    dir: "dino/errors",
    legacy: Legacy::Field("dino_errors"),
};
/// `pairs`: the CLIP-blind pairs.
pub const PAIRS: TableDef = TableDef {
    name: "pairs",
    about: "the CLIP-blind pairs: candidates below the DINOv2 threshold",
    commits: CommitSet::FILTER,
    dir: "pairs",
    legacy: Legacy::Fixed("pairs/pairs.parquet"),
};
/// `similarity_grid`: per filter unit, candidates counted on a fixed (CLIP, DINOv2) grid.
pub const GRID: TableDef = TableDef {
    name: "similarity_grid",
    about:
        "per filter unit: candidates counted on a fixed CLIP x DINOv2 grid (clip_bin, dino_bin, n)",
    commits: CommitSet::FILTER,
    dir: "similarity_grid",
    legacy: Legacy::None,
};
/// `image_minima`: per filter unit, each image's lowest DINOv2 similarity per CLIP bin.
pub const MINIMA: TableDef = TableDef {
    name: "image_minima",
    about:
        "per filter unit: each image's lowest DINOv2 similarity among its candidates, per CLIP bin",
    commits: CommitSet::FILTER,
    dir: "image_minima",
    legacy: Legacy::None,
};
/// `dup_edges`: per filter unit, a spanning forest of its near-duplicate candidates.
pub const DUP_EDGES: TableDef = TableDef {
    name: "dup_edges",
    about: "per filter unit: a spanning forest of the candidates at or above the near-duplicate threshold",
    commits: CommitSet::FILTER,
    dir: "dup_edges",
    legacy: Legacy::None,
};
/// `groups`: near-duplicate groups, the connected components of the near-duplicate edges.
pub const GROUPS: TableDef = TableDef {
    name: "groups",
    about:
        "near-duplicate groups: key, group, size, representative (images in no group are left out)",
    commits: CommitSet::GROUPS,
    dir: "groups",
    legacy: Legacy::None,
};
/// `answers`: one row per benchmark item and evaluation.
pub const ANSWERS: TableDef = TableDef {
    name: "answers",
    about: "one row per benchmark item and evaluation: prompt, response, choice, correct",
    commits: CommitSet::EVAL,
    dir: "eval/answers",
    legacy: Legacy::Field("answers"),
};
/// `scores`: per evaluation and pattern.
pub const SCORES: TableDef = TableDef {
    name: "scores",
    about: "per evaluation and pattern: question and pair accuracy",
    commits: CommitSet::EVAL,
    dir: "eval/scores",
    legacy: Legacy::Field("scores"),
};
/// `correlations`: per vision encoder (or group) and MLLM, across patterns.
pub const CORRELATIONS: TableDef = TableDef {
    name: "correlations",
    about: "per vision encoder (or group) and MLLM: Pearson and Spearman across patterns",
    commits: CommitSet::CORRELATE,
    dir: "eval/correlations",
    legacy: Legacy::Fixed("eval/correlations/correlations.parquet"),
};

/// Every table a run root can hold, in pipeline order. `blindspot sql` registers each one
/// that has committed data, so a table added here is queryable with no other change.
pub const TABLES: &[&TableDef] = &[
    &EMBEDDINGS,
    &ERRORS,
    &CENTROIDS,
    &CELLS,
    &GUESTS,
    &DUPLICATES,
    &CANDIDATES,
    &DINO,
    &DINO_ERRORS,
    &PAIRS,
    &GRID,
    &MINIMA,
    &DUP_EDGES,
    &GROUPS,
    &ANSWERS,
    &SCORES,
    &CORRELATIONS,
];

/// What `Catalog::verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verified {
    /// Objects whose bytes hash to what their commit recorded.
    pub checked: u64,
    /// Bytes read to check them.
    pub bytes: u64,
    /// Objects committed without a hash (written before hashes were recorded).
    pub unchecked: u64,
    /// Objects whose bytes are not what was written, or that cannot be read: (URI, why).
    pub damaged: Vec<(String, String)>,
}

/// One data object of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    /// Its path, relative to the run root.
    pub path: String,
    /// Rows in it; unknown for objects committed before the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// BLAKE3 of its bytes as written (hex), which `status --verify` checks; unknown for
    /// objects written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// A commit: the data objects it makes visible, per table, and the stage's own record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Commit {
    /// The unit of work (an input shard's id, an evaluation's id); empty for a whole table.
    #[serde(default)]
    pub unit: String,
    /// The generation that wrote it; 0 before the catalog.
    #[serde(default)]
    pub generation: u64,
    /// Data objects by table name.
    #[serde(default)]
    pub tables: BTreeMap<String, Vec<DataObject>>,
    /// The stage's own record, kept at the top level of the object; read it typed with
    /// [`Commit::record`] or [`Catalog::records`].
    #[serde(flatten)]
    info: serde_json::Map<String, serde_json::Value>,
}

impl Commit {
    /// How other records cite this commit: `unit@generation` (a `dino` run's coverage and a
    /// filter commit name the candidates units they cover so).
    pub fn cited(&self) -> String {
        records::UnitId::cited(&self.unit, self.generation).into()
    }

    /// A commit of `unit` by `generation`, with the stage's record `info`.
    pub fn new<T: Serialize>(unit: &str, generation: u64, info: &T) -> Result<Commit> {
        let info = match serde_json::to_value(info).map_err(|e| Error::Internal(e.to_string()))? {
            serde_json::Value::Object(map) => map,
            other => {
                return Err(Error::Internal(format!(
                    "a commit record must be an object, not {other}"
                )))
            }
        };
        Ok(Commit {
            unit: unit.to_string(),
            generation,
            tables: BTreeMap::new(),
            info,
        })
    }

    /// Adds the data objects of `table`.
    pub fn with(mut self, table: &TableDef, objects: Vec<DataObject>) -> Commit {
        self.tables.insert(table.name.to_string(), objects);
        self
    }

    /// The stage's record as its own type.
    pub fn record<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.info.clone()))
            .map_err(|e| Error::table("commit", format!("unit {:?}: {e}", self.unit)))
    }

    /// The objects of `table` this commit names (old commits: where that stage put them).
    pub fn objects(&self, table: &TableDef) -> Vec<DataObject> {
        if let Some(objects) = self.tables.get(table.name) {
            return objects.clone();
        }
        if !self.tables.is_empty() {
            return Vec::new();
        }
        let path = match table.legacy {
            Legacy::Field(f) => self
                .info
                .get(f)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            Legacy::Fixed(p) => Some(p.to_string()),
            Legacy::None => None,
        };
        path.map(|path| DataObject {
            path,
            rows: None,
            blake3: None,
        })
        .into_iter()
        .collect()
    }
}

/// Which generations a reader wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Generations {
    /// Every committed generation.
    #[default]
    All,
    /// Only those after this one (what a nightly increment adds).
    After(u64),
}

impl Generations {
    fn admits(self, g: u64) -> bool {
        match self {
            Generations::All => true,
            Generations::After(after) => g > after,
        }
    }
}

/// What `SHOW TABLES` says about one table.
#[derive(Clone, Debug, Serialize)]
pub struct TableStatus {
    /// The table.
    pub name: &'static str,
    /// Rows over every committed object.
    pub rows: u64,
    /// Committed data objects.
    pub objects: u64,
    /// Commits naming it.
    pub commits: u64,
    /// The latest generation that wrote it.
    pub generation: u64,
    /// What a row is.
    pub about: &'static str,
    /// The committed objects' paths, relative to the run root.
    #[serde(skip)]
    pub paths: Vec<String>,
}

/// The record of one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct GenerationRecord {
    generation: u64,
    command: String,
    started_unix: u64,
    version: String,
}

/// Where generation records live.
const GENERATIONS: &str = "_commits/_generations";
/// Commit objects read at once (object stores reward concurrency).
const COMMIT_READS: usize = 32;

/// The catalog of one run root.
#[derive(Clone, Debug)]
pub struct Catalog {
    root: Location,
}

impl Catalog {
    /// The catalog of `root`.
    pub fn new(root: &Location) -> Catalog {
        Catalog { root: root.clone() }
    }

    /// The run root.
    pub fn root(&self) -> &Location {
        &self.root
    }

    /// Starts a generation for a run of `command`: the next number after every one taken,
    /// claimed with a conditional put so two processes never share one.
    pub async fn begin(&self, command: &str) -> Result<u64> {
        let taken = self.root.list(GENERATIONS).await?;
        let mut next = taken
            .iter()
            .filter_map(|m| {
                let rel = self.root.relative(&m.location);
                rel.rsplit('/')
                    .next()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        loop {
            let record = GenerationRecord {
                generation: next,
                command: command.to_string(),
                started_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                version: crate::VERSION.to_string(),
            };
            let body =
                serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
            let path = self.root.path(&format!("{GENERATIONS}/{next:010}.json"));
            match self
                .root
                .store
                .put_opts(&path, PutPayload::from(body), create.clone())
                .await
            {
                Ok(_) => return Ok(next),
                Err(object_store::Error::AlreadyExists { .. }) => next += 1,
                Err(object_store::Error::NotImplemented { .. }) => {
                    self.root
                        .put(
                            &self.root.relative(&path),
                            serde_json::to_vec(&record).unwrap_or_default().into(),
                        )
                        .await?;
                    return Ok(next);
                }
                Err(e) => return Err(Error::storage(self.root.uri_of(&path), e)),
            }
        }
    }

    /// Every commit of a set, by unit (path order).
    pub async fn commits_of(&self, set: CommitSet) -> Result<Vec<Commit>> {
        match set {
            CommitSet::Single(path) => {
                Ok(self.read_commit(path, false).await?.into_iter().collect())
            }
            CommitSet::Units(dir) => {
                let paths: Vec<String> = self
                    .root
                    .list(dir)
                    .await?
                    .into_iter()
                    .map(|m| self.root.relative(&m.location))
                    .filter(|p| p.ends_with(".json"))
                    .collect();
                let mut commits: Vec<Option<Commit>> = futures::stream::iter(paths)
                    .map(|p| async move { self.read_commit(&p, true).await })
                    .buffered(COMMIT_READS)
                    .try_collect()
                    .await?;
                if let Some(single) = set.former_single() {
                    commits.insert(0, self.read_commit(&single, false).await?);
                }
                Ok(commits.into_iter().flatten().collect())
            }
        }
    }

    /// The commit of one unit of a set, if there is one.
    pub async fn commit_of(&self, set: CommitSet, unit: &str) -> Result<Option<Commit>> {
        self.read_commit(&set.path_of(unit), matches!(set, CommitSet::Units(_)))
            .await
    }

    /// Reads one commit object; `named_unit`: the file stem is the unit (older commits do not
    /// record it).
    async fn read_commit(&self, rel: &str, named_unit: bool) -> Result<Option<Commit>> {
        let path = self.root.path(rel);
        let uri = self.root.uri_of(&path);
        let bytes = match self.root.get_bytes(&path).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::storage(uri, e)),
        };
        let mut commit: Commit = serde_json::from_slice(&bytes)
            .map_err(|e| Error::table("commit manifest", format!("{uri}: {e}")))?;
        if commit.unit.is_empty() && named_unit {
            if let Some(stem) = rel.rsplit('/').next().and_then(|n| n.strip_suffix(".json")) {
                commit.unit = stem.to_string();
            }
        }
        Ok(Some(commit))
    }

    /// The commits naming `table` in the wanted generations, by unit.
    /// Reads every committed data object of every table and checks its bytes against the
    /// BLAKE3 hash its commit recorded (streamed: memory is one chunk of one object).
    pub async fn verify(&self) -> Result<Verified> {
        use futures::StreamExt;
        let mut out = Verified::default();
        let mut seen = std::collections::HashSet::new();
        for table in TABLES {
            for commit in self.commits(table, Generations::All).await? {
                for object in commit.objects(table) {
                    if !seen.insert(object.path.clone()) {
                        continue;
                    }
                    let Some(want) = &object.blake3 else {
                        out.unchecked += 1;
                        continue;
                    };
                    let path = self.root.path(&object.path);
                    let uri = self.root.uri_of(&path);
                    let mut hasher = blake3::Hasher::new();
                    let mut bytes = 0u64;
                    let read = async {
                        let mut stream = self.root.store.get(&path).await?.into_stream();
                        while let Some(chunk) = stream.next().await {
                            let chunk = chunk?;
                            bytes += chunk.len() as u64;
                            hasher.update(&chunk);
                        }
                        Ok::<(), object_store::Error>(())
                    }
                    .await;
                    out.bytes += bytes;
                    match read {
                        Err(e) => out.damaged.push((uri, format!("cannot be read: {e}"))),
                        Ok(()) => {
                            let got = hasher.finalize().to_hex().to_string();
                            match &got == want {
                                true => out.checked += 1,
                                false => out.damaged.push((
                                    uri,
                                    format!(
                                        "its {bytes} bytes hash to {got}, not the {want} written"
                                    ),
                                )),
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn commits(&self, table: &TableDef, generations: Generations) -> Result<Vec<Commit>> {
        Ok(self
            .commits_of(table.commits)
            .await?
            .into_iter()
            .filter(|c| generations.admits(c.generation) && !c.objects(table).is_empty())
            .collect())
    }

    /// The data objects of `table` in the wanted generations, in commit order.
    pub async fn objects(
        &self,
        table: &TableDef,
        generations: Generations,
    ) -> Result<Vec<DataObject>> {
        Ok(self
            .commits(table, generations)
            .await?
            .iter()
            .flat_map(|c| c.objects(table))
            .collect())
    }

    /// The paths of `objects`.
    pub async fn paths(&self, table: &TableDef, generations: Generations) -> Result<Vec<String>> {
        Ok(self
            .objects(table, generations)
            .await?
            .into_iter()
            .map(|o| o.path)
            .collect())
    }

    /// True when `table` has at least one commit.
    pub async fn has(&self, table: &TableDef) -> Result<bool> {
        Ok(!self.objects(table, Generations::All).await?.is_empty())
    }

    /// Streams the rows of `table` (only `columns`, all when empty) in the wanted generations,
    /// object after object and row group after row group, never a whole object in memory.
    pub async fn scan(
        &self,
        table: &TableDef,
        columns: &[&str],
        generations: Generations,
    ) -> Result<BatchStream> {
        let paths = self
            .objects(table, generations)
            .await?
            .into_iter()
            .map(|o| o.path)
            .collect();
        Ok(io::scan_objects(
            &self.root,
            paths,
            columns,
            io::SCAN_BATCH_ROWS,
        ))
    }

    /// Every commit of `R`'s set that holds an `R`, with its record read as `R`. A record
    /// that does not read is an error that names its commit.
    pub async fn records<R: records::Record>(&self) -> Result<Vec<(Commit, R)>> {
        self.commits_of(R::SET)
            .await?
            .into_iter()
            .filter(|c| R::holds(c))
            .map(|c| {
                let r = c.record::<R>()?;
                Ok((c, r))
            })
            .collect()
    }

    /// The record of one unit of `R`'s set, if it is committed.
    pub async fn record_of<R: records::Record>(&self, unit: &str) -> Result<Option<(Commit, R)>> {
        match self.commit_of(R::SET, unit).await? {
            Some(c) => {
                let r = c.record::<R>()?;
                Ok(Some((c, r)))
            }
            None => Ok(None),
        }
    }

    /// The candidate units (`unit@generation`) that finished dino runs covered: every image
    /// of those units has a DINOv2 vector (or a `dino_errors` row).
    pub async fn dino_covered(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .records::<records::DinoCommit>()
            .await?
            .into_iter()
            .flat_map(|(_, r)| r.candidates)
            .collect())
    }

    /// A writer of `table`'s data objects named after `stem`, of bounded size.
    pub fn writer(
        &self,
        table: &TableDef,
        stem: &str,
        schema: arrow::datatypes::SchemaRef,
        params: WriteParams,
    ) -> Result<TableWriter> {
        TableWriter::new(&self.root, &format!("{}/{stem}", table.dir), schema, params)
    }

    /// Makes a commit visible (written last, after its data objects). A whole-table commit
    /// replaces the previous one, whose objects the new one does not name are then deleted.
    pub async fn commit(&self, set: CommitSet, commit: &Commit) -> Result<()> {
        let rel = set.path_of(&commit.unit);
        let previous = match set {
            CommitSet::Single(_) => self.read_commit(&rel, false).await?,
            CommitSet::Units(_) => None,
        };
        self.root.put_json(&rel, commit).await?;
        if let Some(previous) = previous {
            let keep: BTreeSet<&str> = commit
                .tables
                .values()
                .flatten()
                .map(|o| o.path.as_str())
                .collect();
            for def in TABLES.iter().filter(|t| t.commits == set) {
                for old in previous.objects(def) {
                    if !keep.contains(old.path.as_str()) {
                        self.delete(&old.path).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes a unit commit visible unless the unit is committed already (a conditional put):
    /// false when another process committed it first. Claiming workers commit this way, so a
    /// unit is done once even when a lease expired under a slow holder.
    pub async fn commit_once(&self, set: CommitSet, commit: &Commit) -> Result<bool> {
        let CommitSet::Units(_) = set else {
            return Err(Error::Internal(
                "commit_once is for commit sets of units".into(),
            ));
        };
        let path = self.root.path(&set.path_of(&commit.unit));
        let json = serde_json::to_vec_pretty(commit).map_err(|e| Error::Internal(e.to_string()))?;
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .root
            .store
            .put_opts(&path, PutPayload::from(json), create)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::storage(self.root.uri_of(&path), e)),
        }
    }

    /// Deletes the data objects of a commit that was never made visible.
    pub async fn discard(&self, commit: &Commit) {
        for path in commit.tables.values().flatten().map(|o| o.path.clone()) {
            self.delete(&path).await;
        }
    }

    /// Withdraws the commits of `set` for which `stale` holds (the set's former whole-table
    /// commit is unit `""`), then deletes their data objects that no remaining commit names.
    /// Returns how many commits were withdrawn.
    pub async fn retract(&self, set: CommitSet, stale: impl Fn(&Commit) -> bool) -> Result<usize> {
        let (gone, kept): (Vec<Commit>, Vec<Commit>) =
            self.commits_of(set).await?.into_iter().partition(stale);
        let keep: BTreeSet<String> = kept
            .iter()
            .flat_map(|c| TABLES.iter().flat_map(|t| c.objects(t)))
            .map(|o| o.path)
            .collect();
        for commit in &gone {
            self.delete(&set.path_of(&commit.unit)).await;
        }
        for commit in &gone {
            for def in TABLES.iter().filter(|t| t.commits == set) {
                for old in commit.objects(def) {
                    if !keep.contains(&old.path) {
                        self.delete(&old.path).await;
                    }
                }
            }
        }
        Ok(gone.len())
    }

    /// Deletes one object; one already gone is fine, any other failure is logged (a left-over
    /// object that no commit names is never read).
    async fn delete(&self, rel: &str) {
        let path = self.root.path(rel);
        match self.root.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(object = %self.root.uri_of(&path), error = %e, "could not delete a replaced object")
            }
        }
    }

    /// Every table with committed data: rows, objects, commits and the latest generation.
    pub async fn list(&self) -> Result<Vec<TableStatus>> {
        let mut by_set: Vec<(CommitSet, Vec<Commit>)> = Vec::new();
        let mut out = Vec::new();
        for def in TABLES {
            if !by_set.iter().any(|(s, _)| *s == def.commits) {
                let commits = self.commits_of(def.commits).await?;
                by_set.push((def.commits, commits));
            }
            let commits = &by_set
                .iter()
                .find(|(s, _)| *s == def.commits)
                .expect("read above")
                .1;
            let mut status = TableStatus {
                name: def.name,
                rows: 0,
                objects: 0,
                commits: 0,
                generation: 0,
                about: def.about,
                paths: Vec::new(),
            };
            for c in commits {
                let objects = c.objects(def);
                if objects.is_empty() {
                    continue;
                }
                status.commits += 1;
                status.generation = status.generation.max(c.generation);
                for o in objects {
                    status.objects += 1;
                    status.paths.push(o.path.clone());
                    status.rows += match o.rows {
                        Some(n) => n,
                        None => io::object_rows(&self.root, &o.path).await?,
                    };
                }
            }
            if status.commits > 0 {
                out.push(status);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_commits_name_their_objects_where_their_stage_put_them() {
        let shard: Commit = serde_json::from_str(
            r#"{"shard":"a","id":"a-1","embeddings":"embeddings/a-1.parquet","errors":"errors/a-1.parquet","rows":3}"#,
        )
        .unwrap();
        assert_eq!(shard.generation, 0);
        assert_eq!(shard.objects(&EMBEDDINGS)[0].path, "embeddings/a-1.parquet");
        assert_eq!(shard.objects(&ERRORS)[0].path, "errors/a-1.parquet");
        let filter: Commit = serde_json::from_str(r#"{"pairs":2,"dino_max":0.6}"#).unwrap();
        assert_eq!(filter.objects(&PAIRS)[0].path, "pairs/pairs.parquet");
        // A new commit names only what it wrote.
        let new = Commit::new("u", 3, &serde_json::json!({"n": 1}))
            .unwrap()
            .with(
                &CANDIDATES,
                vec![DataObject {
                    path: "candidates/x.parquet".into(),
                    rows: Some(1),
                    blake3: None,
                }],
            );
        let back: Commit = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back.generation, 3);
        assert_eq!(back.info["n"], 1);
        assert!(back.objects(&PAIRS).is_empty());
        assert_eq!(back.objects(&CANDIDATES).len(), 1);
    }

    #[tokio::test]
    async fn generations_are_monotonic_and_filter_readers() {
        let root = Location::open("memory://catalog-gen/root").unwrap();
        let cat = Catalog::new(&root);
        let g1 = cat.begin("embed").await.unwrap();
        let g2 = cat.begin("embed").await.unwrap();
        assert_eq!((g1, g2), (1, 2));
        // Runs starting at once never share a number.
        let at_once: Vec<u64> = futures::future::try_join_all((0..8).map(|_| cat.begin("x")))
            .await
            .unwrap();
        let distinct: BTreeSet<u64> = at_once.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "{at_once:?}");
        assert!(distinct.iter().all(|g| *g > g2));
        for (unit, g) in [("a", g1), ("b", g2)] {
            let c = Commit::new(unit, g, &serde_json::json!({})).unwrap().with(
                &ERRORS,
                vec![DataObject {
                    path: format!("errors/{unit}.parquet"),
                    rows: Some(0),
                    blake3: None,
                }],
            );
            cat.commit(CommitSet::EMBED, &c).await.unwrap();
        }
        let all = cat.objects(&ERRORS, Generations::All).await.unwrap();
        assert_eq!(all.len(), 2);
        let after = cat.objects(&ERRORS, Generations::After(g1)).await.unwrap();
        assert_eq!(
            after,
            vec![DataObject {
                path: "errors/b.parquet".into(),
                rows: Some(0),
                blake3: None,
            }]
        );
        assert!(cat
            .objects(&EMBEDDINGS, Generations::All)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_whole_table_commit_deletes_what_it_replaces_and_nothing_else() {
        let root = Location::open("memory://catalog-replace/root").unwrap();
        let cat = Catalog::new(&root);
        let object = |path: &str| DataObject {
            path: path.into(),
            rows: Some(1),
            blake3: None,
        };
        for rel in [
            "eval/correlations/c.parquet",
            "eval/correlations/c.1.parquet",
        ] {
            root.put(rel, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let first = Commit::new("", 1, &serde_json::json!({})).unwrap().with(
            &CORRELATIONS,
            vec![
                object("eval/correlations/c.parquet"),
                object("eval/correlations/c.1.parquet"),
            ],
        );
        cat.commit(CommitSet::CORRELATE, &first).await.unwrap();
        let second = Commit::new("", 2, &serde_json::json!({}))
            .unwrap()
            .with(&CORRELATIONS, vec![object("eval/correlations/c.parquet")]);
        cat.commit(CommitSet::CORRELATE, &second).await.unwrap();
        let left: Vec<String> = root
            .list("eval/correlations")
            .await
            .unwrap()
            .iter()
            .map(|m| root.relative(&m.location))
            .collect();
        assert_eq!(left, ["eval/correlations/c.parquet"]);
        let now = cat.commits(&CORRELATIONS, Generations::All).await.unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].generation, 2);
    }

    #[tokio::test]
    async fn units_read_their_former_single_commit_until_it_is_retracted() {
        let root = Location::open("memory://catalog-retract/root").unwrap();
        let cat = Catalog::new(&root);
        for rel in [
            "candidates/candidates.parquet",
            "candidates/a.parquet",
            "candidates/b.parquet",
        ] {
            root.put(rel, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        // Before units, the whole table had one commit with no `tables` (legacy).
        root.put_json("_commits/candidates.json", &serde_json::json!({"pairs": 1}))
            .await
            .unwrap();
        for unit in ["a", "b"] {
            let c = Commit::new(unit, 2, &serde_json::json!({})).unwrap().with(
                &CANDIDATES,
                vec![DataObject {
                    path: format!("candidates/{unit}.parquet"),
                    rows: Some(1),
                    blake3: None,
                }],
            );
            cat.commit(CommitSet::CANDIDATES, &c).await.unwrap();
        }
        let units = |cs: Vec<Commit>| cs.into_iter().map(|c| c.unit).collect::<Vec<_>>();
        assert_eq!(
            units(cat.commits(&CANDIDATES, Generations::All).await.unwrap()),
            ["", "a", "b"]
        );
        let gone = cat
            .retract(CommitSet::CANDIDATES, |c| c.unit != "b")
            .await
            .unwrap();
        assert_eq!(gone, 2);
        assert_eq!(
            units(cat.commits(&CANDIDATES, Generations::All).await.unwrap()),
            ["b"]
        );
        let left: Vec<String> = root
            .list("candidates")
            .await
            .unwrap()
            .iter()
            .map(|m| root.relative(&m.location))
            .collect();
        assert_eq!(left, ["candidates/b.parquet"]);
    }
}
