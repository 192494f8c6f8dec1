//! img2dataset Parquet shards (`--output_format parquet`): one row per sample, the encoded
//! image in a binary column (`jpg`, or `png`/`webp` after the encode format), the key in
//! `key`, img2dataset's `status`, `caption` and `url` beside them. Each object is a shard,
//! streamed a few rows at a time, so memory holds a handful of images, never the object.
//! A row's `uri` is `<object uri>#row=<n>`, `n` counting from 0 over the whole object, which
//! [`fetch_rows`] reads back.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use tokio::sync::mpsc;

use super::{Failure, Ingested, Item, ShardRead};
use crate::error::{Error, Result};
use crate::table::io;

/// Image columns tried, in order, when `--image-column` is not given: img2dataset names the
/// column after its encode format.
pub const IMAGE_COLUMNS: &[&str] = &["jpg", "png", "webp", "jpeg", "image"];

/// Rows decoded at a time: images are large, so batches are small.
const BATCH_ROWS: usize = 64;

/// One img2dataset Parquet object and the columns it is read by.
#[derive(Clone, Debug)]
pub struct ImageParquet {
    /// The object.
    pub meta: ObjectMeta,
    /// Rows, from the footer.
    pub rows: u64,
    /// The binary column holding the encoded image.
    pub image: String,
    /// The key column, when the object has it.
    pub key: Option<String>,
    /// True when the object has img2dataset's `status` column.
    pub status: bool,
    /// True when the object has a `caption` column.
    pub caption: bool,
    /// True when the object has a `url` column.
    pub url: bool,
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// The image column of `schema`: `wanted` when given and binary, else the first of
/// [`IMAGE_COLUMNS`] that is binary.
pub fn image_column(schema: &Schema, wanted: Option<&str>) -> Option<String> {
    let binary = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| is_binary(f.data_type()))
    };
    match wanted {
        Some(name) => binary(name).then(|| name.to_string()),
        None => IMAGE_COLUMNS
            .iter()
            .find(|c| binary(c))
            .map(|c| c.to_string()),
    }
}

impl ImageParquet {
    /// Describes `meta` as an img2dataset Parquet shard when its schema has an image column.
    pub fn from_schema(
        meta: ObjectMeta,
        rows: u64,
        schema: &Schema,
        image_column: Option<&str>,
        key_column: &str,
    ) -> Option<ImageParquet> {
        let image = self::image_column(schema, image_column)?;
        let has = |c: &str| schema.field_with_name(c).is_ok();
        Some(ImageParquet {
            meta,
            rows,
            image,
            key: has(key_column).then(|| key_column.to_string()),
            status: has("status"),
            caption: has("caption"),
            url: has("url"),
        })
    }
}

/// A column as plain Utf8 (img2dataset may write large or view strings, or integers).
pub fn utf8_column(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let cast = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| Error::table(name, format!("column {name:?} is not text: {e}")))?;
    Ok(Some(
        cast.as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8")
            .clone(),
    ))
}

fn binary_column(batch: &RecordBatch, name: &str) -> Result<BinaryArray> {
    let col: &ArrayRef = batch
        .column_by_name(name)
        .ok_or_else(|| Error::table(name, "image column missing from the batch"))?;
    let cast = arrow::compute::cast(col, &DataType::Binary)
        .map_err(|e| Error::table(name, format!("column {name:?} is not binary: {e}")))?;
    Ok(cast
        .as_any()
        .downcast_ref::<BinaryArray>()
        .expect("cast to Binary")
        .clone())
}

fn text(col: &Option<StringArray>, i: usize) -> Option<String> {
    col.as_ref()
        .filter(|c| c.is_valid(i))
        .map(|c| c.value(i).to_string())
}

/// The key of row `row` of a shard without a key column (or with a null key).
fn fallback_key(shard_stem: &str, row: u64) -> String {
    format!("{shard_stem}/{row}")
}

