//! `blindspot import clip-retrieval`: CLIP embeddings someone already computed (LAION
//! published ViT-L/14 embeddings for its 5 billion images) into committed `embeddings`
//! shards with the `clip` column filled and no `dino` column; `blindspot dino` embeds the
//! candidate images with DINOv2 later.
//!
//! clip-retrieval's layout: `img_emb/img_emb_<N>.npy` (float16 or float32, `rows x D`,
//! L2-normalised) and `metadata/metadata_<N>.parquet`, row `i` describing vector `i`
//! (`image_path` or `url`, `caption`, and often `key`). Each `N` is one shard, committed on
//! its own, so a killed import resumes. The `.npy` object is streamed (header, then rows a
//! group at a time), never read whole; the metadata is read by row range alongside.
//!
//! Imported rows have no image bytes: `width` and `height` are 0 and `content_hash` is a
//! per-row stand-in ([`IMPORTED_HASH`]), so exact duplicates are not collapsed before mining
//! (they pair at CLIP 1.0 and DINOv2 near 1.0, and the filter drops them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::EmbedCommit;
use crate::error::{Error, Result};
use crate::ingest::fetch::check_listed;
use crate::ingest::parquet::utf8_column;
use crate::ingest::Failure;
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::{segment_id, Location};
use crate::table::schema::{self, EncoderMeta, FloatType};
use crate::table::{self, io, Catalog, Commit, CommitSet, TableWriter, WriteParams};
use crate::units;

/// The prefix of the `content_hash` of imported rows (a stand-in, not a hash of bytes).
pub use crate::table::schema::IMPORTED_HASH;

/// Settings of an import.
#[derive(Clone, Debug)]
pub struct ImportParams {
    /// The id recorded as the CLIP encoder of these vectors (e.g. `openai-clip-vit-l-14`).
    pub clip_id: String,
    /// The key column of the metadata; rows without one get `<N>/<row>`.
    pub key_column: String,
    /// Stored float type; `None`: as in the `.npy` files.
    pub float: Option<FloatType>,
    /// Rows per Parquet row group (and per read of the `.npy`).
    pub rows_per_group: usize,
    /// What the metadata's `image_path`/`url` may name besides http(s) URLs and objects under
    /// the folder (the fetch policy of `embed`, for `dino` and the report to fetch later).
    pub allow: Vec<crate::ingest::fetch::UriKind>,
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams {
            clip_id: String::new(),
            key_column: "key".into(),
            float: None,
            rows_per_group: 8192,
            allow: Vec::new(),
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportSummary {
    /// `img_emb_<N>.npy` files found.
    pub shards: usize,
    /// Shards committed by an earlier run, skipped.
    pub skipped: usize,
    /// Shards committed now.
    pub committed: usize,
    /// Vectors imported now.
    pub vectors: u64,
    /// The vector dimension.
    pub dim: usize,
    /// Vectors whose norm was more than 1e-3 from 1 (re-normalised).
    pub renormalised: u64,
    /// Zero or non-finite vectors (`errors` rows, not imported).
    pub errors: u64,
    /// Image paths the fetch policy refused: the vector is imported, its `uri` is the vector's
    /// own row (`<npy>#row=<n>`), so nothing later fetches what the path named.
    pub blocked_paths: u64,
    /// Wall time.
    pub seconds: f64,
}

/// One `N` of the layout.
struct Part {
    n: u64,
    npy: ObjectMeta,
    metadata: ObjectMeta,
}

fn number(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.rsplit('/')
        .next()?
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

async fn list_parts(dir: &Location) -> Result<Vec<Part>> {
    let mut npys = BTreeMap::new();
    let mut metas = BTreeMap::new();
    for meta in dir.list("").await? {
        let rel = dir.relative(&meta.location);
        if let Some(n) = number(&rel, "img_emb_", ".npy").filter(|_| rel.starts_with("img_emb/")) {
            npys.insert(n, meta);
        } else if let Some(n) =
            number(&rel, "metadata_", ".parquet").filter(|_| rel.starts_with("metadata/"))
        {
            metas.insert(n, meta);
        }
    }
    if npys.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no img_emb/img_emb_<N>.npy: not clip-retrieval's layout (img_emb/ and metadata/ folders){}",
            dir.url,
            if metas.is_empty() { "" } else { "; it has metadata/ only" }
        )));
    }
    let mut parts = Vec::new();
    for (n, npy) in npys {
        let metadata = metas.remove(&n).ok_or_else(|| {
            Error::Usage(format!(
                "{} has no metadata/metadata_{n}.parquet beside img_emb/img_emb_{n}.npy",
                dir.url
            ))
        })?;
        parts.push(Part { n, npy, metadata });
    }
    Ok(parts)
}

