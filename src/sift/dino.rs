//! The dino stage: DINOv2 only where it can matter. A pair can be CLIP-blind only if it is a
//! CLIP candidate, and at a 0.95 threshold only a small share of a corpus is in any candidate
//! pair; so `embed --encoders clip` (or `import clip-retrieval`) writes CLIP vectors alone, and
//! after candidates this stage fetches and embeds with DINOv2 only the candidate images that
//! have no DINOv2 vector yet, into the `dino` table.
//!
//! An image's bytes are found again by its `uri`: an object or URL, a webdataset member
//! (`<tar>#<member>`, one pass over the tar for all its wanted members) or an img2dataset
//! Parquet row (`<object>#row=<n>`, read with a row selection). The bytes are checked against
//! the content hash recorded at embed time, so a changed object is an error, not a wrong
//! vector.
//!
//! The unit of commit is one input shard's wanted images in one run; a rerun leaves out every
//! key already in the table, so a killed run resumes with no key done twice. A finished run
//! commits the list of candidate units it covered, which `filter` checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use ndarray::Array4;
use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::encoder::preprocess::{prepare, DecodeParams, Preprocessor, Transform};
use crate::encoder::OnnxEncoder;
use crate::error::{Error, Result};
use crate::ingest::by_uri::{fetch_uris, Fetched};
use crate::ingest::fetch::{FetchParams, Fetcher};
use crate::ingest::Failure;
use crate::progress::Progress;
use crate::sql;
use crate::stage::Stage;
use crate::storage::{segment_id, Location};
pub use crate::table::records::DinoCommit;
use crate::table::records::{EmbedCommit, UnitId};
use crate::table::schema::{self, FloatType};
use crate::table::{self, io, Catalog, Commit, CommitSet, Generations, WriteParams};
use crate::units::{self, Runner, Sharing};

/// Settings of the dino stage.
#[derive(Clone, Debug)]
pub struct DinoParams {
    /// Images per inference batch.
    pub batch_size: usize,
    /// Float type of the vectors; `None`: the float type of the `embeddings` table.
    pub float: Option<FloatType>,
    /// Decoding limits.
    pub decode: DecodeParams,
    /// img2dataset Parquet: the image column (default: as embed finds it).
    pub image_column: Option<String>,
    /// Fetching by URI.
    pub fetch: FetchParams,
    /// Memory the queries that find the candidate images needing a vector may use before
    /// they spill to disk, in bytes.
    pub key_memory: usize,
}

impl Default for DinoParams {
    fn default() -> Self {
        DinoParams {
            batch_size: 32,
            float: None,
            decode: DecodeParams::default(),
            image_column: None,
            fetch: FetchParams::default(),
            key_memory: DEFAULT_KEY_MEMORY,
        }
    }
}

/// What a dino run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DinoSummary {
    /// Images in the `embeddings` table.
    pub images: u64,
    /// Distinct images in a candidate pair.
    pub candidate_images: u64,
    /// Candidate images whose DINOv2 vector came from `embed` (both encoders).
    pub embedded_at_embed: u64,
    /// Candidate images already in the `dino` table before this run.
    pub already: u64,
    /// Candidate images this run set out to embed.
    pub needed: u64,
    /// Vectors written by this run.
    pub embedded: u64,
    /// Images this run could not fetch or decode (`dino_errors` rows).
    pub errors: u64,
    /// Those errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Shards committed by this run.
    pub units: usize,
    /// The share of all images that needed DINOv2 at all: candidate images without a
    /// vector from embed, over all images.
    pub share: f64,
    /// Nothing to do.
    pub up_to_date: bool,
    /// Wall time.
    pub seconds: f64,
}

/// A candidate image to embed.
#[derive(Clone, Debug)]
struct Want {
    key: String,
    uri: String,
    hash: String,
}

/// The dino stage over `root`.
pub async fn dino(
    root: &Location,
    encoder: OnnxEncoder,
    params: &DinoParams,
    progress: Arc<dyn Progress>,
) -> Result<DinoSummary> {
    if params.batch_size == 0 {
        return Err(Error::Usage("batch size must be at least 1".into()));
    }
    units::locked(
        root,
        Stage::Dino,
        dino_locked(root, encoder, params, progress),
    )
    .await
}

