//! Reading and writing table data objects: streams of record batches read with range reads
//! (a projection of columns, row group after row group), writers that roll over to a new
//! object at a size bound, and small helpers over Arrow columns.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, FixedSizeListArray, Float16Array, Float32Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, TryFutureExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{AsyncArrowWriter, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use super::DataObject;
use crate::error::{Error, Result};
use crate::storage::Location;

/// A stream of record batches, the one currency between stages.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// Rows per batch when scanning.
pub const SCAN_BATCH_ROWS: usize = 8192;

/// How table writers shape their objects.
#[derive(Clone, Copy, Debug)]
pub struct WriteParams {
    /// An object is closed and the next one started once it reaches this many bytes.
    pub max_object_bytes: usize,
    /// Rows per Parquet row group (the unit of range reads and of writer memory).
    pub rows_per_group: usize,
    /// Snappy instead of zstd: for tables of vectors, which zstd barely shrinks (about 10%) at
    /// a third of snappy's speed.
    pub fast: bool,
    /// Rows per data page of the raw vector columns, for tables read by row ranges (`cells`):
    /// with the offset index, a range read then fetches and decodes only the pages its rows are
    /// on. The other columns, whose rows are small, get pages of `SMALL_PAGE_FACTOR` times as
    /// many rows. `None`: pages are bounded by bytes alone (Parquet's 1 MiB).
    pub page_rows: Option<usize>,
}

impl Default for WriteParams {
    fn default() -> Self {
        WriteParams {
            max_object_bytes: 256 << 20,
            rows_per_group: 64 * 1024,
            fast: false,
            page_rows: None,
        }
    }
}

/// Rows per page of the small columns of a table with `WriteParams::page_rows`, as a multiple
/// of its vector columns' rows per page.
pub const SMALL_PAGE_FACTOR: usize = 8;

/// Writer properties for every blindspot table: zstd (snappy with `fast`), bounded row groups,
/// and the schema's metadata as Parquet key-value metadata (so DuckDB and pyarrow both show
/// it). No dictionaries: keys and vectors are nearly all distinct, where a dictionary only
/// costs, and zstd takes care of the repetitive columns (on 2M candidates: 3.4 MiB plain,
/// 9.1 MiB with dictionaries).
pub fn writer_props(schema: &SchemaRef, params: &WriteParams) -> WriterProperties {
    // In key order: the schema's map has none, and the same table must give the same bytes.
    let sorted: std::collections::BTreeMap<_, _> = schema.metadata().iter().collect();
    let kv = sorted
        .into_iter()
        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
        .collect();
    let mut builder = WriterProperties::builder();
    if let Some(rows) = params.page_rows {
        // Small pages: statistics per column chunk only (per-page minima of vectors would weigh
        // as much as the pages' data in the footer). A page closes once it holds its bytes,
        // checked every `rows` rows.
        let rows = rows.max(1);
        builder = builder
            .set_data_page_row_count_limit(rows * SMALL_PAGE_FACTOR)
            .set_write_batch_size(rows)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk);
        for field in schema.fields() {
            if let DataType::FixedSizeBinary(width) = field.data_type() {
                let path = parquet::schema::types::ColumnPath::from(field.name().as_str());
                builder = builder.set_column_data_page_size_limit(path, rows * *width as usize);
            }
        }
    }
    builder
        .set_compression(if params.fast {
            parquet::basic::Compression::SNAPPY
        } else {
            parquet::basic::Compression::ZSTD(Default::default())
        })
        .set_key_value_metadata(Some(kv))
        .set_max_row_group_row_count(Some(params.rows_per_group.max(1)))
        .set_max_row_group_bytes(Some(64 << 20))
        .set_dictionary_enabled(false)
        .build()
}

/// Writes one table's data objects: `<base>.parquet`, then `<base>.1.parquet`, ... each closed
/// at [`WriteParams::max_object_bytes`]. Memory is one row group, whatever the row count.
pub struct TableWriter {
    root: Location,
    base: String,
    schema: SchemaRef,
    params: WriteParams,
    current: Option<Open>,
    done: Vec<DataObject>,
}

struct Open {
    path: String,
    writer: AsyncArrowWriter<Hashing>,
    hash: Arc<std::sync::Mutex<blake3::Hasher>>,
    rows: u64,
}

