//! URI manifests: Parquet, CSV or JSONL tables with a `uri` (or `url`) column, an optional
//! `key` and `caption`, naming images in any store or on the web. A manifest is cut into
//! parts that are shards of their own: a Parquet manifest by row group, a CSV or JSONL one
//! every `--rows-per-shard` rows (default 10,000), so a killed run resumes by part. Within a
//! part the images are fetched with bounded concurrency, in order; a failed fetch is an
//! `errors` row.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::fetch::{check_listed, Fetcher};
use super::parquet::utf8_column;
use super::{Failure, Ingested, Item, ShardRead};
use crate::error::{Error, Result};
use crate::table::io;

/// Rows per part of a CSV or JSONL manifest when `--rows-per-shard` is not given.
pub const DEFAULT_ROWS_PER_SHARD: u64 = 10_000;

/// The layout of a manifest object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated, with a header row (`.tsv`: tab-separated).
    Csv(u8),
    /// One JSON object per line.
    Jsonl,
}

impl TableFormat {
    /// The format of a manifest object named `name`, by extension; `None` for other names.
    pub fn of(name: &str) -> Option<TableFormat> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Some(TableFormat::Parquet)
        } else if lower.ends_with(".csv") {
            Some(TableFormat::Csv(b','))
        } else if lower.ends_with(".tsv") {
            Some(TableFormat::Csv(b'\t'))
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(TableFormat::Jsonl)
        } else {
            None
        }
    }
}

/// The columns a manifest is read by.
#[derive(Clone, Debug)]
pub struct Columns {
    /// `uri` or `url`.
    pub uri: String,
    /// The key column when present.
    pub key: Option<String>,
    /// True when a `caption` column is present.
    pub caption: bool,
}

impl Columns {
    /// The columns among `names`, or why the table is no manifest.
    pub fn find(names: &[String], key_column: &str) -> Result<Columns, String> {
        let has = |c: &str| names.iter().any(|n| n == c);
        let uri = ["uri", "url"]
            .into_iter()
            .find(|c| has(c))
            .ok_or_else(|| format!("no `uri` or `url` column (columns: {})", names.join(", ")))?;
        Ok(Columns {
            uri: uri.to_string(),
            key: has(key_column).then(|| key_column.to_string()),
            caption: has("caption"),
        })
    }
}

/// Rows `start..start + len` of one manifest object: a shard.
#[derive(Clone, Debug)]
pub struct ManifestPart {
    /// The manifest object.
    pub meta: ObjectMeta,
    /// Its URI; relative paths in it are taken relative to its folder.
    pub uri: String,
    /// Its layout.
    pub format: TableFormat,
    /// First row of the part.
    pub start: u64,
    /// Rows in the part.
    pub len: u64,
    /// The columns it is read by.
    pub columns: Columns,
}

/// One row of a manifest.
struct Row {
    key: Option<String>,
    uri: Option<String>,
    caption: Option<String>,
}

/// Cuts one manifest object into parts; `Ok(Err(why))` when it is a table but no manifest.
pub async fn parts(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    uri: &str,
    format: TableFormat,
    key_column: &str,
    rows_per_shard: Option<u64>,
) -> Result<Result<Vec<ManifestPart>, String>> {
    let part = |start: u64, len: u64, columns: &Columns| ManifestPart {
        meta: meta.clone(),
        uri: uri.to_string(),
        format,
        start,
        len,
        columns: columns.clone(),
    };
    let split = |start: u64, len: u64, step: u64| {
        let step = step.max(1);
        (0..len.div_ceil(step)).map(move |i| (start + i * step, step.min(len - i * step)))
    };
    match format {
        TableFormat::Parquet => {
            let footer = io::footer_at(store, meta).await?;
            let names: Vec<String> = footer
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let columns = match Columns::find(&names, key_column) {
                Ok(c) => c,
                Err(why) => return Ok(Err(why)),
            };
            let mut out = Vec::new();
            let mut start = 0u64;
            for rg in footer.metadata().row_groups() {
                let n = rg.num_rows().max(0) as u64;
                for (s, l) in split(start, n, rows_per_shard.unwrap_or(n)) {
                    out.push(part(s, l, &columns));
                }
                start += n;
            }
            Ok(Ok(out))
        }
        TableFormat::Csv(_) | TableFormat::Jsonl => {
            let (names, rows) = scan_text(store, meta, format, 0, u64::MAX, true).await?;
            let columns = match Columns::find(&names, key_column) {
                Ok(c) => c,
                Err(why) => return Ok(Err(why)),
            };
            let total = rows.len_hint;
            Ok(Ok(split(
                0,
                total,
                rows_per_shard.unwrap_or(DEFAULT_ROWS_PER_SHARD),
            )
            .map(|(s, l)| part(s, l, &columns))
            .collect()))
        }
    }
}