/// Sends every successful row of `shard` (`uri` is the object's URI) to `tx`. Rows whose
/// `status` is not `success` are counted by status and not sent.
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    uri: &str,
    stem: &str,
    shard: &ImageParquet,
    tx: mpsc::Sender<Ingested>,
) -> Result<ShardRead> {
    let footer = io::footer_at(store, &shard.meta).await?;
    let mut columns = vec![shard.image.as_str()];
    if let Some(k) = &shard.key {
        columns.push(k);
    }
    for (present, c) in [
        (shard.status, "status"),
        (shard.caption, "caption"),
        (shard.url, "url"),
    ] {
        if present {
            columns.push(c);
        }
    }
    let mut batches = io::scan_range_at(
        store,
        &shard.meta,
        footer,
        0..shard.rows,
        &columns,
        BATCH_ROWS,
    )?;
    let mut out = ShardRead::default();
    let mut row = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let images = binary_column(&batch, &shard.image)?;
        let keys = match &shard.key {
            Some(k) => utf8_column(&batch, k)?,
            None => None,
        };
        let status = utf8_column(&batch, "status")?;
        let captions = utf8_column(&batch, "caption")?;
        let urls = utf8_column(&batch, "url")?;
        for i in 0..batch.num_rows() {
            let n = row + i as u64;
            if let Some(s) = text(&status, i) {
                if s != "success" {
                    *out.skipped.entry(s).or_default() += 1;
                    continue;
                }
            }
            let key = text(&keys, i)
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| fallback_key(stem, n));
            let item_uri = format!("{uri}#row={n}");
            let item = if images.is_valid(i) {
                Ingested::Image(Item {
                    key,
                    uri: item_uri,
                    bytes: Bytes::copy_from_slice(images.value(i)),
                    caption: text(&captions, i),
                    url: text(&urls, i),
                })
            } else {
                Ingested::Failed(Failure {
                    key,
                    uri: item_uri,
                    kind: "no_image".into(),
                    message: format!("the {:?} column is null on a successful row", shard.image),
                })
            };
            if tx.send(item).await.is_err() {
                return Ok(out);
            }
            out.sent += 1;
        }
        row += batch.num_rows() as u64;
    }
    Ok(out)
}

/// The image bytes of rows `rows` (row numbers over the whole object) of one Parquet object,
/// read with a row selection: only the row groups holding them, only the image column.
/// A row past the end or with a null image is missing from the map.
pub async fn fetch_rows(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    image_column: Option<&str>,
    rows: &[u64],
) -> Result<BTreeMap<u64, Bytes>> {
    let footer = io::footer_at(store, meta).await?;
    let image = self::image_column(footer.schema(), image_column).ok_or_else(|| {
        Error::Usage(format!(
            "{} has no image column (tried {}); pass --image-column",
            meta.location,
            image_column.map_or(IMAGE_COLUMNS.join(", "), str::to_string)
        ))
    })?;
    let mut sorted: Vec<u64> = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for r in &sorted {
        match ranges.last_mut() {
            Some(last) if last.end == *r => last.end += 1,
            _ => ranges.push(*r..*r + 1),
        }
    }
    let mut batches =
        io::scan_rows_at(store, meta, footer, &ranges, &[image.as_str()], BATCH_ROWS)?;
    let mut wanted = sorted.into_iter();
    let mut out = BTreeMap::new();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let images = binary_column(&batch, &image)?;
        for i in 0..batch.num_rows() {
            let Some(n) = wanted.next() else { break };
            if images.is_valid(i) {
                out.insert(n, Bytes::copy_from_slice(images.value(i)));
            }
        }
    }
    Ok(out)
}

/// Splits `<object>#row=<n>` into the object URI and the row.
pub fn row_reference(uri: &str) -> Option<(&str, u64)> {
    let (object, fragment) = uri.rsplit_once('#')?;
    let n = fragment.strip_prefix("row=")?.parse().ok()?;
    Some((object, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_references_round_trip() {
        assert_eq!(
            row_reference("s3://b/00000.parquet#row=17"),
            Some(("s3://b/00000.parquet", 17))
        );
        assert_eq!(row_reference("s3://b/00000.tar#000001.jpg"), None);
    }

    #[test]
    fn finds_the_image_column() {
        use arrow::datatypes::Field;
        let s = Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("png", DataType::LargeBinary, true),
            Field::new("jpg", DataType::Utf8, true),
        ]);
        assert_eq!(image_column(&s, None).as_deref(), Some("png"));
        assert_eq!(image_column(&s, Some("jpg")), None);
        assert_eq!(image_column(&s, Some("png")).as_deref(), Some("png"));
    }
}
