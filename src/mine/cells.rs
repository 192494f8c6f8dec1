//! The mining layout, shared by the partition stage (which writes it) and the candidates stage
//! (which reads it): the `cells`, `guests` and `centroids` schemas, the partition commit's
//! record, and reading one cell's members.
//!
//! Every vector is written once, in its home cell. A `cells` object is cell-clustered: every
//! row group holds rows of one cell only, so the `cell` column's statistics in the footer say
//! which row groups a cell has, and a cell's home rows are read with range reads of just those
//! groups (DuckDB or DataFusion prune the same way on `WHERE cell = n`). Within a row group the
//! rows are sorted by the cells they are a guest of, so the guests a cell takes from one
//! neighbour are a few runs of consecutive rows; the `guests` table lists those runs (cell,
//! home cell, object, first row, rows) and the reader fetches them by range, page by page (the
//! objects have small pages and an offset index). A partition generation writes its own
//! objects; a cell's members are the union over the generations up to the one being mined.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ListArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use ndarray::Array2;
use object_store::ObjectMeta;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::statistics::Statistics;

use super::join::Members;
use crate::error::{Error, Result};
use crate::storage::Location;
pub use crate::table::records::{PartitionCommit, UnitCell};
use crate::table::{self, io, Catalog, Commit, CommitSet};

/// Rows per data page of a `cells` object's vector columns: a guest run is read as the pages
/// it is on, so a page holds about as many rows as a short run (8 CLIP vectors of 768 f16 are
/// 12 KiB). The other columns' pages hold `io::SMALL_PAGE_FACTOR` times as many.
pub const PAGE_ROWS: usize = 8;

/// Rows per row group of a `guests` object (more for a very large generation, see
/// `guests::group_rows`): a cell's runs are read as the row groups whose cell range holds it.
pub const GUEST_GROUP_ROWS: usize = 4096;

/// The `cells` schema: the vector's home cell; the cells it is a guest of (which decide which
/// cell emits a pair, see `join::cell_pairs`); and the embedding row's key, content hash, CLIP
/// vector (its raw bytes, one binary per row: see `io::raw_vector_field`), uri and, when embed
/// wrote one, DINOv2 vector (raw too). The uri and the DINOv2 vector ride along so that the
/// filter of a cell finds everything its candidates name in the cell's home rows and the runs
/// of its guests.
pub fn cells_schema(clip: &Field, dino: Option<&Field>) -> SchemaRef {
    let mut fields = vec![
        Field::new("cell", DataType::UInt32, false),
        Field::new("guest_cells", guest_cells_type(), false),
        Field::new("key", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        io::raw_vector_field("clip", clip),
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

/// The `guests` schema: a run of `rows` consecutive home rows of `home_cell`, from row `first`
/// of the generation's `object`-th `cells` object (in its commit's order), that are guests of
/// `cell`. Sorted by cell.
pub fn guests_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("cell", DataType::UInt32, false),
        Field::new("home_cell", DataType::UInt32, false),
        Field::new("object", DataType::UInt32, false),
        Field::new("first", DataType::UInt64, false),
        Field::new("rows", DataType::UInt32, false),
    ]))
}