/// An object on its way to the store, hashed (BLAKE3) as its bytes pass, so its commit records
/// what a later read must find (`status --verify`). Parquet pages carry no CRC from this
/// writer: the `parquet` crate verifies page checksums but does not write them.
struct Hashing {
    inner: BufWriter,
    hash: Arc<std::sync::Mutex<blake3::Hasher>>,
}

impl parquet::arrow::async_writer::AsyncFileWriter for Hashing {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        if let Ok(mut h) = self.hash.lock() {
            h.update(&bs);
        }
        parquet::arrow::async_writer::AsyncFileWriter::write(&mut self.inner, bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        parquet::arrow::async_writer::AsyncFileWriter::complete(&mut self.inner)
    }
}

impl TableWriter {
    /// A writer of objects named after `base` (relative to the run root, no extension).
    pub fn new(
        root: &Location,
        base: &str,
        schema: SchemaRef,
        params: WriteParams,
    ) -> Result<TableWriter> {
        Ok(TableWriter {
            root: root.clone(),
            base: base.to_string(),
            schema,
            params,
            current: None,
            done: Vec::new(),
        })
    }

    /// The schema written.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn open(&self) -> Result<Open> {
        let path = match self.done.len() {
            0 => format!("{}.parquet", self.base),
            n => format!("{}.{n}.parquet", self.base),
        };
        let hash = Arc::new(std::sync::Mutex::new(blake3::Hasher::new()));
        let object = Hashing {
            inner: BufWriter::new(self.root.store.clone(), self.root.path(&path)),
            hash: hash.clone(),
        };
        let props = writer_props(&self.schema, &self.params);
        let writer = AsyncArrowWriter::try_new(object, self.schema.clone(), Some(props))
            .map_err(|e| Error::table(&path, e))?;
        Ok(Open {
            path,
            writer,
            hash,
            rows: 0,
        })
    }

    /// Appends a batch; rolls over to a new object when the current one is full.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let open = self.current.as_mut().expect("opened above");
        open.writer
            .write(batch)
            .await
            .map_err(|e| Error::table(&open.path, e))?;
        open.rows += batch.num_rows() as u64;
        if open.writer.bytes_written() + open.writer.in_progress_size()
            >= self.params.max_object_bytes
        {
            self.close_current().await?;
        }
        Ok(())
    }

    /// Writes `batch` as a row group of its own and returns where its first row is: the object
    /// (its path relative to the root) and the row within it.
    pub async fn write_group(&mut self, batch: &RecordBatch) -> Result<(String, u64)> {
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let open = self.current.as_ref().expect("opened above");
        let at = (open.path.clone(), open.rows);
        self.end_group().await?;
        self.write(batch).await?;
        self.end_group().await?;
        Ok(at)
    }

    /// Ends the current row group, so the next rows start a new one (a row group then holds
    /// only what was written since the last call: one mining cell, say).
    pub async fn end_group(&mut self) -> Result<()> {
        if let Some(open) = self.current.as_mut() {
            open.writer
                .flush()
                .await
                .map_err(|e| Error::table(&open.path, e))?;
        }
        Ok(())
    }

    async fn close_current(&mut self) -> Result<()> {
        if let Some(open) = self.current.take() {
            open.writer
                .close()
                .await
                .map_err(|e| Error::table(&open.path, e))?;
            let blake3 = open
                .hash
                .lock()
                .map(|h| h.finalize().to_hex().to_string())
                .ok();
            self.done.push(DataObject {
                path: open.path,
                rows: Some(open.rows),
                blake3,
            });
        }
        Ok(())
    }

    /// Closes the last object and returns every object written, for the commit. A table with
    /// no rows still gets one (empty) object, so readers see its schema.
    pub async fn finish(mut self) -> Result<Vec<DataObject>> {
        if self.current.is_none() && self.done.is_empty() {
            self.current = Some(self.open()?);
        }
        self.close_current().await?;
        Ok(self.done)
    }
}