/// What a text scan returns: rows kept (`start..start+len`) and, when only counting, how
/// many there are.
struct TextRows {
    rows: Vec<Row>,
    len_hint: u64,
}

/// Streams a CSV or JSONL object on a blocking thread, keeping rows `start..start + len`;
/// `count_only` keeps none and counts them all. Returns the column names too.
async fn scan_text(
    store: &Arc<dyn ObjectStore>,
    meta: &ObjectMeta,
    format: TableFormat,
    start: u64,
    len: u64,
    count_only: bool,
) -> Result<(Vec<String>, TextRows)> {
    let name = meta.location.to_string();
    let stream = store
        .get(&meta.location)
        .await
        .map_err(|e| Error::storage(&name, e))?
        .into_stream();
    let reader = SyncIoBridge::new(StreamReader::new(
        stream.map(|r| r.map_err(std::io::Error::other)),
    ));
    let key_names = ["key", "uri", "url", "caption"];
    tokio::task::spawn_blocking(move || -> Result<(Vec<String>, TextRows)> {
        let bad = |e: String| Error::Usage(format!("manifest {name}: {e}"));
        let mut out = TextRows {
            rows: Vec::new(),
            len_hint: 0,
        };
        let mut keep = |n: u64, get: &dyn Fn(&str) -> Option<String>| {
            out.len_hint = n + 1;
            if !count_only && n >= start && n - start < len {
                out.rows.push(Row {
                    key: get("key"),
                    uri: get("uri").or_else(|| get("url")),
                    caption: get("caption"),
                });
            }
            count_only || n + 1 < start.saturating_add(len)
        };
        match format {
            TableFormat::Csv(delimiter) => {
                let mut csv = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .flexible(true)
                    .from_reader(reader);
                let header: Vec<String> = csv
                    .headers()
                    .map_err(|e| bad(e.to_string()))?
                    .iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                let index = |c: &str| header.iter().position(|h| h == c);
                let idx: Vec<(&str, Option<usize>)> =
                    key_names.iter().map(|c| (*c, index(c))).collect();
                let mut record = csv::StringRecord::new();
                let mut n = 0u64;
                while csv
                    .read_record(&mut record)
                    .map_err(|e| bad(e.to_string()))?
                {
                    let get = |c: &str| {
                        idx.iter()
                            .find(|(k, _)| *k == c)
                            .and_then(|(_, i)| *i)
                            .and_then(|i| record.get(i))
                            .filter(|v| !v.is_empty())
                            .map(str::to_string)
                    };
                    if !keep(n, &get) {
                        break;
                    }
                    n += 1;
                }
                Ok((header, out))
            }
            TableFormat::Jsonl | TableFormat::Parquet => {
                use std::io::BufRead;
                let mut header: Vec<String> = Vec::new();
                let mut n = 0u64;
                for line in std::io::BufReader::new(reader).lines() {
                    let line = line.map_err(|e| bad(e.to_string()))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: serde_json::Value = serde_json::from_str(&line)
                        .map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
                    let object = value
                        .as_object()
                        .ok_or_else(|| bad(format!("line {} is not a JSON object", n + 1)))?;
                    if header.is_empty() {
                        header = object.keys().cloned().collect();
                    }
                    let get = |c: &str| match object.get(c) {
                        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        Some(serde_json::Value::Null) | None => None,
                        Some(serde_json::Value::String(_)) => None,
                        Some(v) => Some(v.to_string()),
                    };
                    if !keep(n, &get) {
                        break;
                    }
                    n += 1;
                }
                Ok((header, out))
            }
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("manifest reader: {e}")))?
}

async fn rows_of(store: &Arc<dyn ObjectStore>, part: &ManifestPart) -> Result<Vec<Row>> {
    match part.format {
        TableFormat::Parquet => {
            let footer = io::footer_at(store, &part.meta).await?;
            let mut columns = vec![part.columns.uri.as_str()];
            if let Some(k) = &part.columns.key {
                columns.push(k);
            }
            if part.columns.caption {
                columns.push("caption");
            }
            let mut batches = io::scan_range_at(
                store,
                &part.meta,
                footer,
                part.start..part.start + part.len,
                &columns,
                io::SCAN_BATCH_ROWS,
            )?;
            let mut rows = Vec::new();
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                let uris = utf8_column(&batch, &part.columns.uri)?;
                let keys = match &part.columns.key {
                    Some(k) => utf8_column(&batch, k)?,
                    None => None,
                };
                let captions = utf8_column(&batch, "caption")?;
                let get = |c: &Option<arrow::array::StringArray>, i: usize| {
                    use arrow::array::Array;
                    c.as_ref()
                        .filter(|c| c.is_valid(i) && !c.value(i).is_empty())
                        .map(|c| c.value(i).to_string())
                };
                for i in 0..batch.num_rows() {
                    rows.push(Row {
                        key: get(&keys, i),
                        uri: get(&uris, i),
                        caption: get(&captions, i),
                    });
                }
            }
            Ok(rows)
        }
        _ => Ok(
            scan_text(store, &part.meta, part.format, part.start, part.len, false)
                .await?
                .1
                .rows,
        ),
    }
}