/// One run of the `guests` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestRun {
    /// The cell the rows are guests of.
    pub cell: u32,
    /// Their home cell.
    pub home_cell: u32,
    /// The generation's `cells` object they are in (its index in the commit).
    pub object: u32,
    /// The first row, in that object.
    pub first: u64,
    /// Rows.
    pub rows: u32,
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

    /// True when every generation lists its guests as runs of home rows (an older layout
    /// copied them into `cells`, which the reader no longer reads: partition places it again).
    pub fn in_place(&self) -> bool {
        self.generations.iter().all(|g| g.1.guests_in_place)
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

/// One `cells` object: where it is, its footer, the row groups of each cell and the first row
/// of each row group.
struct CellObject {
    path: String,
    meta: ObjectMeta,
    generation: u64,
    footer: ArrowReaderMetadata,
    groups: HashMap<u32, Vec<usize>>,
    starts: Vec<u64>,
    /// Written by an older layout, whose cell row groups hold guest copies beside the home rows
    /// (`home` column): `for_each` still reads them, `read` asks for the cells to be placed
    /// again.
    copies: bool,
}

impl CellObject {
    /// The row ranges of `cell`'s row groups.
    fn home_ranges(&self, cell: u32) -> Vec<Range<u64>> {
        let meta = self.footer.metadata();
        self.groups.get(&cell).map_or_else(Vec::new, |groups| {
            groups
                .iter()
                .map(|&g| self.starts[g]..self.starts[g] + meta.row_group(g).num_rows() as u64)
                .collect()
        })
    }

    fn uri(&self, root: &Location) -> String {
        root.uri_of(&root.path(&self.path))
    }

    /// Rows in the object.
    fn rows(&self) -> u64 {
        self.footer.metadata().file_metadata().num_rows().max(0) as u64
    }
}

/// One `guests` object: its generation, the `cells` objects its runs index (positions in
/// `CellReader::objects`), and its footer, whose `cell` statistics say which row groups hold a
/// cell's runs.
struct GuestObject {
    path: String,
    generation: u64,
    cells_objects: Vec<usize>,
    footer: ArrowReaderMetadata,
}

/// Rows of one read, from one `cells` object: home rows (`home_cell: None`) or guest runs.
struct Part {
    object: usize,
    ranges: Vec<Range<u64>>,
    /// For guest runs, the home cell of each range.
    home_cells: Option<Vec<u32>>,
}

/// Offset indexes (a few bytes per page) kept for guest reads, of this many `cells` objects at
/// most (the most recently used): about 1 MiB each for a full object of 768-d CLIP.
const PAGED_OBJECTS: usize = 32;

/// Reads the members of one cell at a time. Holds the footers of the `cells` and `guests`
/// objects, the offset indexes of at most `PAGED_OBJECTS` objects, and never more than the one
/// cell being read.
pub struct CellReader {
    root: Location,
    objects: Vec<CellObject>,
    /// `(object, footer with its offset index)`, most recently used last.
    paged: std::sync::Mutex<std::collections::VecDeque<(usize, ArrowReaderMetadata)>>,
    guests: Vec<GuestObject>,
    /// Per generation that reads guests in place: guest placements per cell, for
    /// `column_bytes`.
    guest_rows: Vec<(u64, Vec<u64>)>,
}

impl CellReader {
    /// Reads the footers of every `cells` and `guests` object of `layout`.
    pub async fn open(root: &Location, layout: &Layout) -> Result<CellReader> {
        let mut objects = Vec::new();
        let mut guests = Vec::new();
        for (generation, _, commit) in &layout.generations {
            let first = objects.len();
            for object in commit.objects(&table::CELLS) {
                let (meta, footer) = io::metadata_at(root, &object.path).await?;
                let groups = cell_groups(&footer, &object.path)?;
                let copies = footer.schema().index_of("home").is_ok();
                let mut starts = Vec::new();
                let mut at = 0u64;
                for g in footer.metadata().row_groups() {
                    starts.push(at);
                    at += g.num_rows().max(0) as u64;
                }
                objects.push(CellObject {
                    path: object.path,
                    meta,
                    generation: *generation,
                    footer,
                    groups,
                    starts,
                    copies,
                });
            }
            for object in commit.objects(&table::GUESTS) {
                guests.push(GuestObject {
                    footer: io::object_metadata(root, &object.path).await?,
                    path: object.path,
                    generation: *generation,
                    cells_objects: (first..objects.len()).collect(),
                });
            }
        }
        // An older generation's guests are copies inside its cells' row groups, counted there.
        let guest_rows = layout
            .generations
            .iter()
            .filter(|(_, r, _)| r.guests_in_place)
            .map(|(g, r, _)| (*g, r.cell_rows.iter().map(|c| c[1]).collect()))
            .collect();
        Ok(CellReader {
            root: root.clone(),
            objects,
            paged: Default::default(),
            guests,
            guest_rows,
        })
    }

    /// The runs of guests of `cell` listed by generations up to `through`, as parts to read:
    /// one per `cells` object, ranges in row order.
    async fn guest_parts(&self, cell: u32, through: u64) -> Result<Vec<Part>> {
        let mut by_object: HashMap<usize, Vec<(u64, u32, u32)>> = HashMap::new();
        for object in self.guests.iter().filter(|o| o.generation <= through) {
            let groups = groups_holding(&object.footer, cell);
            if groups.is_empty() {
                continue;
            }
            let mut stream = io::scan_row_groups(
                &self.root,
                &object.path,
                object.footer.clone(),
                groups,
                &["cell", "home_cell", "object", "first", "rows"],
            )
            .await?;
            let uri = self.root.uri_of(&self.root.path(&object.path));
            while let Some(batch) = stream.try_next().await? {
                let (cells, homes, objects, rows) = (
                    u32s(&batch, "cell")?,
                    u32s(&batch, "home_cell")?,
                    u32s(&batch, "object")?,
                    u32s(&batch, "rows")?,
                );
                let firsts = batch
                    .column_by_name("first")
                    .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                    .ok_or_else(|| Error::table("guests", format!("{uri}: no u64 column first")))?;
                for i in (0..batch.num_rows()).filter(|&i| cells.value(i) == cell) {
                    let at = object.cells_objects.get(objects.value(i) as usize);
                    let end = firsts.value(i).checked_add(rows.value(i) as u64);
                    let Some(&at) =
                        at.filter(|&&at| end.is_some_and(|end| end <= self.objects[at].rows()))
                    else {
                        return Err(Error::table(
                            "guests",
                            format!(
                                "{uri}: a run of cell {cell} names rows {}..+{} of cells object {}, which the generation does not have: the object is damaged; run `blindspot partition --retrain`",
                                firsts.value(i),
                                rows.value(i),
                                objects.value(i)
                            ),
                        ));
                    };
                    by_object.entry(at).or_default().push((
                        firsts.value(i),
                        rows.value(i),
                        homes.value(i),
                    ));
                }
            }
        }
        let mut parts: Vec<Part> = Vec::new();
        for (object, mut runs) in by_object {
            runs.sort_unstable();
            // A row is a guest of a cell once: runs that overlap are damage, not a read.
            if let Some(w) = runs.windows(2).find(|w| w[0].0 + w[0].1 as u64 > w[1].0) {
                let uri = self.objects[object].uri(&self.root);
                return Err(Error::table(
                    "guests",
                    format!(
                        "runs of cell {cell} overlap in {uri} (rows {}..+{} and {}..+{}): the guests table is damaged; run `blindspot partition --retrain`",
                        w[0].0, w[0].1, w[1].0, w[1].1
                    ),
                ));
            }
            parts.push(Part {
                object,
                ranges: runs.iter().map(|r| r.0..r.0 + r.1 as u64).collect(),
                home_cells: Some(runs.iter().map(|r| r.2).collect()),
            });
        }
        parts.sort_by_key(|p| p.object);
        Ok(parts)
    }

    /// Home rows of `cell` (generations up to `through`), then its guest runs.
    async fn parts(&self, cell: u32, through: u64) -> Result<Vec<Part>> {
        let mut parts: Vec<Part> = self
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.generation <= through)
            .map(|(object, o)| Part {
                object,
                ranges: o.home_ranges(cell),
                home_cells: None,
            })
            .filter(|p| !p.ranges.is_empty())
            .collect();
        parts.extend(self.guest_parts(cell, through).await?);
        Ok(parts)
    }

    /// The footer of `object` with its offset index, from the last `PAGED_OBJECTS` used or read.
    async fn paged(&self, object: usize) -> Result<ArrowReaderMetadata> {
        let cached = {
            let mut paged = self.paged.lock().expect("not poisoned");
            let at = paged.iter().position(|p| p.0 == object);
            at.and_then(|i| paged.remove(i))
        };
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let o = &self.objects[object];
                let footer = io::with_offset_index(&self.root.store, &o.meta, &o.footer).await?;
                (object, footer)
            }
        };
        let footer = entry.1.clone();
        let mut paged = self.paged.lock().expect("not poisoned");
        paged.push_back(entry);
        while paged.len() > PAGED_OBJECTS {
            paged.pop_front();
        }
        Ok(footer)
    }

    /// Streams the rows of `part`, only `columns`, batch by batch into `f` with each row's home
    /// cell (`None` for home rows). Home rows are whole row groups; guest runs are read by page.
    async fn read_part(
        &self,
        part: &Part,
        columns: &[&str],
        mut f: impl FnMut(&RecordBatch, &dyn Fn(usize) -> Option<u32>) -> Result<()>,
    ) -> Result<()> {
        let o = &self.objects[part.object];
        let footer = match part.home_cells {
            Some(_) => self.paged(part.object).await?,
            None => o.footer.clone(),
        };
        let mut stream = io::scan_rows_at(
            &self.root.store,
            &o.meta,
            footer,
            &part.ranges,
            columns,
            io::SCAN_BATCH_ROWS,
        )?;
        // Rows come in row order: the home cell of each is its range's.
        let mut homes: Vec<u32> = Vec::new();
        if let Some(cells) = &part.home_cells {
            for (r, &h) in part.ranges.iter().zip(cells) {
                homes.extend(std::iter::repeat_n(h, (r.end - r.start) as usize));
            }
        }
        let mut read = 0usize;
        while let Some(batch) = stream.try_next().await? {
            let base = read;
            let home_of = |i: usize| homes.get(base + i).copied();
            f(&batch, &home_of)?;
            read += batch.num_rows();
        }
        Ok(())
    }

    /// Streams the rows of `cell` (its home rows and its guests) placed by generations up to
    /// `through`, only `columns`, batch by batch into `f` with the URI of the object read (range
    /// reads; nothing is kept here). Objects that lack one of `columns` (written before it
    /// existed) are passed over; returns how many were.
    pub async fn for_each(
        &self,
        cell: u32,
        through: u64,
        columns: &[&str],
        mut f: impl FnMut(&RecordBatch, &str) -> Result<()>,
    ) -> Result<usize> {
        let mut lacking = 0;
        for part in self.parts(cell, through).await? {
            let o = &self.objects[part.object];
            if columns
                .iter()
                .any(|c| o.footer.schema().index_of(c).is_err())
            {
                lacking += 1;
                continue;
            }
            let uri = o.uri(&self.root);
            self.read_part(&part, columns, |batch, _| f(batch, &uri))
                .await?;
        }
        Ok(lacking)
    }

    /// About the uncompressed bytes of `column` in the rows of `cell` placed by generations up
    /// to `through` (what gathering that column of the cell holds at most): its home row groups,
    /// and its guests at the column's mean bytes per row; `None` when an object lacks the
    /// column.
    pub fn column_bytes(&self, cell: u32, through: u64, column: &str) -> Option<u64> {
        let (mut bytes, mut all_bytes, mut all_rows) = (0u64, 0u64, 0u64);
        for object in self.objects.iter().filter(|o| o.generation <= through) {
            let meta = object.footer.metadata();
            let index = meta
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .position(|c| c.path().parts().first().is_some_and(|p| p == column))?;
            let size = |g: usize| meta.row_group(g).column(index).uncompressed_size().max(0) as u64;
            all_bytes += (0..meta.num_row_groups()).map(size).sum::<u64>();
            all_rows += object.rows();
            if let Some(groups) = object.groups.get(&cell) {
                bytes += groups.iter().map(|&g| size(g)).sum::<u64>();
            }
        }
        let guests: u64 = self
            .guest_rows
            .iter()
            .filter(|(g, _)| *g <= through)
            .filter_map(|(_, rows)| rows.get(cell as usize))
            .sum();
        Some(bytes + (guests * all_bytes).div_ceil(all_rows.max(1)))
    }

    /// The members of `cell` placed by generations up to `through`.
    pub async fn read(&self, cell: u32, through: u64) -> Result<Members> {
        let mut members = Members::default();
        for part in self.parts(cell, through).await? {
            let o = &self.objects[part.object];
            let uri = o.uri(&self.root);
            if o.copies {
                let root = &self.root.url;
                return Err(Error::Usage(format!(
                    "{uri} was written by an older blindspot that copied guests into the cells; run `blindspot partition --root {root}` to place them again (on the same centroids), then candidates"
                )));
            }
            let mut at = 0usize;
            let columns = ["cell", "guest_cells", "key", "content_hash", "clip"];
            self.read_part(&part, &columns, |batch, home_of| {
                let (flat, dim) = io::vectors_flat(batch, "clip")?;
                if members.dim != 0 && members.dim != dim {
                    return Err(Error::table(
                        "cells",
                        format!("cell {cell} mixes dimensions {} and {dim}", members.dim),
                    ));
                }
                members.dim = dim;
                if let Some(i) = first_bad_vector(&flat, dim) {
                    let row = row_of(&part.ranges, at + i);
                    return Err(bad_vector(&uri, cell, row, &flat[i * dim..(i + 1) * dim]));
                }
                let rows = |i: usize| row_of(&part.ranges, at + i);
                push_members(&mut members, batch, cell, home_of, o.generation)
                    .map_err(|(i, what)| misplaced(&uri, rows(i), cell, &what))?;
                at += batch.num_rows();
                members.data.extend_from_slice(&flat);
                Ok(())
            })
            .await?;
        }
        Ok(members)
    }
}

