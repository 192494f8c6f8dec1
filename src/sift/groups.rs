//! The near-duplicate groups: connected components of the near-duplicate edges that every
//! filter unit wrote (`dup_edges`, candidates at or above `--dup-min` in DINOv2 similarity:
//! the same picture, re-encoded, resized or watermarked). Written as the `groups` table, one
//! row per grouped image: key, group (0 is the largest; ties by representative), size and
//! representative (the group's smallest key). Images in no group are left out: a group of one.
//!
//! Units write a spanning forest of their own edges, so the edges read here number fewer than
//! the grouped images times the cells an image is placed in. Memory is bounded by the grouped
//! images: each key becomes a 128-bit hash (BLAKE3) mapped to a dense u32 for the union-find,
//! about 60 bytes per grouped image (strings are never held, except one representative per
//! group). The edges are read three times (union, representatives, rows).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use futures::TryStreamExt;
use petgraph::unionfind::UnionFind;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::stage::Stage;
pub use crate::table::records::GroupsCommit;
use crate::table::records::UnitId;
use crate::table::{self, io, schema, Catalog, Commit, CommitSet, WriteParams};

/// Rows per written batch of `groups`.
const BATCH: usize = 64 * 1024;

/// What building the groups did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupsSummary {
    /// Groups.
    pub groups: u64,
    /// Images in a group.
    pub grouped: u64,
    /// Members of the largest group.
    pub largest: u64,
    /// Edges read.
    pub edges: u64,
    /// False when the table was already built from the same filter units.
    pub rebuilt: bool,
    /// Wall time.
    pub seconds: f64,
}

/// A key's id for the union-find: its 128-bit BLAKE3 hash (a collision among 10^12 keys has
/// probability below 10^-14).
fn id_of(key: &str) -> u128 {
    let h = blake3::hash(key.as_bytes());
    u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
}