/// Writes `batches` as one table's objects (for tables small enough to build in memory).
pub async fn write_batches(
    root: &Location,
    base: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<DataObject>> {
    let mut w = TableWriter::new(root, base, schema.clone(), WriteParams::default())?;
    for b in batches {
        w.write(b).await?;
    }
    w.finish().await
}

/// Streams the rows of Parquet objects of `root`, one after another, keeping only `columns`
/// (all when empty). Each object is read with range requests: its footer, then the projected
/// columns of one row group at a time.
pub fn scan_objects(
    root: &Location,
    paths: Vec<String>,
    columns: &[&str],
    batch_rows: usize,
) -> BatchStream {
    let root = root.clone();
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    futures::stream::iter(paths)
        .then(move |path| open_object(root.clone(), path, columns.clone(), batch_rows))
        .try_flatten()
        .boxed()
}

/// Range reads of one Parquet object: the footer first (its size is known, so no suffix
/// request, which some stores such as Azure cannot serve), then the pages a read asks for.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// Bytes this process has fetched from Parquet objects (footers, pages), for the stages that
/// report what they read.
static FETCHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes fetched from Parquet objects by this process so far.
pub fn bytes_fetched() -> u64 {
    FETCHED.load(std::sync::atomic::Ordering::Relaxed)
}

fn fetched(ranges: &[Range<u64>]) {
    let n = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    FETCHED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        fetched(std::slice::from_ref(&range));
        self.store
            .get_range(&self.path, range)
            .map_err(parquet_err)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        fetched(&ranges);
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The listing entry of object `rel` of `root`.
async fn head(root: &Location, rel: &str) -> Result<object_store::ObjectMeta> {
    let path = root.path(rel);
    root.store
        .head(&path)
        .await
        .map_err(|e| Error::storage(root.uri_of(&path), e))
}

async fn reader(root: &Location, rel: &str) -> Result<ObjectReader> {
    let meta = head(root, rel).await?;
    Ok(ObjectReader {
        store: root.store.clone(),
        path: meta.location,
        size: meta.size,
    })
}

async fn open_object(
    root: Location,
    rel: String,
    columns: Vec<String>,
    batch_rows: usize,
) -> Result<BatchStream> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(&root, &rel).await?)
        .await
        .map_err(|e| Error::table(&rel, e))?;
    stream_of(builder, rel, &columns, batch_rows)
}

/// The footer of one object (schema, row groups and their statistics), read once so that
/// chosen row groups can be streamed later without reading it again.
pub async fn object_metadata(root: &Location, rel: &str) -> Result<ArrowReaderMetadata> {
    let mut r = reader(root, rel).await?;
    ArrowReaderMetadata::load_async(&mut r, ArrowReaderOptions::new())
        .await
        .map_err(|e| Error::table(rel, e))
}

/// An object's listing entry and its footer (without page indexes).
pub async fn metadata_at(
    root: &Location,
    rel: &str,
) -> Result<(object_store::ObjectMeta, ArrowReaderMetadata)> {
    let meta = head(root, rel).await?;
    let footer = footer_at(&root.store, &meta).await?;
    Ok((meta, footer))
}

/// `footer` with the object's offset index (where each page is) added, for reads of row
/// ranges that fetch only the pages the rows are on (`scan_rows_at`). Only the index is read.
pub async fn with_offset_index(
    store: &Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    footer: &ArrowReaderMetadata,
) -> Result<ArrowReaderMetadata> {
    let mut r = ObjectReader {
        store: store.clone(),
        path: meta.location.clone(),
        size: meta.size,
    };
    let failed = |e: parquet::errors::ParquetError| Error::table(meta.location.as_ref(), e);
    let mut reader = ParquetMetaDataReader::new_with_metadata(footer.metadata().as_ref().clone())
        .with_offset_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
    reader.load_page_index(&mut r).await.map_err(failed)?;
    let metadata = reader.finish().map_err(failed)?;
    ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(failed)
}

/// The footer of any Parquet object, named by its listing entry (so no extra `head`).
pub async fn footer_at(
    store: &Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
) -> Result<ArrowReaderMetadata> {
    let mut r = ObjectReader {
        store: store.clone(),
        path: meta.location.clone(),
        size: meta.size,
    };
    ArrowReaderMetadata::load_async(&mut r, ArrowReaderOptions::new())
        .await
        .map_err(|e| Error::table(meta.location.as_ref(), e))
}

/// Streams rows `rows` (a range of row numbers of the whole object) of any Parquet object,
/// keeping `columns` (those present; all when empty): only the row groups the range touches
/// are read, projected, `batch_rows` rows at a time.
pub fn scan_range_at(
    store: &Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    footer: ArrowReaderMetadata,
    rows: Range<u64>,
    columns: &[&str],
    batch_rows: usize,
) -> Result<BatchStream> {
    scan_rows_at(store, meta, footer, &[rows], columns, batch_rows)
}