/// A streamed `.npy` of `rows x dim` floats.
struct Npy {
    rows: u64,
    dim: usize,
    f16: bool,
    chunks: mpsc::Receiver<std::result::Result<Vec<f32>, String>>,
}

/// Sends the values in chunks of `per_chunk` (the last may be shorter); a read error ends it
/// with an error chunk.
fn send_chunks(
    values: &mut dyn Iterator<Item = std::io::Result<f32>>,
    per_chunk: usize,
    tx: &mpsc::Sender<std::result::Result<Vec<f32>, String>>,
) {
    let mut chunk = Vec::with_capacity(per_chunk);
    for v in values {
        match v {
            Ok(v) => chunk.push(v),
            Err(e) => {
                let _ = tx.blocking_send(Err(format!("reading the data: {e}")));
                return;
            }
        }
        if chunk.len() == per_chunk
            && tx
                .blocking_send(Ok(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(per_chunk),
                )))
                .is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
}

/// Opens `meta` of `dir` and streams its rows, `chunk_rows` at a time, on a blocking thread.
async fn open_npy(dir: &Location, meta: &ObjectMeta, chunk_rows: usize) -> Result<Npy> {
    let uri = dir.uri_of(&meta.location);
    let stream = dir
        .store
        .get(&meta.location)
        .await
        .map_err(|e| Error::storage(&uri, e))?
        .into_stream();
    let reader = SyncIoBridge::new(StreamReader::new(
        stream.map(|r| r.map_err(std::io::Error::other)),
    ));
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (tx, chunks) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let npy = match npyz::NpyFile::new(reader) {
            Ok(n) => n,
            Err(e) => {
                let _ = head_tx.send(Err(format!("not an .npy file: {e}")));
                return;
            }
        };
        let shape = npy.shape().to_vec();
        let descr = npy
            .dtype()
            .descr()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string();
        if shape.len() != 2 || npy.order() != npyz::Order::C {
            let _ = head_tx.send(Err(format!(
                "shape {shape:?} (order {:?}): need a C-order 2-d array rows x D",
                npy.order()
            )));
            return;
        }
        let (rows, dim) = (shape[0], shape[1] as usize);
        let f16 = descr.ends_with("f2");
        if !(f16 || descr.ends_with("f4")) {
            let _ = head_tx.send(Err(format!("dtype {descr}: need float16 or float32")));
            return;
        }
        let _ = head_tx.send(Ok((rows, dim, f16)));
        let per_chunk = chunk_rows.max(1) * dim.max(1);
        let send_all = |values: &mut dyn Iterator<Item = std::io::Result<f32>>| {
            send_chunks(values, per_chunk, &tx)
        };
        if f16 {
            match npy.data::<half::f16>() {
                Ok(d) => send_all(&mut d.map(|v| v.map(f32::from))),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                }
            }
        } else {
            match npy.data::<f32>() {
                Ok(d) => send_all(&mut d.into_iter()),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                }
            }
        }
    });
    let (rows, dim, f16) = head_rx
        .await
        .map_err(|_| Error::Internal("npy reader stopped".into()))?
        .map_err(|e| Error::Usage(format!("{uri}: {e}")))?;
    Ok(Npy {
        rows,
        dim,
        f16,
        chunks,
    })
}

/// Imports clip-retrieval's output at `dir` into `root`.
pub async fn import_clip_retrieval(
    dir: &Location,
    root: &Location,
    params: &ImportParams,
    progress: Arc<dyn Progress>,
) -> Result<ImportSummary> {
    if params.clip_id.trim().is_empty() {
        return Err(Error::Usage(
            "--clip-id is needed: the id of the CLIP model that made the vectors (e.g. openai-clip-vit-l-14), recorded as the embeddings' encoder".into(),
        ));
    }
    units::locked(
        root,
        Stage::Import,
        import_locked(dir, root, params, progress),
    )
    .await
}

