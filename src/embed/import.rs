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
    // Check every part's row counts before writing anything.
    let mut todo = Vec::new();
    let mut total = 0u64;
    for part in parts {
        let id = segment_id(&format!("img_emb_{}", part.n));
        if done.contains_key(&id) {
            summary.skipped += 1;
            continue;
        }
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
        total += npy.rows;
        drop(npy);
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
        let clip = EncoderMeta {
            id: params.clip_id.clone(),
            digest: format!("imported:{}", params.clip_id),
            dim: npy.dim,
        };
        if summary.dim != 0 && summary.dim != npy.dim {
            return Err(Error::Usage(format!(
                "{} has dimension {} but earlier files have {}",
                dir.uri_of(&part.npy.location),
                npy.dim,
                summary.dim
            )));
        }
        summary.dim = npy.dim;
        let schema = schema::embeddings(&clip, None, float);
        let record = import_part(
            dir,
            root,
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

#[allow(clippy::too_many_arguments)]
async fn import_part(
    dir: &Location,
    root: &Location,
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
    let has = |c: &str| footer.schema().index_of(c).is_ok();
    let key_col = has(&params.key_column).then(|| params.key_column.clone());
    let path_col = ["image_path", "url"].into_iter().find(|c| has(c));
    let columns: Vec<&str> = [
        key_col.as_deref(),
        path_col,
        has("caption").then_some("caption"),
        has("url").then_some("url"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let write = WriteParams {
        rows_per_group: params.rows_per_group.max(1),
        ..WriteParams::default()
    };
    let mut writer: TableWriter = catalog.writer(&table::EMBEDDINGS, id, schema.clone(), write)?;
    let mut metadata = io::scan_range_at(
        &dir.store,
        &part.metadata,
        footer,
        0..npy.rows,
        &columns,
        params.rows_per_group.max(1),
    )?;
    let mut errors: Vec<(&'static str, Failure)> = Vec::new();
    let mut row = 0u64;
    let mut rows_written = 0u64;
    let dim = npy.dim;
    let field = schema.field_with_name("clip").expect("clip column").clone();
    while let Some(chunk) = npy.chunks.recv().await {
        let flat = chunk.map_err(|e| Error::Usage(format!("{npy_uri}: {e}")))?;
        let n = flat.len() / dim.max(1);
        // The metadata rows for the same range (batches may be cut differently).
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
        let meta = arrow::compute::concat_batches(&meta_batches[0].schema(), &meta_batches)
            .map_err(|e| Error::table("metadata", e))?;
        let keys = match &key_col {
            Some(k) => utf8_column(&meta, k)?,
            None => None,
        };
        let paths = match path_col {
            Some(p) => utf8_column(&meta, p)?,
            None => None,
        };
        let captions = utf8_column(&meta, "caption")?;
        let urls = utf8_column(&meta, "url")?;
        let text = |c: &Option<StringArray>, i: usize| {
            use arrow::array::Array;
            c.as_ref()
                .filter(|c| c.is_valid(i) && !c.value(i).is_empty())
                .map(|c| c.value(i).to_string())
        };
        let mut vectors = Vec::with_capacity(n);
        let mut out_keys = Vec::with_capacity(n);
        let mut uris = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut caps = Vec::with_capacity(n);
        let mut us = Vec::with_capacity(n);
        for i in 0..n {
            let r = row + i as u64;
            let mut v = flat[i * dim..(i + 1) * dim].to_vec();
            let key = text(&keys, i).unwrap_or_else(|| format!("{}/{r}", part.n));
            let own = || format!("{npy_uri}#row={r}");
            let uri = match text(&paths, i) {
                // The metadata is a manifest from elsewhere: its paths pass the fetch policy.
                Some(p) => {
                    match check_listed(&format!("{}/metadata", dir.url), &p, &params.allow) {
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
                errors.push((
                    Stage::Import.name(),
                    Failure {
                        key,
                        uri,
                        kind: "zero_vector".into(),
                        message: format!("vector {r} of {npy_uri} has norm {norm}"),
                    },
                ));
                continue;
            }
            if (norm - 1.0).abs() > 1e-3 {
                summary.renormalised += 1;
            }
            v.iter_mut().for_each(|x| *x /= norm);
            // The image bytes are not here to hash. A stand-in unique to the row keeps the
            // duplicate collapse of mining off these rows: identical CLIP vectors are what
            // mining looks for, never proof of identical images. `dino` knows the prefix.
            let id = blake3::hash(format!("{npy_uri}#{r}").as_bytes()).to_hex();
            hashes.push(format!("{IMPORTED_HASH}{}", &id[..32]));
            out_keys.push(key);
            uris.push(uri);
            caps.push(text(&captions, i));
            us.push(text(&urls, i));
            vectors.push(v);
        }
        let m = out_keys.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(out_keys.iter())),
            Arc::new(StringArray::from_iter_values(uris.iter())),
            Arc::new(StringArray::from_iter_values(
                (0..m).map(|_| shard.as_str()),
            )),
            Arc::new(UInt32Array::from_value(0, m)),
            Arc::new(UInt32Array::from_value(0, m)),
            Arc::new(StringArray::from_iter_values(hashes.iter())),
            crate::table::io::vector_column(&field, &vectors, float)?,
            Arc::new(StringArray::from_iter(caps.iter().map(|c| c.as_deref()))),
            Arc::new(StringArray::from_iter(us.iter().map(|c| c.as_deref()))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::table(table::EMBEDDINGS.name, e))?;
        writer.write(&batch).await?;
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
    let batch = crate::ingest::errors_batch(&shard, &errors)?;
    let error_objects = io::write_batches(
        root,
        &format!("{}/{id}", table::ERRORS.dir),
        &batch.schema(),
        &[batch],
    )
    .await?;
    let record = EmbedCommit {
        shard: shard.clone(),
        shard_uri: npy_uri,
        id: id.to_string(),
        embeddings: embeddings[0].path.clone(),
        errors: error_objects[0].path.clone(),
        rows: rows_written,
        error_rows: errors.len() as u64,
        encoders: Some([params.clip_id.clone(), String::new()]),
        skipped_rows: 0,
        version: crate::VERSION.to_string(),
    };
    let commit = Commit::new(id, generation, &record)?
        .with(&table::EMBEDDINGS, embeddings)
        .with(&table::ERRORS, error_objects);
    catalog.commit(CommitSet::EMBED, &commit).await?;
    summary.vectors += rows_written;
    summary.errors += errors.len() as u64;
    Ok(record)
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