/// Streams the rows in `ranges` (sorted, disjoint ranges of row numbers of the whole object)
/// of any Parquet object: only the row groups they touch are read, and within those only the
/// selected rows are decoded.
pub fn scan_rows_at(
    store: &Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    footer: ArrowReaderMetadata,
    ranges: &[Range<u64>],
    columns: &[&str],
    batch_rows: usize,
) -> Result<BatchStream> {
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let name = meta.location.to_string();
    let mut groups = Vec::new();
    let mut selectors = Vec::new();
    let mut start = 0u64;
    for (i, rg) in footer.metadata().row_groups().iter().enumerate() {
        let end = start + rg.num_rows().max(0) as u64;
        let touched: Vec<Range<u64>> = ranges
            .iter()
            .filter(|r| r.start < end && r.end > start)
            .map(|r| r.start.max(start)..r.end.min(end))
            .collect();
        if !touched.is_empty() {
            groups.push(i);
            let mut at = start;
            for r in touched {
                if r.start > at {
                    selectors.push(RowSelector::skip((r.start - at) as usize));
                }
                selectors.push(RowSelector::select((r.end - r.start) as usize));
                at = r.end;
            }
            if end > at {
                selectors.push(RowSelector::skip((end - at) as usize));
            }
        }
        start = end;
    }
    let reader = ObjectReader {
        store: store.clone(),
        path: meta.location.clone(),
        size: meta.size,
    };
    let present: Vec<String> = columns
        .iter()
        .filter(|c| footer.schema().index_of(c).is_ok())
        .map(|c| c.to_string())
        .collect();
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer)
        .with_row_groups(groups)
        .with_row_selection(RowSelection::from(selectors));
    stream_of(builder, name, &present, batch_rows)
}

/// Streams only `row_groups` of one object (range reads of those groups' projected columns).
pub async fn scan_row_groups(
    root: &Location,
    rel: &str,
    metadata: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    columns: &[&str],
) -> Result<BatchStream> {
    let builder =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader(root, rel).await?, metadata)
            .with_row_groups(row_groups);
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    stream_of(builder, rel.to_string(), &columns, SCAN_BATCH_ROWS)
}

fn stream_of(
    builder: ParquetRecordBatchStreamBuilder<ObjectReader>,
    rel: String,
    columns: &[String],
    batch_rows: usize,
) -> Result<BatchStream> {
    let builder = if columns.is_empty() {
        builder
    } else {
        let roots = columns
            .iter()
            .map(|c| {
                builder.schema().index_of(c).map_err(|_| {
                    Error::table(
                        &rel,
                        format!(
                            "no column {c:?} (it has {})",
                            column_names(builder.schema())
                        ),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder.with_projection(mask)
    };
    let stream = builder
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(|e| Error::table(&rel, e))?;
    Ok(stream.map_err(move |e| Error::table(&rel, e)).boxed())
}

fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row count of a Parquet object, from its footer alone.
pub async fn object_rows(root: &Location, rel: &str) -> Result<u64> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader(root, rel).await?)
        .await
        .map_err(|e| Error::table(rel, e))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// `batch` in `schema`: its columns taken by name and cast to the schema's types.
pub fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| Error::table("batch", format!("no column {}", f.name())))?;
            arrow::compute::cast(c, f.data_type()).map_err(|e| Error::table("batch", e))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::table("batch", e))
}

/// A string column of a batch.
pub fn strings<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::table("batch", format!("no string column {column}")))
}

/// A Float32 column of a batch.
pub fn floats<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a Float32Array> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
        .ok_or_else(|| Error::table("batch", format!("no float column {column}")))
}