async fn import_locked(
    dir: &Location,
    root: &Location,
    params: &ImportParams,
    progress: Arc<dyn Progress>,
) -> Result<ImportSummary> {
    let started = Instant::now();
    let parts = list_parts(dir).await?;
    let catalog = Catalog::new(root);
    let done = super::committed(&catalog).await?;
    let mut summary = ImportSummary {
        shards: parts.len(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    let mut total = 0u64;
    for part in parts {
        let id = segment_id(&format!("img_emb_{}", part.n));
        if done.contains_key(&id) {
            summary.skipped += 1;
            continue;
        }
        let (rows, footer) = check_part(dir, &part, params).await?;
        total += rows;
        todo.push((id, part, footer));
    }
    progress.start(Stage::Import.name(), Some(total));
    let generation = if todo.is_empty() {
        0
    } else {
        catalog.begin(Stage::Import.name()).await?
    };
    // One float type for the whole table: as asked, else as the first file holds.
    let mut float = params.float;
    for (id, part, footer) in todo {
        let npy = open_npy(dir, &part.npy, params.rows_per_group).await?;
        let float = *float.get_or_insert(if npy.f16 {
            FloatType::F16
        } else {
            FloatType::F32
        });
        if summary.dim != 0 && summary.dim != npy.dim {
            return Err(Error::Usage(format!(
                "{} has dimension {} but earlier files have {}",
                dir.uri_of(&part.npy.location),
                npy.dim,
                summary.dim
            )));
        }
        summary.dim = npy.dim;
        let schema = imported_schema(params, npy.dim, float);
        let record = import_part(
            dir,
            &catalog,
            &id,
            &part,
            footer,
            npy,
            &schema,
            float,
            params,
            generation,
            &mut summary,
            progress.as_ref(),
        )
        .await?;
        summary.committed += 1;
        progress.message(&format!(
            "committed img_emb_{} ({} vectors)",
            part.n, record.rows
        ));
    }
    progress.finish();
    if summary.committed == 0 && summary.skipped == 0 {
        return Err(Error::Usage(format!("{} holds no vectors", dir.url)));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The `embeddings` schema of imported vectors (CLIP only, recorded as `params.clip_id`).
fn imported_schema(params: &ImportParams, dim: usize, float: FloatType) -> SchemaRef {
    let clip = EncoderMeta {
        id: params.clip_id.clone(),
        digest: format!("imported:{}", params.clip_id),
        dim,
    };
    schema::embeddings(&clip, None, float)
}

/// Checks a part's row counts before anything is written (row i of the metadata describes
/// vector i): its vectors and its metadata's footer.
async fn check_part(
    dir: &Location,
    part: &Part,
    params: &ImportParams,
) -> Result<(u64, parquet::arrow::arrow_reader::ArrowReaderMetadata)> {
    let npy = open_npy(dir, &part.npy, params.rows_per_group).await?;
    let footer = io::footer_at(&dir.store, &part.metadata).await?;
    let meta_rows = footer.metadata().file_metadata().num_rows().max(0) as u64;
    if meta_rows != npy.rows {
        return Err(Error::Usage(format!(
            "{} has {} vectors but {} has {meta_rows} rows: row i of the metadata must describe vector i",
            dir.uri_of(&part.npy.location),
            npy.rows,
            dir.uri_of(&part.metadata.location)
        )));
    }
    Ok((npy.rows, footer))
}

#[allow(clippy::too_many_arguments)]
async fn import_part(
    dir: &Location,
    catalog: &Catalog,
    id: &str,
    part: &Part,
    footer: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    mut npy: Npy,
    schema: &SchemaRef,
    float: FloatType,
    params: &ImportParams,
    generation: u64,
    summary: &mut ImportSummary,
    progress: &dyn Progress,
) -> Result<EmbedCommit> {
    let shard = format!("img_emb_{}", part.n);
    let npy_uri = dir.uri_of(&part.npy.location);
    let meta_uri = dir.uri_of(&part.metadata.location);
    let (key_col, path_col, columns) = metadata_columns(footer.schema(), &params.key_column);
    let group = params.rows_per_group.max(1);
    let write = WriteParams {
        rows_per_group: group,
        ..WriteParams::default()
    };
    let mut writer: TableWriter = catalog.writer(&table::EMBEDDINGS, id, schema.clone(), write)?;
    let rows = 0..npy.rows;
    let mut metadata =
        io::scan_range_at(&dir.store, &part.metadata, footer, rows, &columns, group)?;
    let mut errors: Vec<(&'static str, Failure)> = Vec::new();
    let mut row = 0u64;
    let mut rows_written = 0u64;
    let dim = npy.dim;
    let field = schema.field_with_name("clip").expect("clip column").clone();
    let (part_n, uri) = (part.n, npy_uri.as_str());
    let at = Origin {
        dir,
        part: part_n,
        npy_uri: uri,
        params,
    };
    while let Some(chunk) = npy.chunks.recv().await {
        let flat = chunk.map_err(|e| Error::Usage(format!("{npy_uri}: {e}")))?;
        let n = flat.len() / dim.max(1);
        let meta = meta_rows(&mut metadata, n, &meta_uri, &npy_uri).await?;
        let meta = MetaColumns::of(&meta, key_col.as_deref(), path_col)?;
        let mut rows = Imported::default();
        for i in 0..n {
            let v = flat[i * dim..(i + 1) * dim].to_vec();
            if let Err(failure) = rows.push(&at, &meta, row, i, v, summary) {
                errors.push((Stage::Import.name(), failure));
            }
        }
        let m = rows.keys.len();
        writer
            .write(&rows.batch(schema, &field, &shard, float)?)
            .await?;
        rows_written += m as u64;
        row += n as u64;
        progress.advance(n as u64);
    }
    if row != npy.rows {
        return Err(Error::Usage(format!(
            "{npy_uri} ended after {row} of its {} vectors",
            npy.rows
        )));
    }
    let embeddings = writer.finish().await?;
    let written = Written {
        id,
        shard,
        npy_uri,
        embeddings,
        rows: rows_written,
    };
    let record = written.commit(catalog, &errors, params, generation).await?;
    summary.vectors += rows_written;
    summary.errors += errors.len() as u64;
    Ok(record)
}

/// Which metadata columns to read: the key column (when present), the image path (or URL),
/// captions and URLs.
fn metadata_columns<'a>(
    schema: &arrow::datatypes::Schema,
    key_column: &'a str,
) -> (Option<String>, Option<&'static str>, Vec<&'a str>) {
    let has = |c: &str| schema.index_of(c).is_ok();
    let key_col = has(key_column).then(|| key_column.to_string());
    let path_col = ["image_path", "url"].into_iter().find(|c| has(c));
    let columns: Vec<&str> = [
        key_col.is_some().then_some(key_column),
        path_col,
        has("caption").then_some("caption"),
        has("url").then_some("url"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (key_col, path_col, columns)
}

/// The metadata rows for the next `n` vectors (batches may be cut differently).
async fn meta_rows(
    metadata: &mut io::BatchStream,
    n: usize,
    meta_uri: &str,
    npy_uri: &str,
) -> Result<RecordBatch> {
    let mut meta_batches = Vec::new();
    let mut have = 0usize;
    while have < n {
        let b = metadata
            .next()
            .await
            .ok_or_else(|| Error::Usage(format!("{meta_uri} ended before {npy_uri}")))??;
        have += b.num_rows();
        meta_batches.push(b);
    }
    arrow::compute::concat_batches(&meta_batches[0].schema(), &meta_batches)
        .map_err(|e| Error::table("metadata", e))
}

/// A part's embeddings, written: what its commit names.
struct Written<'a> {
    id: &'a str,
    shard: String,
    npy_uri: String,
    embeddings: Vec<crate::table::DataObject>,
    rows: u64,
}

impl Written<'_> {
    /// Writes the part's `errors` and commits both tables.
    async fn commit(
        self,
        catalog: &Catalog,
        errors: &[(&'static str, Failure)],
        params: &ImportParams,
        generation: u64,
    ) -> Result<EmbedCommit> {
        let (id, shard) = (self.id, &self.shard);
        let batch = crate::ingest::errors_batch(shard, errors)?;
        let error_objects = io::write_batches(
            catalog.root(),
            &format!("{}/{id}", table::ERRORS.dir),
            &batch.schema(),
            &[batch],
        )
        .await?;
        let record = EmbedCommit {
            shard: shard.clone(),
            shard_uri: self.npy_uri,
            id: id.to_string(),
            embeddings: self.embeddings[0].path.clone(),
            errors: error_objects[0].path.clone(),
            rows: self.rows,
            error_rows: errors.len() as u64,
            encoders: Some([params.clip_id.clone(), String::new()]),
            skipped_rows: 0,
            version: crate::VERSION.to_string(),
        };
        let commit = Commit::new(id, generation, &record)?
            .with(&table::EMBEDDINGS, self.embeddings)
            .with(&table::ERRORS, error_objects);
        catalog.commit(CommitSet::EMBED, &commit).await?;
        Ok(record)
    }
}

/// Where imported rows come from: the part's folder, number and vectors file.
struct Origin<'a> {
    dir: &'a Location,
    part: u64,
    npy_uri: &'a str,
    params: &'a ImportParams,
}

/// The metadata columns of a chunk's rows (each absent when the metadata lacks it).
struct MetaColumns {
    keys: Option<StringArray>,
    paths: Option<StringArray>,
    captions: Option<StringArray>,
    urls: Option<StringArray>,
}

impl MetaColumns {
    fn of(meta: &RecordBatch, key: Option<&str>, path: Option<&str>) -> Result<MetaColumns> {
        let column = |c: Option<&str>| match c {
            Some(c) => utf8_column(meta, c),
            None => Ok(None),
        };
        Ok(MetaColumns {
            keys: column(key)?,
            paths: column(path)?,
            captions: utf8_column(meta, "caption")?,
            urls: utf8_column(meta, "url")?,
        })
    }

    /// Row `i` of column `c`, when present and not empty.
    fn text(c: &Option<StringArray>, i: usize) -> Option<String> {
        use arrow::array::Array;
        c.as_ref()
            .filter(|c| c.is_valid(i) && !c.value(i).is_empty())
            .map(|c| c.value(i).to_string())
    }
}

/// The `embeddings` rows of one chunk, as they are built.
#[derive(Default)]
struct Imported {
    keys: Vec<String>,
    uris: Vec<String>,
    hashes: Vec<String>,
    captions: Vec<Option<String>>,
    urls: Vec<Option<String>>,
    vectors: Vec<Vec<f32>>,
}

impl Imported {
    /// Adds row `i` of the chunk that starts at row `first` of the part, with its vector `v`
    /// (normalised here); a vector of no length is the failure returned.
    fn push(
        &mut self,
        at: &Origin,
        meta: &MetaColumns,
        first: u64,
        i: usize,
        mut v: Vec<f32>,
        summary: &mut ImportSummary,
    ) -> std::result::Result<(), Failure> {
        let r = first + i as u64;
        let npy_uri = at.npy_uri;
        let key = MetaColumns::text(&meta.keys, i).unwrap_or_else(|| format!("{}/{r}", at.part));
        let own = || format!("{npy_uri}#row={r}");
        let uri = match MetaColumns::text(&meta.paths, i) {
            // The metadata is a manifest from elsewhere: its paths pass the fetch policy.
            Some(p) => {
                match check_listed(&format!("{}/metadata", at.dir.url), &p, &at.params.allow) {
                    Ok(uri) => uri,
                    Err(e) => {
                        summary.blocked_paths += 1;
                        if summary.blocked_paths == 1 {
                            tracing::warn!(path = %p, "{}", e.message);
                        }
                        own()
                    }
                }
            }
            None => own(),
        };
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Failure {
                key,
                uri,
                kind: "zero_vector".into(),
                message: format!("vector {r} of {npy_uri} has norm {norm}"),
            });
        }
        if (norm - 1.0).abs() > 1e-3 {
            summary.renormalised += 1;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        // The image bytes are not here to hash. A stand-in unique to the row keeps the
        // duplicate collapse of mining off these rows: identical CLIP vectors are what mining
        // looks for, never proof of identical images. `dino` knows the prefix.
        let id = blake3::hash(format!("{npy_uri}#{r}").as_bytes()).to_hex();
        self.hashes.push(format!("{IMPORTED_HASH}{}", &id[..32]));
        self.keys.push(key);
        self.uris.push(uri);
        self.captions.push(MetaColumns::text(&meta.captions, i));
        self.urls.push(MetaColumns::text(&meta.urls, i));
        self.vectors.push(v);
        Ok(())
    }

    /// The rows as a batch of `schema` (no image bytes: width and height are 0).
    fn batch(
        &self,
        schema: &SchemaRef,
        field: &arrow::datatypes::Field,
        shard: &str,
        float: FloatType,
    ) -> Result<RecordBatch> {
        let m = self.keys.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(self.keys.iter())),
            Arc::new(StringArray::from_iter_values(self.uris.iter())),
            Arc::new(StringArray::from_iter_values((0..m).map(|_| shard))),
            Arc::new(UInt32Array::from_value(0, m)),
            Arc::new(UInt32Array::from_value(0, m)),
            Arc::new(StringArray::from_iter_values(self.hashes.iter())),
            crate::table::io::vector_column(field, &self.vectors, float)?,
            Arc::new(StringArray::from_iter(
                self.captions.iter().map(|c| c.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                self.urls.iter().map(|c| c.as_deref()),
            )),
        ];
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::table(table::EMBEDDINGS.name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_files() {
        assert_eq!(
            number("img_emb/img_emb_12.npy", "img_emb_", ".npy"),
            Some(12)
        );
        assert_eq!(number("img_emb/img_emb_x.npy", "img_emb_", ".npy"), None);
        assert_eq!(
            number("metadata/metadata_0.parquet", "metadata_", ".parquet"),
            Some(0)
        );
    }
}
