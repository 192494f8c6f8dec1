//! Placed rows grouped by cell on disk, for a generation whose cells are too many for
//! partition's buffer to gather a useful row group of each: with 45,000 cells (two billion
//! vectors) a 256 MiB buffer holds a few rows per cell, so flushing the fullest cell would
//! write row groups of tens of rows and footers that grow with the corpus. Instead the
//! buffered rows are spilled as they come to scratch objects, then DataFusion sorts them by
//! cell (its sort spills to disk past the buffer's size) and each cell is written as one row
//! group, a cell at a time.

use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::storage::Location;
use crate::table::records::UnitId;
use crate::table::{self, io, TableWriter, WriteParams};
use arrow::datatypes::SchemaRef;

/// Rows of one generation spilled unsorted.
pub struct Spilled {
    root: Location,
    writer: TableWriter,
    schema: SchemaRef,
}

impl Spilled {
    /// Scratch objects for generation `generation`'s rows of `schema` (the `cells` schema).
    pub fn new(root: &Location, generation: u64, schema: &SchemaRef) -> Result<Spilled> {
        // Beside the guest runs' scratch, and cleared with it by the next partition.
        let base = format!(
            "{}/{}/rows",
            super::guests::SCRATCH,
            UnitId::generation(generation)
        );
        let params = WriteParams {
            fast: true,
            ..WriteParams::default()
        };
        Ok(Spilled {
            root: root.clone(),
            writer: TableWriter::new(root, &base, schema.clone(), params)?,
            schema: schema.clone(),
        })
    }

    /// Writes `parts` (rows of any cells) to the scratch objects.
    pub async fn spill(&mut self, parts: &[arrow::array::RecordBatch]) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let batch = arrow::compute::concat_batches(&self.schema, parts)
            .map_err(|e| Error::table(table::CELLS.name, e))?;
        self.writer.write(&batch).await
    }

    /// Streams the spilled rows sorted by cell into `f`, a batch of one cell at a time
    /// (DataFusion's sort, in at most `memory` bytes before it spills to disk), and deletes
    /// the scratch objects.
    pub async fn sorted(
        self,
        memory: usize,
        mut f: impl AsyncFnMut(u32, arrow::array::RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let objects = self.writer.finish().await?;
        let paths: Vec<String> = objects.iter().map(|o| o.path.clone()).collect();
        let result = async {
            let failed = |e: datafusion::error::DataFusionError| Error::table(table::CELLS.name, e);
            let ctx = crate::sql::spilling_session(&self.root, memory)?;
            // One sort, no merge of partitions, and batches of 1,024 rows: a batch of 8,192
            // rows of 768-d f16 CLIP vectors is 13 MB, and each sort and merge stream holds
            // some (at 200k vectors the default plan ran out of a 256 MiB pool).
            for set in [
                "SET datafusion.execution.target_partitions = 1",
                "SET datafusion.execution.batch_size = 1024",
            ] {
                ctx.sql(set)
                    .await
                    .map_err(failed)?
                    .collect()
                    .await
                    .map_err(failed)?;
            }
            crate::sql::register_objects(&ctx, &self.root, "rows", &paths).await?;
            let df = ctx
                .sql("SELECT * FROM rows ORDER BY cell")
                .await
                .map_err(failed)?;
            let mut stream = df.execute_stream().await.map_err(failed)?;
            while let Some(batch) = stream.try_next().await.map_err(failed)? {
                let batch = io::cast_batch(&batch, &self.schema)?;
                let cells = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt32Array>()
                    .ok_or_else(|| Error::table(table::CELLS.name, "cell is not u32"))?
                    .values()
                    .to_vec();
                let mut start = 0;
                for run in cells.chunk_by(|a, b| a == b) {
                    f(run[0], batch.slice(start, run.len())).await?;
                    start += run.len();
                }
            }
            Ok(())
        }
        .await;
        self.root.delete_scratch(&paths).await;
        result
    }
}