/// The rows of a vector column as one flat f32 buffer plus its dimension, whichever float
/// type it is stored in, as a list or raw (`raw_vector_field`).
pub fn vectors_flat(batch: &RecordBatch, column: &str) -> Result<(Vec<f32>, usize)> {
    let no_column = || Error::table("batch", format!("no vector column {column}"));
    let schema = batch.schema();
    let field = schema.field_with_name(column).map_err(|_| no_column())?;
    let values = vectors_of(batch.column_by_name(column).ok_or_else(no_column)?, field)?;
    let list = values
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(no_column)?;
    let dim = list.value_length() as usize;
    let (start, end) = (list.offset() * dim, (list.offset() + list.len()) * dim);
    let values: Vec<f32> = if let Some(v) = list.values().as_any().downcast_ref::<Float32Array>() {
        v.values()[start..end].to_vec()
    } else if let Some(v) = list.values().as_any().downcast_ref::<Float16Array>() {
        // One vectorised pass (F16C where the CPU has it), not a conversion per element.
        use half::slice::HalfFloatSliceExt;
        let mut out = vec![0f32; end - start];
        v.values()[start..end].convert_to_f32_slice(&mut out);
        out
    } else {
        return Err(Error::table(
            "batch",
            format!("{column} is neither f32 nor f16"),
        ));
    };
    Ok((values, dim))
}

/// The rows of a vector column as f32 vectors.
pub fn vector_rows(batch: &RecordBatch, column: &str) -> Result<Vec<Vec<f32>>> {
    let (flat, dim) = vectors_flat(batch, column)?;
    Ok(flat.chunks_exact(dim.max(1)).map(<[f32]>::to_vec).collect())
}

/// A vector column of `field`'s type (`FixedSizeList<float, D>`) from rows of f32.
pub fn vector_column(
    field: &Field,
    rows: &[Vec<f32>],
    float: super::schema::FloatType,
) -> Result<ArrayRef> {
    vectors(field, rows, |r| r.as_slice(), float)
}

/// A vector column of `field`'s type from any rows, each picked as a slice of f32.
pub fn vectors<R>(
    field: &Field,
    rows: &[R],
    pick: impl Fn(&R) -> &[f32],
    float: super::schema::FloatType,
) -> Result<ArrayRef> {
    let arrow::datatypes::DataType::FixedSizeList(item, dim) = field.data_type() else {
        return Err(Error::table(
            super::EMBEDDINGS.name,
            format!("{} is not a vector column", field.name()),
        ));
    };
    let flat: Vec<f32> = rows.iter().flat_map(|r| pick(r).iter().copied()).collect();
    let values: ArrayRef = match float {
        super::schema::FloatType::F32 => Arc::new(Float32Array::from(flat)),
        super::schema::FloatType::F16 => Arc::new(Float16Array::from(
            flat.into_iter()
                .map(half::f16::from_f32)
                .collect::<Vec<_>>(),
        )),
    };
    let list = FixedSizeListArray::try_new(item.clone(), *dim, values, None)
        .map_err(|e| Error::table(super::EMBEDDINGS.name, e))?;
    Ok(Arc::new(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[tokio::test]
    async fn writers_roll_over_and_scans_read_back_every_row_projected() {
        let root = Location::open("memory://table-io/roll").unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::UInt64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let params = WriteParams {
            max_object_bytes: 4096,
            rows_per_group: 500,
            fast: false,
            page_rows: None,
        };
        let mut w = TableWriter::new(&root, "t/part", schema.clone(), params).unwrap();
        for chunk in 0..20u64 {
            let n: Vec<u64> = (chunk * 1000..(chunk + 1) * 1000).collect();
            let s: Vec<String> = n.iter().map(|v| format!("row-{v:08}")).collect();
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from(n)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap();
            w.write(&b).await.unwrap();
        }
        let objects = w.finish().await.unwrap();
        assert!(objects.len() > 1, "{objects:?}");
        assert_eq!(objects[0].path, "t/part.parquet");
        assert_eq!(objects[1].path, "t/part.1.parquet");
        assert_eq!(objects.iter().map(|o| o.rows.unwrap()).sum::<u64>(), 20_000);
        let paths = objects.iter().map(|o| o.path.clone()).collect();
        let batches: Vec<RecordBatch> = scan_objects(&root, paths, &["n"], 700)
            .try_collect()
            .await
            .unwrap();
        assert!(batches
            .iter()
            .all(|b| b.num_columns() == 1 && b.num_rows() <= 700));
        let mut all: Vec<u64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        all.sort();
        assert_eq!(all, (0..20_000).collect::<Vec<u64>>());
        assert_eq!(
            object_rows(&root, "t/part.parquet").await.unwrap(),
            objects[0].rows.unwrap()
        );
        let err = scan_objects(&root, vec!["t/part.parquet".into()], &["nope"], 10)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no column \"nope\""), "{err}");
    }
}