/// Appends a batch's rows to `members`: home rows of `cell` where `home_of` gives `None`,
/// else guests homed where it says. Each row must be what the read took it for: homed in its
/// cell, and a guest of `cell` when read as one; else `(row in the batch, what it is)`.
fn push_members(
    members: &mut Members,
    batch: &RecordBatch,
    cell: u32,
    home_of: &dyn Fn(usize) -> Option<u32>,
    generation: u64,
) -> std::result::Result<(), (usize, String)> {
    let columns = || -> Result<_> {
        let guest_cells = batch
            .column_by_name("guest_cells")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| Error::table("cells", "no list column guest_cells"))?;
        let values = guest_cells
            .values()
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| Error::table("cells", "guest_cells holds no u32"))?;
        let (keys, hashes) = (
            io::strings(batch, "key")?,
            io::strings(batch, "content_hash")?,
        );
        Ok((u32s(batch, "cell")?, guest_cells, values, keys, hashes))
    };
    let (cells, lists, values, keys, hashes) = columns().map_err(|e| (0, e.to_string()))?;
    let offsets = lists.value_offsets();
    for i in 0..batch.num_rows() {
        let guest_of = &values.values()[offsets[i] as usize..offsets[i + 1] as usize];
        let home = home_of(i);
        let stored = cells.value(i);
        if stored != home.unwrap_or(cell) || home.is_some_and(|_| !guest_of.contains(&cell)) {
            let read_as = match home {
                Some(h) => format!("a guest of cell {cell} homed in {h}"),
                None => "a home row".to_string(),
            };
            return Err((
                i,
                format!("read as {read_as}, it is homed in {stored} and a guest of {guest_of:?}"),
            ));
        }
        members.keys.push(keys.value(i).to_string());
        members.hashes.push(hashes.value(i).to_string());
        members.home.push(home.is_none());
        members.home_cell.push(stored);
        members.guest_cells.push(match home {
            Some(_) => Vec::new(),
            None => guest_of.to_vec(),
        });
        members.generations.push(generation);
    }
    Ok(())
}

