//! The mining layout, shared by the partition stage (which writes it) and the candidates stage
//! (which reads it): the `cells` and `centroids` schemas, the partition commit's record, and
//! reading one cell's members.
//!
//! A `cells` object is cell-clustered: every row group holds rows of one cell only, so the
//! `cell` column's statistics in the footer say which row groups a cell has, and a cell is
//! read with range reads of just those groups (DuckDB or DataFusion prune the same way on
//! `WHERE cell = n`). A partition generation writes its own objects; a cell's members are the
//! union over the generations up to the one being mined.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, ListArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use ndarray::Array2;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::statistics::Statistics;

use super::join::Members;
use crate::error::{Error, Result};
use crate::storage::Location;
pub use crate::table::records::{PartitionCommit, UnitCell};
use crate::table::{self, io, Catalog, Commit, CommitSet};

/// The `cells` schema: the cell, whether this is the vector's home cell (else a guest copy),
/// the vector's home cell and, on home rows, the cells it is a guest of (which decide which cell
/// emits a pair, see `join::cell_pairs`), and the embedding row's key, content hash, CLIP
/// vector, uri and, when embed wrote one, DINOv2 vector (as stored in `embeddings`). The uri
/// and the DINOv2 vector ride along so that the filter of a cell finds everything its
/// candidates name in the cell's own row groups.
pub fn cells_schema(clip: &Field, dino: Option<&Field>) -> SchemaRef {
    let mut fields = vec![
        Field::new("cell", DataType::UInt32, false),
        Field::new("home", DataType::Boolean, false),
        Field::new("home_cell", DataType::UInt32, false),
        Field::new("guest_cells", guest_cells_type(), false),
        Field::new("key", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        clip.clone().with_name("clip"),
        Field::new("uri", DataType::Utf8, true),
    ];
    fields.extend(dino.map(|d| io::raw_vector_field("dino", d)));
    Arc::new(Schema::new(fields))
}

/// The columns `partition` copies from `embeddings` into `cells`, in schema order.
pub fn copied_columns(with_dino: bool) -> &'static [&'static str] {
    match with_dino {
        true => &["key", "content_hash", "clip", "uri", "dino"],
        false => &["key", "content_hash", "clip", "uri"],
    }
}

/// The type of `guest_cells`: a list of cell numbers.
pub fn guest_cells_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt32, false)))
}

/// The `centroids` schema: one unit f32 vector per cell.
pub fn centroids_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("cell", DataType::UInt32, false),
        table::schema::vector_field("centroid", table::schema::FloatType::F32, dim),
    ]))
}

/// The current layout of a run root: its centroids and the partition generations placed on
/// them, oldest first.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The generation that trained the centroids.
    pub layout: u64,
    /// Unit centroids, one row per cell.
    pub centroids: Array2<f32>,
    /// `(generation, record, commit)` of every partition generation, oldest first.
    pub generations: Vec<(u64, PartitionCommit, Commit)>,
}

impl Layout {
    /// The layout of `catalog`'s run root, if it was partitioned.
    pub async fn open(catalog: &Catalog) -> Result<Option<Layout>> {
        let mut generations = Vec::new();
        for commit in catalog.commits_of(CommitSet::PARTITION).await? {
            let record: PartitionCommit = commit.record()?;
            generations.push((commit.generation, record, commit));
        }
        generations.sort_by_key(|g| g.0);
        let Some(last) = generations.last() else {
            return Ok(None);
        };
        let layout = last.1.layout;
        if let Some(other) = generations.iter().find(|g| g.1.layout != layout) {
            return Err(Error::table(
                "cells",
                format!(
                    "partition generations {} and {} use different centroids; run `blindspot partition --retrain`",
                    other.0, last.0
                ),
            ));
        }
        let trained = generations
            .iter()
            .find(|g| !g.2.objects(&table::CENTROIDS).is_empty())
            .ok_or_else(|| Error::table("centroids", "no partition commit names the centroids"))?;
        let paths = trained
            .2
            .objects(&table::CENTROIDS)
            .into_iter()
            .map(|o| o.path)
            .collect();
        let dim = last.1.dim;
        let mut centroids = Array2::<f32>::zeros((last.1.cells, dim));
        let mut stream = io::scan_objects(
            catalog.root(),
            paths,
            &["cell", "centroid"],
            io::SCAN_BATCH_ROWS,
        );
        while let Some(batch) = stream.try_next().await? {
            let cells = u32s(&batch, "cell")?;
            let (flat, d) = io::vectors_flat(&batch, "centroid")?;
            for (i, cell) in cells.values().iter().enumerate() {
                let c = *cell as usize;
                if c >= centroids.nrows() || d != dim {
                    return Err(Error::table(
                        "centroids",
                        format!(
                            "cell {c} of dim {d} does not fit {} cells of dim {dim}",
                            centroids.nrows()
                        ),
                    ));
                }
                centroids
                    .row_mut(c)
                    .assign(&ndarray::ArrayView1::from(&flat[i * d..(i + 1) * d]));
            }
        }
        Ok(Some(Layout {
            layout,
            centroids,
            generations,
        }))
    }