/// Field metadata of a raw vector column: the float type of its elements.
pub const RAW_ITEM: &str = "blindspot.item";

/// A column `name` for vectors stored like `of` (`FixedSizeList<Float16 | Float32>`): each
/// vector as its raw little-endian bytes, one fixed-size binary per row, its element type in
/// the field's metadata, so that vectors decode as one copy per row rather than element by
/// element (Parquet stores list elements with levels, and f16 as a 2-byte binary each), and a
/// join moves a vector as one copy. `vectors_of` turns it back; `cosine_sim` reads it as it is.
pub fn raw_vector_field(name: &str, of: &Field) -> Field {
    match of.data_type() {
        DataType::FixedSizeList(item, dim)
            if matches!(item.data_type(), DataType::Float16 | DataType::Float32) =>
        {
            let width = item.data_type().primitive_width().expect("a float") as i32;
            Field::new(name, DataType::FixedSizeBinary(dim * width), true)
                .with_metadata([(RAW_ITEM.to_string(), item.data_type().to_string())].into())
        }
        _ => of.clone().with_name(name).with_nullable(true),
    }
}

/// The `FixedSizeList` type a raw vector field (`raw_vector_field`) stands for.
pub fn list_type_of(field: &Field) -> Result<DataType> {
    let DataType::FixedSizeBinary(width) = field.data_type() else {
        return Ok(field.data_type().clone());
    };
    let bad = |e: String| Error::table("vectors", format!("dino: {e}"));
    let item = match field.metadata().get(RAW_ITEM).map(String::as_str) {
        Some("Float16") => DataType::Float16,
        Some("Float32") => DataType::Float32,
        other => {
            return Err(bad(format!(
                "raw vectors of unknown element type {other:?}"
            )))
        }
    };
    let size = item.primitive_width().expect("a float") as i32;
    if width % size != 0 {
        return Err(bad(format!(
            "{width} bytes are not a whole number of {item}"
        )));
    }
    Ok(DataType::FixedSizeList(
        Arc::new(Field::new("item", item, true)),
        width / size,
    ))
}

/// A vector column as `field` (`raw_vector_field`) stores it: the same bytes, reinterpreted
/// (vectors of another float type are cast to the field's first).
pub fn raw_vectors(column: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    let DataType::FixedSizeBinary(width) = field.data_type() else {
        return Ok(column.clone());
    };
    let want = list_type_of(field)?;
    let column = match column.data_type() == &want {
        true => column.clone(),
        false => arrow::compute::cast(column, &want).map_err(|e| {
            Error::table(
                "cells",
                format!(
                    "{} is {} in some shards and {want} in others: {e}",
                    field.name(),
                    column.data_type()
                ),
            )
        })?,
    };
    let list = column.as_fixed_size_list();
    let values = list.values();
    let bytes = match values.data_type() {
        DataType::Float16 => values
            .as_primitive::<arrow::datatypes::Float16Type>()
            .values()
            .inner()
            .clone(),
        DataType::Float32 => values
            .as_primitive::<arrow::datatypes::Float32Type>()
            .values()
            .inner()
            .clone(),
        other => {
            return Err(Error::table(
                "cells",
                format!("vectors of {other} cannot be stored raw"),
            ))
        }
    };
    let raw = FixedSizeBinaryArray::try_new(*width, bytes, list.nulls().cloned())
        .map_err(|e| Error::table("vectors", e))?;
    Ok(Arc::new(raw))
}