async fn dino_locked(
    root: &Location,
    encoder: OnnxEncoder,
    params: &DinoParams,
    progress: Arc<dyn Progress>,
) -> Result<DinoSummary> {
    let started = Instant::now();
    let catalog = Catalog::new(root);
    let units = catalog.commits_of(CommitSet::CANDIDATES).await?;
    if units.is_empty() {
        return Err(Stage::Candidates.run_first(&root.url));
    }
    let meta = encoder.meta();
    let mut summary = DinoSummary::default();
    // Plan: where vectors are, and how many candidate images still need one.
    let sources = Sources::read(&catalog, &meta.id, &mut summary).await?;
    let ctx = needs_session(&catalog, &units, &sources, params.key_memory).await?;
    count_needs(&ctx, &mut summary).await?;
    let current: Vec<String> = units.iter().map(Commit::cited).collect();
    let already_covered = catalog.dino_covered().await?;
    if summary.needed == 0 && current.iter().all(|u| already_covered.contains(u)) {
        summary.up_to_date = true;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let mut float = params.float;
    if let (None, Some(first)) = (float, sources.without.first()) {
        let mut s = io::scan_objects(root, vec![first.clone()], &["clip"], 1);
        if let Some(batch) = s.try_next().await? {
            float = Some(float_of(&batch));
        }
    }
    let float = float.unwrap_or_default();
    // Pipeline: the wants, shard by shard, each embedded, written and committed as it ends.
    let job = ShardJob {
        catalog: catalog.clone(),
        generation: catalog.begin(Stage::Dino.name()).await?,
        schema: schema::dino(&meta, float),
        float,
        encoder_id: meta.id.clone(),
        fetcher: Arc::new(Fetcher::new(&params.fetch)?),
        // One run at a time (under the run lock).
        runner: Runner::new(&catalog, Stage::Dino, &Sharing::All)?,
    };
    job.runner
        .start(progress.as_ref(), "", Some(summary.needed));
    let wants = ctx
        .sql(&format!("{NEEDED} {WANTS}"))
        .await
        .map(|df| df.execute_stream())
        .map_err(wants_failed)?
        .await
        .map_err(wants_failed)?;
    job.embed_by_shard(wants, encoder, params, &mut summary, progress.as_ref())
        .await?;
    progress.finish();
    // Close: the candidates units this run covered.
    job.close(current).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn wants_failed(e: impl std::fmt::Display) -> Error {
    Error::table(
        table::CANDIDATES.name,
        format!("the dino stage's wants: {e}"),
    )
}

/// Where a run root's vectors are: the `embeddings` objects of shards embedded with both
/// encoders, and those of shards embedded with CLIP only.
struct Sources {
    with_dino: Vec<String>,
    without: Vec<String>,
}

impl Sources {
    /// Reads the embed and dino commits, checking that one DINOv2 encoder, `encoder`, wrote
    /// every DINOv2 vector there is; counts the images into `summary`.
    async fn read(catalog: &Catalog, encoder: &str, summary: &mut DinoSummary) -> Result<Sources> {
        let url = &catalog.root().url;
        for (_, r) in catalog.records::<DinoCommit>().await? {
            if r.encoder != encoder {
                return Err(Error::Usage(format!(
                    "the dino table of {url} was written by encoder {:?}, not {encoder:?}; use that encoder, or delete {url}/dino and {url}/_commits/dino to start over",
                    r.encoder
                )));
            }
        }
        let mut out = Sources {
            with_dino: Vec::new(),
            without: Vec::new(),
        };
        for (c, record) in catalog.records::<EmbedCommit>().await? {
            summary.images += record.rows;
            let paths = c.objects(&table::EMBEDDINGS).into_iter().map(|o| o.path);
            if record.without_dino() {
                out.without.extend(paths);
                continue;
            }
            let id = record.encoders.map(|e| e[1].clone()).unwrap_or_default();
            if id != encoder {
                return Err(Error::Usage(format!(
                    "shard {:?} of {url} was embedded with DINOv2 encoder {id:?}, not {encoder:?}: one run root takes one DINOv2 encoder",
                    c.unit
                )));
            }
            out.with_dino.extend(paths);
        }
        Ok(out)
    }
}

/// The candidate images, and which of them still need a vector: SQL over the candidates and
/// the key columns, in a session that spills to disk past `key_memory`, so no set of keys is
/// held here, however many images the candidates name.
async fn needs_session(
    catalog: &Catalog,
    units: &[Commit],
    sources: &Sources,
    key_memory: usize,
) -> Result<SessionContext> {
    let root = catalog.root();
    let dino_paths = catalog.paths(&table::DINO, Generations::All).await?;
    let candidate_paths: Vec<String> = units
        .iter()
        .flat_map(|c| c.objects(&table::CANDIDATES))
        .map(|o| o.path)
        .collect();
    let ctx = sql::spilling_session(root, key_memory)?;
    let key = Field::new("key", DataType::Utf8, true);
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let tables: [(&str, &[String], Vec<Field>); 4] = [
        (
            table::CANDIDATES.name,
            &candidate_paths,
            vec![text("a"), text("b")],
        ),
        ("embedded", &sources.with_dino, vec![key.clone()]),
        ("dino_keys", &dino_paths, vec![key.clone()]),
        (
            "clip_only",
            &sources.without,
            vec![key, text("uri"), text("shard"), text("content_hash")],
        ),
    ];
    for (name, paths, fields) in tables {
        register_keys(&ctx, root, name, paths, &fields).await?;
    }
    Ok(ctx)
}

/// Counts the candidate images and those that need a vector into `summary`.
async fn count_needs(ctx: &SessionContext, summary: &mut DinoSummary) -> Result<()> {
    let failed = |e: datafusion::error::DataFusionError| {
        Error::table(
            table::CANDIDATES.name,
            format!("the dino stage's key counts: {e}"),
        )
    };
    let counts = ctx
        .sql(&format!("{NEEDED} {COUNTS}"))
        .await
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let count = |name: &str| -> Result<u64> {
        let c = counts[0]
            .column_by_name(name)
            .ok_or_else(|| Error::Internal(format!("no column {name}")))?;
        let c = arrow::compute::cast(c, &DataType::Int64)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(c.as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
            .max(0) as u64)
    };
    summary.candidate_images = count("candidate_images")?;
    summary.embedded_at_embed = count("at_embed")?;
    summary.already = count("already")?;
    summary.needed = count("needed")?;
    let needing = summary.candidate_images - summary.embedded_at_embed;
    summary.share = match summary.images {
        0 => 0.0,
        n => needing as f64 / n as f64,
    };
    Ok(())
}

/// What writing one input shard's vectors needs.
struct ShardJob {
    catalog: Catalog,
    generation: u64,
    schema: arrow::datatypes::SchemaRef,
    float: FloatType,
    encoder_id: String,
    fetcher: Arc<Fetcher>,
    runner: Runner,
}

impl ShardJob {
    /// Embeds the wants (ordered by shard) one input shard at a time, committing each.
    async fn embed_by_shard(
        &self,
        mut wants: datafusion::physical_plan::SendableRecordBatchStream,
        mut encoder: OnnxEncoder,
        params: &DinoParams,
        summary: &mut DinoSummary,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut pending: Option<(String, Vec<Want>)> = None;
        loop {
            let batch = wants.try_next().await.map_err(wants_failed)?;
            let mut ready = Vec::new();
            match &batch {
                Some(b) => {
                    for (shard, want) in wants_of(b)? {
                        if pending.as_ref().is_some_and(|(s, _)| *s != shard) {
                            ready.extend(pending.take());
                        }
                        pending
                            .get_or_insert_with(|| (shard, Vec::new()))
                            .1
                            .push(want);
                    }
                }
                None => ready.extend(pending.take()),
            }
            for (shard, wants) in ready {
                let (back, (rows, errors)) = embed_wants(
                    &self.fetcher,
                    encoder,
                    wants,
                    params,
                    &self.schema,
                    self.float,
                    progress,
                )
                .await?;
                encoder = back;
                for (_, f) in &errors {
                    *summary.errors_by_kind.entry(f.kind.clone()).or_default() += 1;
                }
                let n = self.write(&shard, &rows, &errors).await?;
                summary.embedded += n;
                summary.errors += errors.len() as u64;
                summary.units += 1;
                progress.message(&format!(
                    "committed {shard} ({n} DINOv2 vectors, {} errors)",
                    errors.len()
                ));
            }
            if batch.is_none() {
                return Ok(());
            }
        }
    }

    /// Writes and commits one shard's vectors and errors; returns the vectors written.
    async fn write(
        &self,
        shard: &str,
        rows: &[RecordBatch],
        errors: &[(&'static str, Failure)],
    ) -> Result<u64> {
        let id = UnitId::dino_shard(self.generation, &segment_id(shard));
        let mut writer = self.catalog.writer(
            &table::DINO,
            &id,
            self.schema.clone(),
            WriteParams::default(),
        )?;
        let n = rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        for b in rows {
            writer.write(b).await?;
        }
        let objects = writer.finish().await?;
        let batch = crate::ingest::errors_batch(shard, errors)?;
        let error_objects = io::write_batches(
            self.catalog.root(),
            &format!("{}/{id}", table::DINO_ERRORS.dir),
            &batch.schema(),
            &[batch],
        )
        .await?;
        let record = DinoCommit {
            shard: shard.to_string(),
            rows: n,
            error_rows: errors.len() as u64,
            encoder: self.encoder_id.clone(),
            candidates: Vec::new(),
            version: crate::VERSION.to_string(),
        };
        let commit = Commit::new(&id, self.generation, &record)?
            .with(&table::DINO, objects)
            .with(&table::DINO_ERRORS, error_objects);
        self.runner.commit(&commit).await?;
        Ok(n)
    }

    /// The run's closing commit, naming the candidates units (`current`) it covered; earlier
    /// closing commits go.
    async fn close(&self, current: Vec<String>) -> Result<()> {
        let closing = UnitId::dino_closing(self.generation);
        let record = DinoCommit {
            shard: String::new(),
            rows: 0,
            error_rows: 0,
            encoder: self.encoder_id.clone(),
            candidates: current,
            version: crate::VERSION.to_string(),
        };
        let commit =
            Commit::new(&closing, self.generation, &record)?.with(&table::DINO, Vec::new());
        self.catalog.commit(CommitSet::DINO, &commit).await?;
        self.catalog
            .retract(CommitSet::DINO, |c| {
                DinoCommit::is_closing(c) && c.unit != *closing
            })
            .await?;
        Ok(())
    }
}

/// The wants of a batch of the wants query, with their input shards.
fn wants_of(b: &RecordBatch) -> Result<Vec<(String, Want)>> {
    let col = |n: &str| -> Result<StringArray> {
        let c = b
            .column_by_name(n)
            .ok_or_else(|| Error::Internal(format!("no column {n}")))?;
        let c =
            arrow::compute::cast(c, &DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(c.as_string::<i32>().clone())
    };
    let (keys, uris, shards, hashes) = (
        col("key")?,
        col("uri")?,
        col("shard")?,
        col("content_hash")?,
    );
    Ok((0..b.num_rows())
        .map(|i| {
            let want = Want {
                key: keys.value(i).to_string(),
                uri: uris.value(i).to_string(),
                hash: hashes.value(i).to_string(),
            };
            (shards.value(i).to_string(), want)
        })
        .collect())
}

/// Memory the dino stage's key queries may use before they spill to disk, by default.
pub const DEFAULT_KEY_MEMORY: usize = 512 << 20;

/// The distinct candidate images (`needed`), for the queries below.
const NEEDED: &str = "WITH needed AS (SELECT DISTINCT key FROM \
    (SELECT a AS key FROM candidates UNION ALL SELECT b AS key FROM candidates) k WHERE key IS NOT NULL)";

/// How many candidate images there are, how many got a vector from embed or an earlier dino
/// run, and how many this run must embed.
const COUNTS: &str = "SELECT count(*) AS candidate_images, count(e.key) AS at_embed, \
    count(d.key) AS already, \
    sum(CASE WHEN w.key IS NOT NULL AND d.key IS NULL THEN 1 ELSE 0 END) AS needed \
    FROM needed n \
    LEFT JOIN (SELECT DISTINCT key FROM embedded) e ON e.key = n.key \
    LEFT JOIN (SELECT DISTINCT key FROM dino_keys) d ON d.key = n.key \
    LEFT JOIN (SELECT DISTINCT key FROM clip_only) w ON w.key = n.key";

/// The candidate images of CLIP-only shards with no DINOv2 vector yet, each once (its first
/// shard), ordered by shard so a shard's images are embedded and committed together.
const WANTS: &str = "SELECT key, uri, shard, content_hash FROM ( \
    SELECT c.key, c.uri, c.shard, c.content_hash, \
    row_number() OVER (PARTITION BY c.key ORDER BY c.shard) AS r \
    FROM clip_only c JOIN needed n ON n.key = c.key \
    WHERE c.key NOT IN (SELECT key FROM dino_keys WHERE key IS NOT NULL)) \
    WHERE r = 1 ORDER BY shard, key";

/// Registers the objects `paths` as table `name` with only `fields`, or an empty table of those
/// fields when there are none.
async fn register_keys(
    ctx: &SessionContext,
    root: &Location,
    name: &str,
    paths: &[String],
    fields: &[Field],
) -> Result<()> {
    let columns: Vec<String> = fields.iter().map(|f| format!("\"{}\"", f.name())).collect();
    if paths.is_empty() {
        let schema = Arc::new(Schema::new(fields.to_vec()));
        let table = MemTable::try_new(schema, vec![vec![]]).map_err(|e| Error::table(name, e))?;
        ctx.register_table(name, Arc::new(table))
            .map_err(|e| Error::table(name, e))?;
        return Ok(());
    }
    let all = format!("{name}_objects");
    sql::register_objects(ctx, root, &all, paths).await?;
    let view = ctx
        .sql(&format!("SELECT {} FROM {all}", columns.join(", ")))
        .await
        .map_err(|e| Error::table(name, e))?
        .into_view();
    ctx.register_table(name, view)
        .map_err(|e| Error::table(name, e))?;
    Ok(())
}

fn float_of(batch: &RecordBatch) -> FloatType {
    match batch
        .schema()
        .field_with_name("clip")
        .map(|f| f.data_type().clone())
    {
        Ok(arrow::datatypes::DataType::FixedSizeList(item, _))
            if *item.data_type() == arrow::datatypes::DataType::Float16 =>
        {
            FloatType::F16
        }
        _ => FloatType::F32,
    }
}

type Embedded = (Vec<RecordBatch>, Vec<(&'static str, Failure)>);

/// A want after decoding: its bytes' hash, and the input tensor or why there is none.
type Prepared = (Want, String, Result<Vec<f32>, (String, String)>);

/// A want ready for inference: its bytes' hash and input tensor.
type Ready = (Want, String, Vec<f32>);

/// Fetches, decodes and embeds one shard's wants, batch by batch; hands the encoder back.
async fn embed_wants(
    fetcher: &Arc<Fetcher>,
    encoder: OnnxEncoder,
    wants: Vec<Want>,
    params: &DinoParams,
    schema: &arrow::datatypes::SchemaRef,
    float: FloatType,
    progress: &dyn Progress,
) -> Result<(OnnxEncoder, Embedded)> {
    let (tx, mut rx) = mpsc::channel::<Fetched<Want>>(params.batch_size * 2);
    let wants = wants.into_iter().map(|w| (w.uri.clone(), w)).collect();
    let fetching = tokio::spawn(fetch_uris(
        fetcher.clone(),
        wants,
        params.image_column.clone(),
        tx,
    ));
    let mut batches = Vec::new();
    let mut errors = Vec::new();
    let mut pending: Vec<(Want, Bytes)> = Vec::new();
    let transform = Transform::new(encoder.manifest());
    let transform_exif = encoder.manifest().exif;
    let mut enc = Some(encoder);
    let mut done = false;
    while !done {
        match rx.recv().await {
            Some((w, Ok(bytes))) => pending.push((w, bytes)),
            Some((w, Err(e))) => {
                progress.advance(1);
                errors.push((
                    "dino",
                    Failure {
                        key: w.key,
                        uri: w.uri,
                        kind: e.kind,
                        message: e.message,
                    },
                ))
            }
            None => done = true,
        }
        if pending.len() >= params.batch_size || (done && !pending.is_empty()) {
            let items = std::mem::take(&mut pending);
            let n = items.len() as u64;
            let mut e = enc.take().expect("encoder returned");
            let transform = transform.clone();
            let decode = DecodeParams {
                exif: transform_exif,
                ..params.decode.clone()
            };
            let schema = schema.clone();
            let (e, out) = tokio::task::spawn_blocking(move || {
                let out = embed_batch(&mut e, &transform, &decode, items, &schema, float);
                (e, out)
            })
            .await
            .map_err(|e| Error::Internal(format!("dino batch: {e}")))?;
            enc = Some(e);
            let (batch, failed) = out?;
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
            errors.extend(failed);
            progress.advance(n);
        }
    }
    fetching
        .await
        .map_err(|e| Error::Internal(format!("dino fetch: {e}")))?;
    Ok((enc.take().expect("encoder returned"), (batches, errors)))
}

fn embed_batch(
    encoder: &mut OnnxEncoder,
    transform: &Transform,
    decode: &DecodeParams,
    items: Vec<(Want, Bytes)>,
    schema: &arrow::datatypes::SchemaRef,
    float: FloatType,
) -> Result<(RecordBatch, Vec<(&'static str, Failure)>)> {
    let prepared: Vec<Prepared> = items
        .into_par_iter()
        .map_init(
            || Preprocessor::new(vec![transform.clone()]),
            |pre, (w, bytes)| {
                let hash = blake3::hash(&bytes).to_hex().to_string();
                let imported = w.hash.starts_with(crate::table::schema::IMPORTED_HASH);
                if !imported && hash != w.hash {
                    let msg = format!(
                        "the bytes changed since embed (content hash {hash}, embedded {})",
                        w.hash
                    );
                    return (w, hash, Err(("changed".to_string(), msg)));
                }
                let r = prepare(pre, &bytes, decode)
                    .map(|(_, _, mut t)| t.remove(0))
                    .map_err(|f| (f.kind.to_string(), f.message));
                (w, hash, r)
            },
        )
        .collect();
    let mut ok: Vec<Ready> = Vec::new();
    let mut failed = Vec::new();
    for (w, hash, r) in prepared {
        match r {
            Ok(t) => ok.push((w, hash, t)),
            Err((kind, message)) => failed.push((
                "dino",
                Failure {
                    key: w.key,
                    uri: w.uri,
                    kind,
                    message,
                },
            )),
        }
    }
    let s = encoder.manifest().image_size as usize;
    let mut input = Array4::<f32>::zeros((ok.len(), 3, s, s));
    for (n, (_, _, t)) in ok.iter().enumerate() {
        input
            .index_axis_mut(ndarray::Axis(0), n)
            .as_slice_mut()
            .expect("a fresh array is contiguous")
            .copy_from_slice(t);
    }
    let vectors = if ok.is_empty() {
        Vec::new()
    } else {
        encoder
            .embed(input.view())?
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect()
    };
    let field = schema.field_with_name("dino").expect("dino schema");
    let column = crate::table::io::vector_column(field, &vectors, float)?;
    let strings = |f: &dyn Fn(&Ready) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(ok.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            strings(&|r| r.0.key.as_str()),
            strings(&|r| r.0.uri.as_str()),
            strings(&|r| r.1.as_str()),
            column,
        ],
    )
    .map_err(|e| Error::table(table::DINO.name, e))?;
    Ok((batch, failed))
}