/// Builds `groups` from the `dup_edges` of the filter commits `units` (`unit@generation` each),
/// unless the current table was built from the same ones (with the run's `generation`, or a
/// new one).
pub async fn build(
    catalog: &Catalog,
    units: &[String],
    dup_min: f32,
    generation: Option<u64>,
) -> Result<GroupsSummary> {
    let started = Instant::now();
    let mut sorted = units.to_vec();
    sorted.sort();
    let covers = blake3::hash(format!("{dup_min:?}\n{}", sorted.join("\n")).as_bytes())
        .to_hex()
        .to_string();
    if let Some(c) = catalog.commits_of(CommitSet::GROUPS).await?.first() {
        if let Ok(r) = c.record::<GroupsCommit>() {
            if r.covers == covers {
                return Ok(GroupsSummary {
                    groups: r.groups,
                    grouped: r.grouped,
                    largest: r.largest,
                    edges: r.edges,
                    rebuilt: false,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
    }
    let generation = match generation {
        Some(g) => g,
        None => catalog.begin(Stage::Groups.name()).await?,
    };
    let paths: Vec<String> = catalog
        .commits_of(CommitSet::FILTER)
        .await?
        .iter()
        .filter(|c| sorted.binary_search(&c.cited()).is_ok())
        .flat_map(|c| c.objects(&table::DUP_EDGES))
        .map(|o| o.path)
        .collect();
    let edges = Edges { catalog, paths };
    // Three passes over the edges: union, representatives, rows.
    let mut groups = Components::union(&edges).await?;
    groups.representatives(&edges).await?;
    let objects = groups.write(&edges, generation).await?;
    let record = GroupsCommit {
        covers,
        dup_min,
        groups: groups.roots.len() as u64,
        grouped: groups.labels.len() as u64,
        largest: groups
            .roots
            .first()
            .map(|r| groups.size[*r as usize])
            .unwrap_or(0),
        edges: groups.edges,
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new("", generation, &record)?.with(&table::GROUPS, objects);
    catalog.commit(CommitSet::GROUPS, &commit).await?;
    Ok(GroupsSummary {
        groups: record.groups,
        grouped: record.grouped,
        largest: record.largest,
        edges: record.edges,
        rebuilt: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The near-duplicate edges of the covered filter units, streamed as often as needed.
struct Edges<'a> {
    catalog: &'a Catalog,
    paths: Vec<String>,
}

impl Edges<'_> {
    fn stream(&self) -> io::BatchStream {
        io::scan_objects(
            self.catalog.root(),
            self.paths.clone(),
            &["a", "b"],
            io::SCAN_BATCH_ROWS,
        )
    }

    /// A batch's two key columns.
    fn keys(b: &RecordBatch) -> Result<(StringArray, StringArray)> {
        let col = |n: &str| -> Result<StringArray> {
            let c = b
                .column_by_name(n)
                .ok_or_else(|| Error::table(table::DUP_EDGES.name, format!("no column {n}")))?;
            let c = arrow::compute::cast(c, &DataType::Utf8)
                .map_err(|e| Error::table(table::DUP_EDGES.name, e))?;
            Ok(c.as_string::<i32>().clone())
        };
        Ok((col("a")?, col("b")?))
    }
}

/// The connected components of the edges: each key's set, each set's size and smallest key,
/// and the sets in group order (largest first).
struct Components {
    ids: HashMap<u128, u32>,
    labels: Vec<u32>,
    size: Vec<u64>,
    rep: HashMap<u32, String>,
    roots: Vec<u32>,
    edges: u64,
}

impl Components {
    /// Pass 1: union every edge.
    async fn union(edges: &Edges<'_>) -> Result<Components> {
        let mut ids: HashMap<u128, u32> = HashMap::new();
        let mut uf: UnionFind<u32> = UnionFind::new_empty();
        let mut n_edges = 0u64;
        let mut stream = edges.stream();
        while let Some(batch) = stream.try_next().await? {
            let (a, b) = Edges::keys(&batch)?;
            for i in 0..batch.num_rows() {
                if a.is_null(i) || b.is_null(i) {
                    continue;
                }
                let mut id = |k: &str| *ids.entry(id_of(k)).or_insert_with(|| uf.new_set());
                let (x, y) = (id(a.value(i)), id(b.value(i)));
                uf.union(x, y);
                n_edges += 1;
            }
        }
        let labels = uf.into_labeling();
        let mut size = vec![0u64; labels.len()];
        for l in &labels {
            size[*l as usize] += 1;
        }
        Ok(Components {
            ids,
            labels,
            size,
            rep: HashMap::new(),
            roots: Vec::new(),
            edges: n_edges,
        })
    }

    /// Pass 2: each group's representative (its smallest key), and the groups in order.
    async fn representatives(&mut self, edges: &Edges<'_>) -> Result<()> {
        let mut stream = edges.stream();
        while let Some(batch) = stream.try_next().await? {
            let (a, b) = Edges::keys(&batch)?;
            for k in a.iter().chain(b.iter()).flatten() {
                let root = self.labels[self.ids[&id_of(k)] as usize];
                match self.rep.get_mut(&root) {
                    Some(r) if r.as_str() <= k => {}
                    Some(r) => *r = k.to_string(),
                    None => {
                        self.rep.insert(root, k.to_string());
                    }
                }
            }
        }
        let mut roots: Vec<u32> = self.rep.keys().copied().collect();
        roots.sort_by(|x, y| {
            self.size[*y as usize]
                .cmp(&self.size[*x as usize])
                .then_with(|| self.rep[x].cmp(&self.rep[y]))
        });
        self.roots = roots;
        Ok(())
    }

    /// Pass 3: the rows, each grouped key once, written as `generation`'s object.
    async fn write(&self, edges: &Edges<'_>, generation: u64) -> Result<Vec<table::DataObject>> {
        let group_of: HashMap<u32, i64> = self
            .roots
            .iter()
            .enumerate()
            .map(|(g, r)| (*r, g as i64))
            .collect();
        let mut seen = vec![false; self.labels.len()];
        let mut w = edges.catalog.writer(
            &table::GROUPS,
            &UnitId::generation(generation),
            schema::groups(),
            WriteParams::default(),
        )?;
        let mut rows: Rows = Default::default();
        let mut stream = edges.stream();
        while let Some(batch) = stream.try_next().await? {
            let (a, b) = Edges::keys(&batch)?;
            for k in a.iter().chain(b.iter()).flatten() {
                let id = self.ids[&id_of(k)] as usize;
                if std::mem::replace(&mut seen[id], true) {
                    continue;
                }
                let root = self.labels[id];
                rows.0.push(k.to_string());
                rows.1.push(group_of[&root]);
                rows.2.push(self.size[root as usize] as i64);
                rows.3.push(self.rep[&root].clone());
                if rows.0.len() >= BATCH {
                    w.write(&flush(&mut rows)?).await?;
                }
            }
        }
        w.write(&flush(&mut rows)?).await?;
        w.finish().await
    }
}

/// `groups` rows on their way: keys, groups, sizes, representatives.
type Rows = (Vec<String>, Vec<i64>, Vec<i64>, Vec<String>);

/// The rows as a batch, leaving `rows` empty.
fn flush(rows: &mut Rows) -> Result<RecordBatch> {
    let (k, g, s, r) = std::mem::take(rows);
    RecordBatch::try_new(
        schema::groups(),
        vec![
            Arc::new(StringArray::from(k)),
            Arc::new(Int64Array::from(g)),
            Arc::new(Int64Array::from(s)),
            Arc::new(StringArray::from(r)),
        ],
    )
    .map_err(|e| Error::table(table::GROUPS.name, e))
}