    /// The record of the newest generation.
    pub fn latest(&self) -> &PartitionCommit {
        &self
            .generations
            .last()
            .expect("a layout has a generation")
            .1
    }

    /// Members of `cell` over generations up to `through` (home and guest rows).
    pub fn block_rows(&self, cell: usize, through: u64) -> u64 {
        self.generations
            .iter()
            .filter(|g| g.0 <= through)
            .filter_map(|g| g.1.cell_rows.get(cell))
            .map(|r| r[0] + r[1])
            .sum()
    }
}

fn u32s<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a UInt32Array> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or_else(|| Error::table("cells", format!("no u32 column {column}")))
}

/// One `cells` object: its footer and the row groups of each cell.
struct CellObject {
    path: String,
    generation: u64,
    metadata: ArrowReaderMetadata,
    groups: HashMap<u32, Vec<usize>>,
}

/// Reads the members of one cell at a time. Holds the footers of the `cells` objects (a few
/// bytes per row group) and never more than the one cell being read.
pub struct CellReader {
    root: Location,
    objects: Vec<CellObject>,
}

impl CellReader {
    /// Reads the footers of every `cells` object of `layout`.
    pub async fn open(root: &Location, layout: &Layout) -> Result<CellReader> {
        let mut objects = Vec::new();
        for (generation, _, commit) in &layout.generations {
            for object in commit.objects(&table::CELLS) {
                let metadata = io::object_metadata(root, &object.path).await?;
                let groups = cell_groups(&metadata, &object.path)?;
                objects.push(CellObject {
                    path: object.path,
                    generation: *generation,
                    metadata,
                    groups,
                });
            }
        }
        Ok(CellReader {
            root: root.clone(),
            objects,
        })
    }

    /// Streams the rows of `cell` placed by generations up to `through`, only `columns`, batch
    /// by batch into `f` with the URI of the object read (range reads of the cell's row
    /// groups; nothing is kept here). Objects
    /// that lack one of `columns` (written before it existed) are passed over; returns how
    /// many were.
    pub async fn for_each(
        &self,
        cell: u32,
        through: u64,
        columns: &[&str],
        mut f: impl FnMut(&RecordBatch, &str) -> Result<()>,
    ) -> Result<usize> {
        let mut lacking = 0;
        for object in self.objects.iter().filter(|o| o.generation <= through) {
            let Some(groups) = object.groups.get(&cell) else {
                continue;
            };
            let schema = object.metadata.schema();
            if columns.iter().any(|c| schema.index_of(c).is_err()) {
                lacking += 1;
                continue;
            }
            let mut stream = io::scan_row_groups(
                &self.root,
                &object.path,
                object.metadata.clone(),
                groups.clone(),
                columns,
            )
            .await?;
            let uri = self.root.uri_of(&self.root.path(&object.path));
            while let Some(batch) = stream.try_next().await? {
                f(&batch, &uri)?;
            }
        }
        Ok(lacking)
    }

    /// The uncompressed bytes of `column` in the row groups of `cell` placed by generations up
    /// to `through` (what gathering that column of the cell holds at most); `None` when an
    /// object lacks the column.
    pub fn column_bytes(&self, cell: u32, through: u64, column: &str) -> Option<u64> {
        let mut bytes = 0u64;
        for object in self.objects.iter().filter(|o| o.generation <= through) {
            let Some(groups) = object.groups.get(&cell) else {
                continue;
            };
            let meta = object.metadata.metadata();
            let index = meta
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .position(|c| c.path().parts().first().is_some_and(|p| p == column))?;
            bytes += groups
                .iter()
                .map(|&g| meta.row_group(g).column(index).uncompressed_size().max(0) as u64)
                .sum::<u64>();
        }
        Some(bytes)
    }