/// The error for a row that is not what the `guests` table or the footer said it is.
fn misplaced(uri: &str, row: u64, cell: u32, what: &str) -> Error {
    Error::table(
        "cells",
        format!(
            "{uri}: row {row}, read for cell {cell}, is not where the layout puts it ({what}): the cells or guests objects are damaged; run `blindspot partition --retrain`"
        ),
    )
}

/// The row of the object that is the `n`-th row read from `ranges`.
fn row_of(ranges: &[Range<u64>], mut n: usize) -> u64 {
    for r in ranges {
        let len = (r.end - r.start) as usize;
        if n < len {
            return r.start + n as u64;
        }
        n -= len;
    }
    0
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

/// The `(min, max)` of an integer column's statistics in row group `g`.
fn int_range(footer: &ArrowReaderMetadata, column: usize, g: usize) -> (Option<i32>, Option<i32>) {
    match footer.metadata().row_group(g).column(column).statistics() {
        Some(Statistics::Int32(s)) => (s.min_opt().copied(), s.max_opt().copied()),
        _ => (None, None),
    }
}

/// Which row groups of an object hold each cell, from the `cell` column's statistics (the
/// writer puts one cell in a row group, so min equals max).
fn cell_groups(footer: &ArrowReaderMetadata, path: &str) -> Result<HashMap<u32, Vec<usize>>> {
    let meta = footer.metadata();
    let column = footer
        .schema()
        .index_of("cell")
        .map_err(|_| Error::table("cells", format!("{path} has no cell column")))?;
    let mut out: HashMap<u32, Vec<usize>> = HashMap::new();
    for g in 0..meta.num_row_groups() {
        if meta.row_group(g).num_rows() == 0 {
            continue;
        }
        match int_range(footer, column, g) {
            (Some(a), Some(b)) if a == b => out.entry(a as u32).or_default().push(g),
            (min, max) => {
                return Err(Error::table(
                    "cells",
                    format!("{path}: row group {g} is not one cell (min {min:?}, max {max:?}); run `blindspot partition --retrain`"),
                ))
            }
        }
    }
    Ok(out)
}

/// The row groups of a `guests` object whose cell range holds `cell` (all of them when a
/// group has no statistics).
fn groups_holding(footer: &ArrowReaderMetadata, cell: u32) -> Vec<usize> {
    let Ok(column) = footer.schema().index_of("cell") else {
        return Vec::new();
    };
    (0..footer.metadata().num_row_groups())
        .filter(|&g| match int_range(footer, column, g) {
            (Some(a), Some(b)) => (a as u32..=b as u32).contains(&cell),
            _ => true,
        })
        .collect()
}

/// The error for a damaged CLIP vector `v` at `row` of the object at `uri`.
fn bad_vector(uri: &str, cell: u32, row: u64, v: &[f32]) -> Error {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Error::table(
        "cells",
        format!(
            "{uri}: row {row} (cell {cell}) holds a CLIP vector that is not finite and unit-norm (norm {norm}): the object is damaged; re-run `blindspot partition --retrain` from the embeddings"
        ),
    )
}