/// The vectors of a raw vector column (`raw_vector_field`) as `FixedSizeList<Float16 |
/// Float32>` again, sharing its bytes; other columns are returned as they are.
pub fn vectors_of(column: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    if !matches!(field.data_type(), DataType::FixedSizeBinary(_)) {
        return Ok(column.clone());
    }
    let bad = |e: String| Error::table("vectors", format!("dino: {e}"));
    let DataType::FixedSizeList(item, dim) = list_type_of(field)? else {
        unreachable!("list_type_of gives a list for a binary field")
    };
    let item = item.data_type().clone();
    let raw = column
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .ok_or_else(|| bad(format!("{} is not raw vectors", column.data_type())))?;
    let n = raw.len() * dim as usize;
    let bytes = raw.values().clone();
    // Bytes from outside (a damaged or crafted object) must not reach Arrow's aligned view
    // unchecked: it panics where this returns an error.
    let size = item.primitive_width().expect("a float");
    if bytes.len() != n * size || bytes.as_ptr().align_offset(size) != 0 {
        return Err(bad(format!(
            "{} bytes at an offset not aligned to {size}, or not {n} values",
            bytes.len()
        )));
    }
    let values: ArrayRef = match item {
        DataType::Float16 => Arc::new(arrow::array::Float16Array::new(
            arrow::buffer::ScalarBuffer::new(bytes, 0, n),
            None,
        )),
        _ => Arc::new(arrow::array::Float32Array::new(
            arrow::buffer::ScalarBuffer::new(bytes, 0, n),
            None,
        )),
    };
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", item, true)),
        dim,
        values,
        raw.nulls().cloned(),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(list))
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use arrow::array::{Float16Array, Float32Array};
    use arrow::buffer::NullBuffer;

    fn list(item: DataType, dim: i32, values: Vec<f32>, nulls: Option<Vec<bool>>) -> ArrayRef {
        let values: ArrayRef = match item {
            DataType::Float16 => Arc::new(Float16Array::from(
                values
                    .iter()
                    .map(|v| half::f16::from_f32(*v))
                    .collect::<Vec<_>>(),
            )),
            _ => Arc::new(Float32Array::from(values)),
        };
        Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", item, true)),
            dim,
            values,
            nulls.map(NullBuffer::from),
        ))
    }

    #[test]
    fn raw_vectors_come_back_as_the_same_vectors() {
        for item in [DataType::Float16, DataType::Float32] {
            let values: Vec<f32> = (0..5 * 3).map(|i| i as f32 / 7.0 - 1.0).collect();
            let column = list(
                item.clone(),
                3,
                values,
                Some(vec![true, true, false, true, true]),
            );
            let of = Field::new("dino", column.data_type().clone(), true);
            let field = raw_vector_field("dino", &of);
            let width = 3 * item.primitive_width().unwrap() as i32;
            assert_eq!(field.data_type(), &DataType::FixedSizeBinary(width));
            let raw = raw_vectors(&column, &field).unwrap();
            assert_eq!(raw.data_type(), field.data_type());
            // Whole, and sliced (as a cell's rows are read in batches).
            assert_eq!(&vectors_of(&raw, &field).unwrap(), &column);
            let back = vectors_of(&raw.slice(1, 3), &field).unwrap();
            assert_eq!(&back, &column.slice(1, 3));
            assert!(back.is_null(1) && !back.is_null(0));
        }
        // Vectors of another float type are stored as the field's first type.
        let f32s = list(DataType::Float32, 2, vec![0.5, -0.25, 1.0, 0.0], None);
        let f16s = list(DataType::Float16, 2, vec![0.5, -0.25, 1.0, 0.0], None);
        let field = raw_vector_field("dino", &Field::new("dino", f16s.data_type().clone(), true));
        let raw = raw_vectors(&f32s, &field).unwrap();
        assert_eq!(&vectors_of(&raw, &field).unwrap(), &f16s);
        // Cells written before the raw layout keep their list column, read as it is.
        let old = Field::new("dino", f16s.data_type().clone(), true);
        assert_eq!(&vectors_of(&f16s, &old).unwrap(), &f16s);
        // Unknown element types are refused, not misread.
        let unknown = Field::new("dino", DataType::FixedSizeBinary(4), true);
        let bytes: ArrayRef =
            Arc::new(FixedSizeBinaryArray::try_from_iter(std::iter::once([0u8; 4])).unwrap());
        assert!(vectors_of(&bytes, &unknown).is_err());
        // Bytes not aligned to the element type are an error, not a panic.
        let f32s = raw_vector_field(
            "dino",
            &Field::new(
                "dino",
                list(DataType::Float32, 1, vec![1.0], None)
                    .data_type()
                    .clone(),
                true,
            ),
        );
        let odd = arrow::buffer::Buffer::from(vec![0u8; 9]).slice(1);
        let raw: ArrayRef = Arc::new(FixedSizeBinaryArray::try_new(4, odd, None).unwrap());
        let err = vectors_of(&raw, &f32s).unwrap_err().to_string();
        assert!(err.contains("aligned"), "{err}");
    }
}
