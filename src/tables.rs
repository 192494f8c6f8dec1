//! Reading and writing whole Parquet objects of a run root: the committed shards of a table,
//! a projection of their columns, and small single-object tables written atomically.

use arrow::array::{
    Array, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, StringArray,
};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::storage::Location;

/// Reads one Parquet object of `root`, keeping only `columns` (all when empty).
pub async fn read(root: &Location, rel: &str, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let path = root.path(rel);
    let bytes = root
        .get_bytes(&path)
        .await
        .map_err(|e| Error::storage(root.uri_of(&path), e))?;
    decode(bytes, columns).map_err(|e| Error::table(rel, e))
}

fn decode(
    bytes: Bytes,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let builder = if columns.is_empty() {
        builder
    } else {
        let schema = builder.parquet_schema();
        let roots: Vec<usize> = columns
            .iter()
            .filter_map(|c| builder.schema().index_of(c).ok())
            .collect();
        let mask = ProjectionMask::roots(schema, roots);
        builder.with_projection(mask)
    };
    builder
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

/// Encodes batches as one Parquet object and writes it atomically.
pub async fn write(
    root: &Location,
    rel: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let mut buf = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), Some(writer_props(schema)))
            .map_err(|e| Error::table(rel, e))?;
    for b in batches {
        w.write(b).map_err(|e| Error::table(rel, e))?;
    }
    w.close().map_err(|e| Error::table(rel, e))?;
    root.put(rel, Bytes::from(buf)).await
}

/// Writer properties for every blindspot table: zstd, and the schema's metadata as Parquet
/// key-value metadata (so DuckDB and pyarrow both show it).
pub fn writer_props(schema: &SchemaRef) -> WriterProperties {
    let kv = schema
        .metadata()
        .iter()
        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
        .collect();
    WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_key_value_metadata(Some(kv))
        .build()
}

/// A string column of a batch.
pub fn strings<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::table("batch", format!("no string column {column}")))
}

/// The rows of a vector column as one flat f32 buffer plus its dimension, whichever float
/// type it is stored in.
pub fn vectors_flat(batch: &RecordBatch, column: &str) -> Result<(Vec<f32>, usize)> {
    let list = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or_else(|| Error::table("batch", format!("no vector column {column}")))?;
    let dim = list.value_length() as usize;
    let (start, end) = (list.offset() * dim, (list.offset() + list.len()) * dim);
    let values: Vec<f32> = if let Some(v) = list.values().as_any().downcast_ref::<Float32Array>() {
        v.values()[start..end].to_vec()
    } else if let Some(v) = list.values().as_any().downcast_ref::<Float16Array>() {
        v.values()[start..end].iter().map(|h| h.to_f32()).collect()
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