/// One row's image, fetched, with its caption (and its URL when it is one).
async fn fetch_row(
    fetcher: &Fetcher,
    key: String,
    uri: String,
    caption: Option<String>,
) -> Ingested {
    let url = uri.starts_with("http").then(|| uri.clone());
    match fetcher.get(&uri).await {
        Ok(bytes) => Ingested::Image(Item {
            key,
            uri,
            bytes,
            caption,
            url,
        }),
        Err(e) => Ingested::Failed(Failure {
            key,
            uri,
            kind: e.kind,
            message: e.message,
        }),
    }
}

/// Fetches every image of one part and sends it to `tx`, in manifest order.
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    part: &ManifestPart,
    fetcher: &Arc<Fetcher>,
    tx: mpsc::Sender<Ingested>,
) -> Result<ShardRead> {
    let rows = rows_of(store, part).await?;
    let mut seen = HashSet::new();
    let mut out = ShardRead::default();
    let items = futures::stream::iter(rows.into_iter().enumerate())
        .map(|(i, row)| {
            let fetcher = fetcher.clone();
            let n = part.start + i as u64;
            // The fetch policy: what this manifest may name.
            let listed = row
                .uri
                .as_deref()
                .map(|u| check_listed(&part.uri, u, &fetcher.params().allow));
            let uri = match (&listed, row.uri.as_deref()) {
                (Some(Ok(uri)), _) => Some(uri.clone()),
                (_, raw) => raw.map(str::to_string),
            };
            let key = row
                .key
                .clone()
                .or_else(|| uri.clone())
                .unwrap_or_else(|| format!("{}#{n}", part.uri));
            let fresh = seen.insert(key.clone());
            async move {
                let Some(uri) = uri else {
                    return Ingested::Failed(Failure {
                        key,
                        uri: format!("{}#{n}", part.uri),
                        kind: "no_uri".into(),
                        message: format!("row {n} of the manifest has an empty uri"),
                    });
                };
                if let Some(Err(e)) = listed {
                    return Ingested::Failed(Failure {
                        key,
                        uri,
                        kind: e.kind,
                        message: e.message,
                    });
                }
                if !fresh {
                    return Ingested::Failed(Failure {
                        key: key.clone(),
                        uri,
                        kind: "duplicate_key".into(),
                        message: format!(
                            "a second row for key {key:?} in this part; only the first is embedded"
                        ),
                    });
                }
                fetch_row(&fetcher, key, uri, row.caption).await
            }
        })
        .buffered(fetcher.params().concurrency.max(1));
    tokio::pin!(items);
    while let Some(item) = items.next().await {
        if tx.send(item).await.is_err() {
            break;
        }
        out.sent += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Location;
    use bytes::Bytes;

    #[tokio::test]
    async fn csv_and_jsonl_parts() {
        let loc = Location::open("memory://manifest-parts/").unwrap();
        let csv = "key,uri,caption\nk0,a.jpg,one\nk1,\"b,c.jpg\",two\nk2,c.jpg,\n";
        loc.put("m.csv", Bytes::from(csv)).await.unwrap();
        let jsonl = "{\"url\": \"x.png\", \"key\": 7}\n\n{\"url\": \"y.png\"}\n";
        loc.put("m.jsonl", Bytes::from(jsonl)).await.unwrap();
        let metas = loc.list("").await.unwrap();
        let csv_meta = metas.iter().find(|m| m.location.as_ref().ends_with("csv"));
        let found = parts(
            &loc.store,
            csv_meta.unwrap(),
            "memory://manifest-parts/m.csv",
            TableFormat::Csv(b','),
            "key",
            Some(2),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            found.iter().map(|p| (p.start, p.len)).collect::<Vec<_>>(),
            vec![(0, 2), (2, 1)]
        );
        let rows = rows_of(&loc.store, &found[0]).await.unwrap();
        assert_eq!(rows[1].uri.as_deref(), Some("b,c.jpg"));
        assert_eq!(rows[1].caption.as_deref(), Some("two"));
        let rows = rows_of(&loc.store, &found[1]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].caption, None);

        let j = metas
            .iter()
            .find(|m| m.location.as_ref().ends_with("jsonl"));
        let found = parts(
            &loc.store,
            j.unwrap(),
            "memory://manifest-parts/m.jsonl",
            TableFormat::Jsonl,
            "key",
            None,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len, 2);
        assert_eq!(found[0].columns.uri, "url");
        let rows = rows_of(&loc.store, &found[0]).await.unwrap();
        assert_eq!(rows[0].key.as_deref(), Some("7"));
        assert_eq!(rows[1].key, None);
    }
}
