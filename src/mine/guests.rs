//! The `guests` table's runs while `partition` writes a generation: held in memory up to a
//! bound, spilled to scratch objects past it, and written sorted by cell at the end (an
//! external sort on DataFusion when they were spilled), so that partition's memory does not
//! grow with the corpus. A run is 24 bytes; a generation of two billion vectors at probe 2
//! makes about 900 million of them.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::cells::{self, GuestRun};
use crate::error::{Error, Result};
use crate::storage::Location;
use crate::table::records::UnitId;
use crate::table::{self, io, DataObject, TableWriter, WriteParams};

/// Memory the external sort of spilled runs may use before it spills to disk itself.
const SORT_MEMORY: usize = 256 << 20;

/// Row groups of a generation's `guests` table at most: past `cells::GUEST_GROUP_ROWS` x this
/// many runs, the groups grow instead, so that the footers a reader holds stay small (a few MiB
/// however large the generation).
const MAX_GUEST_GROUPS: u64 = 4096;

/// Where partition keeps what it spills (guest runs, rows to sort by cell) until the
/// generation is written.
pub(super) const SCRATCH: &str = "_tmp/partition";

/// The runs of one generation being placed.
pub struct GuestRuns {
    root: Location,
    generation: u64,
    held: Vec<GuestRun>,
    /// Runs held before they are spilled.
    hold: usize,
    scratch: Option<TableWriter>,
    count: u64,
}

impl GuestRuns {
    /// Runs of generation `generation` of `root`, at most `hold` of them in memory.
    pub fn new(root: &Location, generation: u64, hold: usize) -> GuestRuns {
        GuestRuns {
            root: root.clone(),
            generation,
            held: Vec::new(),
            hold: hold.max(1),
            scratch: None,
            count: 0,
        }
    }

    /// Runs so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds runs, spilling what is held once it reaches the bound.
    pub async fn push(&mut self, runs: impl IntoIterator<Item = GuestRun>) -> Result<()> {
        let before = self.held.len();
        self.held.extend(runs);
        self.count += (self.held.len() - before) as u64;
        if self.held.len() >= self.hold {
            self.spill().await?;
        }
        Ok(())
    }

    async fn spill(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        if self.scratch.is_none() {
            let base = format!("{SCRATCH}/{}/runs", UnitId::generation(self.generation));
            let params = WriteParams {
                fast: true,
                ..WriteParams::default()
            };
            self.scratch = Some(TableWriter::new(
                &self.root,
                &base,
                cells::guests_schema(),
                params,
            )?);
        }
        let batch = batch_of(&self.held)?;
        self.scratch
            .as_mut()
            .expect("opened above")
            .write(&batch)
            .await?;
        self.held.clear();
        Ok(())
    }

    /// Writes the generation's `guests` table, sorted by cell (then home cell, object and
    /// row), in row groups of `cells::GUEST_GROUP_ROWS` (more for a generation of more than
    /// `MAX_GUEST_GROUPS` such groups); deletes the scratch objects.
    pub async fn write(mut self) -> Result<Vec<DataObject>> {
        let base = format!(
            "{}/{}/guests",
            table::GUESTS.dir,
            UnitId::generation(self.generation)
        );
        let schema = cells::guests_schema();
        let mut writer = TableWriter::new(
            &self.root,
            &base,
            schema.clone(),
            WriteParams {
                rows_per_group: group_rows(self.count),
                ..WriteParams::default()
            },
        )?;
        if self.scratch.is_none() {
            self.held.sort_unstable();
            for chunk in self.held.chunks(group_rows(self.count)) {
                writer.write(&batch_of(chunk)?).await?;
            }
            return writer.finish().await;
        }
        self.spill().await?;
        let scratch = self.scratch.take().expect("spilled").finish().await?;
        let paths: Vec<String> = scratch.iter().map(|o| o.path.clone()).collect();
        let sorted = sort_spilled(&self.root, &paths, &mut writer).await;
        self.root.delete_scratch(&paths).await;
        sorted?;
        writer.finish().await
    }
}

/// Streams the spilled runs in `paths` through DataFusion's sort (which spills to disk past
/// `SORT_MEMORY`) into `writer`.
async fn sort_spilled(root: &Location, paths: &[String], writer: &mut TableWriter) -> Result<()> {
    let failed = |e: datafusion::error::DataFusionError| Error::table(table::GUESTS.name, e);
    let ctx = crate::sql::spilling_session(root, SORT_MEMORY)?;
    crate::sql::register_objects(&ctx, root, "runs", paths).await?;
    let df = ctx
        .sql(
            "SELECT cell, home_cell, object, first, rows FROM runs \
             ORDER BY cell, home_cell, object, first, rows",
        )
        .await
        .map_err(failed)?;
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let schema = cells::guests_schema();
    while let Some(batch) = stream.try_next().await.map_err(failed)? {
        writer.write(&io::cast_batch(&batch, &schema)?).await?;
    }
    Ok(())
}

/// Deletes what a killed partition run left in the scratch folder (partition holds the
/// stage's lock, so no other run is using it).
pub async fn clear_scratch(root: &Location) -> Result<()> {
    for meta in root.list(SCRATCH).await? {
        root.store
            .delete(&meta.location)
            .await
            .map_err(|e| Error::storage(root.uri_of(&meta.location), e))?;
    }
    Ok(())
}

/// Runs per row group of a `guests` table of `count` runs.
fn group_rows(count: u64) -> usize {
    (cells::GUEST_GROUP_ROWS as u64).max(count.div_ceil(MAX_GUEST_GROUPS)) as usize
}

/// Runs as a `guests` batch.
fn batch_of(runs: &[GuestRun]) -> Result<RecordBatch> {
    let column = |f: fn(&GuestRun) -> u32| {
        Arc::new(UInt32Array::from_iter_values(runs.iter().map(f))) as ArrayRef
    };
    RecordBatch::try_new(
        cells::guests_schema(),
        vec![
            column(|r| r.cell),
            column(|r| r.home_cell),
            column(|r| r.object),
            Arc::new(UInt64Array::from_iter_values(runs.iter().map(|r| r.first))),
            column(|r| r.rows),
        ],
    )
    .map_err(|e| Error::table(table::GUESTS.name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_grow_past_the_bound_so_the_footer_does_not() {
        assert_eq!(group_rows(0), cells::GUEST_GROUP_ROWS);
        assert_eq!(group_rows(42_096), cells::GUEST_GROUP_ROWS);
        // 900 million runs (two billion vectors at probe 2): 4,096 groups of 219,727.
        let rows = group_rows(900_000_000);
        assert_eq!(rows, 219_727);
        assert!(900_000_000u64.div_ceil(rows as u64) <= MAX_GUEST_GROUPS);
    }
}