    /// The members of `cell` placed by generations up to `through`, and the compressed bytes
    /// of the row groups read.
    pub async fn read(&self, cell: u32, through: u64) -> Result<(Members, u64)> {
        let mut members = Members::default();
        let mut bytes = 0u64;
        for object in self.objects.iter().filter(|o| o.generation <= through) {
            let Some(groups) = object.groups.get(&cell) else {
                continue;
            };
            let meta = object.metadata.metadata();
            bytes += groups
                .iter()
                .map(|&g| meta.row_group(g).compressed_size().max(0) as u64)
                .sum::<u64>();
            // Where each group read starts in the object, to name a bad row.
            let starts: Vec<(usize, u64, u64)> = groups
                .iter()
                .map(|&g| {
                    let start: i64 = (0..g).map(|h| meta.row_group(h).num_rows()).sum();
                    (g, start as u64, meta.row_group(g).num_rows() as u64)
                })
                .collect();
            let mut read = 0u64;
            let mut stream = io::scan_row_groups(
                &self.root,
                &object.path,
                object.metadata.clone(),
                groups.clone(),
                &[
                    "home",
                    "home_cell",
                    "guest_cells",
                    "key",
                    "content_hash",
                    "clip",
                ],
            )
            .await?;
            while let Some(batch) = stream.try_next().await? {
                let (home, guest_cells) = placement_columns(&batch)?;
                let keys = io::strings(&batch, "key")?;
                let hashes = io::strings(&batch, "content_hash")?;
                let home_cell = u32s(&batch, "home_cell")?;
                let (flat, dim) = io::vectors_flat(&batch, "clip")?;
                if members.dim != 0 && members.dim != dim {
                    return Err(Error::table(
                        "cells",
                        format!("cell {cell} mixes dimensions {} and {dim}", members.dim),
                    ));
                }
                members.dim = dim;
                if let Some(i) = first_bad_vector(&flat, dim) {
                    let uri = self.root.uri_of(&self.root.path(&object.path));
                    return Err(bad_vector(
                        &uri,
                        cell,
                        &starts,
                        read,
                        &flat[i * dim..(i + 1) * dim],
                        i,
                    ));
                }
                read += batch.num_rows() as u64;
                for i in 0..batch.num_rows() {
                    members.keys.push(keys.value(i).to_string());
                    members.hashes.push(hashes.value(i).to_string());
                    members.home.push(home.value(i));
                    members.home_cell.push(home_cell.value(i));
                    let list = guest_cells.value(i);
                    let list = list
                        .as_any()
                        .downcast_ref::<UInt32Array>()
                        .ok_or_else(|| Error::table("cells", "guest_cells holds no u32"))?;
                    members.guest_cells.push(list.values().to_vec());
                    members.generations.push(object.generation);
                }
                members.data.extend_from_slice(&flat);
            }
        }
        Ok((members, bytes))
    }
}

/// How far a stored vector's norm may be from 1 (f16 storage rounds each value by 2^-11 of
/// itself at most, a norm by about 5e-4).
pub const NORM_TOLERANCE: f32 = 1e-2;

/// The first of the `dim`-long rows of `flat` that is not finite or not unit-norm.
pub fn first_bad_vector(flat: &[f32], dim: usize) -> Option<usize> {
    flat.chunks_exact(dim.max(1)).position(|v| {
        let norm2: f32 = v.iter().map(|x| x * x).sum();
        !(norm2.is_finite() && (norm2.sqrt() - 1.0).abs() <= NORM_TOLERANCE)
    })
}

/// Which row groups of an object hold each cell, from the `cell` column's statistics (the
/// writer puts one cell in a row group, so min equals max).
fn cell_groups(metadata: &ArrowReaderMetadata, path: &str) -> Result<HashMap<u32, Vec<usize>>> {
    let meta = metadata.metadata();
    let column = metadata
        .schema()
        .index_of("cell")
        .map_err(|_| Error::table("cells", format!("{path} has no cell column")))?;
    let mut out: HashMap<u32, Vec<usize>> = HashMap::new();
    for g in 0..meta.num_row_groups() {
        let group = meta.row_group(g);
        if group.num_rows() == 0 {
            continue;
        }
        let stats = group.column(column).statistics();
        let (min, max) = match stats {
            Some(Statistics::Int32(s)) => (s.min_opt().copied(), s.max_opt().copied()),
            _ => (None, None),
        };
        match (min, max) {
            (Some(a), Some(b)) if a == b => out.entry(a as u32).or_default().push(g),
            _ => {
                return Err(Error::table(
                    "cells",
                    format!("{path}: row group {g} is not one cell (min {min:?}, max {max:?}); run `blindspot partition --retrain`"),
                ))
            }
        }
    }
    Ok(out)
}

/// A `cells` batch's `home` and `guest_cells` columns.
fn placement_columns(batch: &RecordBatch) -> Result<(&BooleanArray, &ListArray)> {
    let home = batch
        .column_by_name("home")
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
        .ok_or_else(|| Error::table("cells", "no boolean column home"))?;
    let guest_cells = batch
        .column_by_name("guest_cells")
        .and_then(|c| c.as_any().downcast_ref::<ListArray>())
        .ok_or_else(|| Error::table("cells", "no list column guest_cells"))?;
    Ok((home, guest_cells))
}

/// The error for a damaged CLIP vector, `v`, at row `i` of a batch read after `read` rows of the
/// row groups `starts` ((group, first row, rows)) of the object at `uri`.
fn bad_vector(
    uri: &str,
    cell: u32,
    starts: &[(usize, u64, u64)],
    read: u64,
    v: &[f32],
    i: usize,
) -> Error {
    let (n, mut at) = (read + i as u64, None);
    let mut before = 0;
    for &(g, start, rows) in starts {
        if n < before + rows {
            at = Some((g, start + n - before));
            break;
        }
        before += rows;
    }
    let (g, row) = at.unwrap_or_default();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Error::table(
        "cells",
        format!(
            "{uri}: row {row} (row group {g}, cell {cell}) holds a CLIP vector that is not finite and unit-norm (norm {norm}): the object is damaged; re-run `blindspot partition --retrain` from the embeddings"
        ),
    )
}
