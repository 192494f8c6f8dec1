//! The embed stage: input shards to the `embeddings` and `errors` tables of a run root.
//! `ingest` lists and reads the input shards; decoding, preprocessing and the encoders are
//! the shared `encoder` module.
//!
//! Four parts overlap through bounded queues, so memory is set by batch and queue sizes,
//! never by the corpus:
//!
//! ```text
//! fetch (async, per shard) -> decode + preprocess (thread pool) -> inference (one thread,
//! CLIP, and DINOv2 unless `--encoders clip`) -> writer (async, one Parquet object per shard, then its commit manifest)
//! ```
//!
//! A shard is the unit of commit: its data objects are written, then its catalog commit
//! (`_commits/embed/<id>.json`); a rerun skips committed shards and redoes any other, so a
//! killed run loses and repeats nothing.

pub mod import;

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use ndarray::Array4;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::encoder::preprocess::{prepare, DecodeParams, ImageFault, Preprocessor, Transform};
use crate::encoder::OnnxEncoder;
use crate::error::{Error, Result};
use crate::ingest::{self, Failure, IngestParams, Ingested, Shard, ShardRead, ShardReader};
use crate::lease::ClaimParams;
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::Location;
pub use crate::table::records::EmbedCommit;
use crate::table::schema::{self, FloatType};
use crate::table::{self, io, Catalog, Commit, CommitSet, Generations, TableWriter, WriteParams};
use crate::units::{self, Runner, Sharing, Turn};

/// Settings of the embed stage.
#[derive(Clone, Debug)]
pub struct EmbedParams {
    /// Images per inference batch.
    pub batch_size: usize,
    /// Decode and preprocess threads; 0 means one per core.
    pub decode_threads: usize,
    /// Objects fetched at once from a folder shard.
    pub fetch_concurrency: usize,
    /// Batches that may wait between stages.
    pub queue_batches: usize,
    /// Float type of the stored embeddings.
    pub float: FloatType,
    /// Decoding limits.
    pub decode: DecodeParams,
    /// Only shards assigned to worker `i` of `n` (by a hash of the shard name).
    pub worker: Option<(u32, u32)>,
    /// Rows per Parquet row group.
    pub rows_per_group: usize,
    /// How the input is listed and read.
    pub ingest: IngestParams,
    /// Claim shards with leases (`--claim`): any number of workers share the input.
    pub claim: Option<ClaimParams>,
}

impl Default for EmbedParams {
    fn default() -> Self {
        EmbedParams {
            batch_size: 32,
            decode_threads: 0,
            fetch_concurrency: 16,
            queue_batches: 4,
            float: FloatType::F32,
            decode: DecodeParams::default(),
            worker: None,
            rows_per_group: 8192,
            ingest: IngestParams::default(),
            claim: None,
        }
    }
}

/// Which encoders `embed` runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum EncoderSet {
    /// CLIP and DINOv2 on every image.
    #[default]
    #[value(name = "clip,dino", alias = "both")]
    #[serde(rename = "clip,dino")]
    Both,
    /// CLIP only; DINOv2 later with `blindspot dino`, on candidate images only.
    #[value(name = "clip")]
    #[serde(rename = "clip")]
    Clip,
}

/// Settings of the embed stage: a spec's `[embed]` section and the flags of `blindspot embed`
/// (one shape, one check); [`EmbedSettings::params`] makes the [`EmbedParams`].
#[derive(Clone, Debug, serde::Deserialize, clap::Args)]
#[serde(default, rename_all = "kebab-case")]
pub struct EmbedSettings {
    /// Images per inference batch.
    #[arg(long, default_value_t = EmbedParams::default().batch_size)]
    pub batch_size: usize,
    /// Decode threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    /// Objects (or URLs) fetched at once.
    #[arg(long, default_value_t = EmbedParams::default().fetch_concurrency)]
    pub fetch_concurrency: usize,
    /// Embedding float type: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: FloatType,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeParams::default().max_pixels)]
    pub max_pixels: u64,
    // Decode large JPEGs at a reduced DCT scale (the flag `--no-dct-scaling` turns it off;
    // its help is the flag's).
    #[arg(
        long = "no-dct-scaling",
        action = clap::ArgAction::SetFalse,
        help = "Always decode JPEGs at full size (no DCT scaling)"
    )]
    pub dct_scaling: bool,
    /// Rows per Parquet row group (spec only).
    #[arg(skip = EmbedParams::default().rows_per_group)]
    pub rows_per_group: usize,
    /// Encoders to run: clip,dino (every image through both) or clip (DINOv2 later, with
    /// `blindspot dino`, on candidate images only).
    #[arg(long, value_enum, default_value = "clip,dino")]
    pub encoders: EncoderSet,
    /// How the input is read.
    #[command(flatten)]
    #[serde(flatten)]
    pub ingest: crate::ingest::IngestSettings,
    /// Keys of the section that no setting has (refused by `check`).
    #[arg(skip)]
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        let p = EmbedParams::default();
        EmbedSettings {
            batch_size: p.batch_size,
            decode_threads: p.decode_threads,
            fetch_concurrency: p.fetch_concurrency,
            dtype: p.float,
            max_pixels: p.decode.max_pixels,
            dct_scaling: p.decode.dct_scaling,
            rows_per_group: p.rows_per_group,
            encoders: EncoderSet::Both,
            ingest: Default::default(),
            unknown: BTreeMap::new(),
        }
    }
}

impl EmbedSettings {
    /// Every problem with these settings, by name (unknown keys too).
    pub fn check(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .unknown
            .keys()
            .map(|k| format!("unknown field `{k}`"))
            .collect();
        if self.batch_size == 0 {
            problems.push("batch-size must be at least 1".into());
        }
        if self.fetch_concurrency == 0 {
            problems.push("fetch-concurrency must be at least 1".into());
        }
        problems.extend(self.ingest.check());
        problems
    }

    /// The stage parameters these settings describe (one run, no workers).
    pub fn params(&self) -> EmbedParams {
        EmbedParams {
            batch_size: self.batch_size,
            decode_threads: self.decode_threads,
            fetch_concurrency: self.fetch_concurrency,
            float: self.dtype,
            decode: DecodeParams {
                max_pixels: self.max_pixels,
                dct_scaling: self.dct_scaling,
                ..DecodeParams::default()
            },
            rows_per_group: self.rows_per_group,
            ingest: self.ingest.params(self.fetch_concurrency),
            ..EmbedParams::default()
        }
    }

    /// True when the embed stage runs CLIP only.
    pub fn clip_only(&self) -> bool {
        self.encoders == EncoderSet::Clip
    }
}

/// What an embed run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EmbedSummary {
    /// Shards in the input (for this worker).
    pub shards: usize,
    /// Shards already committed by an earlier run, skipped.
    pub skipped: usize,
    /// Shards embedded and committed by this run.
    pub committed: usize,
    /// Shards this worker embedded but another committed first (claiming workers, after a
    /// lease expired under a slow holder); their objects were deleted.
    pub discarded: usize,
    /// Images embedded by this run.
    pub images: u64,
    /// Inputs that became `errors` rows in this run.
    pub errors: u64,
    /// Those errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Input rows skipped because img2dataset did not download them (its `status` is not
    /// `success`); they are neither images nor errors.
    pub skipped_rows: u64,
    /// Those rows by `status`.
    pub skipped_by_status: BTreeMap<String, u64>,
    /// True when only CLIP ran (`--encoders clip`).
    pub clip_only: bool,
    /// Wall time of the run.
    pub seconds: f64,
}

/// The committed shards under a run root, by shard id.
pub async fn committed(catalog: &Catalog) -> Result<HashMap<String, EmbedCommit>> {
    catalog
        .commits_of(CommitSet::EMBED)
        .await?
        .iter()
        .map(|c| c.record::<EmbedCommit>().map(|s| (s.id.clone(), s)))
        .collect()
}

/// One decoded and preprocessed image on its way to inference.
struct Prepared {
    shard: usize,
    /// Its place in the shard's input order.
    seq: u64,
    key: String,
    uri: String,
    width: u32,
    height: u32,
    hash: String,
    caption: Option<String>,
    url: Option<String>,
    tensors: Vec<Vec<f32>>,
}

/// An embedded image.
struct Row {
    key: String,
    uri: String,
    width: u32,
    height: u32,
    hash: String,
    caption: Option<String>,
    url: Option<String>,
    clip: Vec<f32>,
    dino: Option<Vec<f32>>,
}

/// What reaches the writer: shard index, place in the shard's input order, and what became of it.
enum Out {
    Row(usize, u64, Row),
    Failed(usize, u64, &'static str, Failure),
    End(usize, ShardRead),
    Fatal(Error),
}

/// Embeds every uncommitted shard of `input` into `root`. Encoders are loaded (and so
/// validated) by the caller before any data moves; without `dino` only CLIP runs and the
/// DINOv2 vectors come later from `blindspot dino`, for candidate images only.
pub async fn embed(
    input: &Location,
    root: &Location,
    clip: OnnxEncoder,
    dino: Option<OnnxEncoder>,
    params: &EmbedParams,
    progress: Arc<dyn Progress>,
) -> Result<EmbedSummary> {
    let started = Instant::now();
    if params.batch_size == 0 {
        return Err(Error::Usage("batch size must be at least 1".into()));
    }
    let sharing = Sharing::new(params.worker, params.claim.as_ref())?;
    let body = embed_shards(input, root, clip, dino, params, &sharing, progress, started);
    units::exclusive(root, Stage::Embed, &sharing, body).await
}

#[allow(clippy::too_many_arguments)]
async fn embed_shards(
    input: &Location,
    root: &Location,
    clip: OnnxEncoder,
    dino: Option<OnnxEncoder>,
    params: &EmbedParams,
    sharing: &Sharing,
    progress: Arc<dyn Progress>,
    started: Instant,
) -> Result<EmbedSummary> {
    // Plan: this worker's shards not committed yet.
    let mut ingest = params.ingest.clone();
    ingest.fetch.concurrency = params.fetch_concurrency;
    let catalog = Catalog::new(root);
    let (pending, mut summary) = plan(input, &ingest, &catalog, sharing).await?;
    let runner = Runner::new(&catalog, Stage::Embed, sharing)?;
    let total_items: Option<u64> = pending.iter().map(|s| s.known_items()).sum();
    runner.start(progress.as_ref(), "", total_items);
    let generation = match pending.is_empty() {
        true => 0,
        false => catalog.begin(Stage::Embed.name()).await?,
    };
    let dino_meta = dino.as_ref().map(|d| d.meta());
    let schema = schema::embeddings(&clip.meta(), dino_meta.as_ref(), params.float);
    summary.clip_only = dino.is_none();

    // Pipeline: read -> decode threads -> inference thread -> the writers here.
    let pipeline = Pipeline::start(input, &ingest, &runner, &pending, clip, dino, params)?;
    let mut writers = Writers {
        catalog: &catalog,
        runner: &runner,
        pending: &pending,
        schema,
        generation,
        params,
        open: HashMap::new(),
    };
    let mut out_rx = pipeline.out_rx;
    let mut fatal = None;
    // Whatever ends the loop (the last shard, a fatal error from a thread, a failed write),
    // the threads are stopped and joined before the error goes up: nothing prints after it.
    let drained = async {
        while let Some(msg) = out_rx.recv().await {
            if let Out::Fatal(e) = msg {
                fatal = Some(e);
                break;
            }
            writers.take(msg, &mut summary, progress.as_ref()).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = drained {
        fatal.get_or_insert(e);
    }
    drop(out_rx);
    pipeline.reader.abort();
    for d in pipeline.decoders {
        let _ = d.join();
    }
    let _ = pipeline.inference.join();
    let ran = match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    };
    runner.finish(ran).await?;
    progress.finish();
    if !writers.open.is_empty() {
        return Err(Error::Internal(format!(
            "{} shard(s) ended without all their rows",
            writers.open.len()
        )));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The shards of `input` this run embeds (this worker's, not committed yet), and the summary
/// counting them.
async fn plan(
    input: &Location,
    ingest: &IngestParams,
    catalog: &Catalog,
    sharing: &Sharing,
) -> Result<(Vec<Shard>, EmbedSummary)> {
    let all = ingest::list_shards(input, ingest).await?;
    let done = committed(catalog).await?;
    let mine: Vec<Shard> = all
        .into_iter()
        .filter(|s| sharing.takes_name(&s.name))
        .collect();
    let shards = mine.len();
    let pending: Vec<Shard> = mine
        .into_iter()
        .filter(|s| !done.contains_key(&s.id))
        .collect();
    let summary = EmbedSummary {
        shards,
        skipped: shards - pending.len(),
        ..Default::default()
    };
    if summary.skipped > 0 {
        tracing::info!(
            skipped = summary.skipped,
            "shards already committed by an earlier run are skipped"
        );
    }
    Ok((pending, summary))
}

/// The running pipeline: the reader task, the decode threads and the inference thread, and
/// what they send the writers.
struct Pipeline {
    reader: tokio::task::JoinHandle<()>,
    decoders: Vec<std::thread::JoinHandle<()>>,
    inference: std::thread::JoinHandle<()>,
    out_rx: mpsc::Receiver<Out>,
}

impl Pipeline {
    fn start(
        input: &Location,
        ingest: &IngestParams,
        runner: &Runner,
        pending: &[Shard],
        clip: OnnxEncoder,
        dino: Option<OnnxEncoder>,
        params: &EmbedParams,
    ) -> Result<Pipeline> {
        let mut transforms = vec![Transform::new(clip.manifest())];
        if let Some(d) = &dino {
            transforms.push(Transform::new(d.manifest()));
        }
        let mut decode = params.decode.clone();
        decode.exif = crate::encoder::shared_exif(
            std::iter::once(clip.manifest()).chain(dino.as_ref().map(OnnxEncoder::manifest)),
        )?;
        let queue = params.batch_size * params.queue_batches.max(1);
        let (work_tx, work_rx) = mpsc::channel::<(usize, u64, Ingested)>(queue);
        let (prep_tx, prep_rx) = std_mpsc::sync_channel::<Prepared>(queue);
        let (out_tx, out_rx) = mpsc::channel::<Out>(queue * 2);
        let threads = match params.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let work_rx = Arc::new(Mutex::new(work_rx));
        let mut decoders = Vec::new();
        for _ in 0..threads {
            let rx = work_rx.clone();
            let prep_tx = prep_tx.clone();
            let out_tx = out_tx.clone();
            let transforms = transforms.clone();
            let decode = decode.clone();
            decoders.push(std::thread::spawn(move || {
                decode_worker(rx, prep_tx, out_tx, transforms, decode)
            }));
        }
        drop(prep_tx);
        let infer_out = out_tx.clone();
        let batch_size = params.batch_size;
        let inference = std::thread::spawn(move || {
            inference_worker(prep_rx, infer_out, clip, dino, batch_size)
        });
        let shards = ShardReader::new(input, ingest)?;
        // Shards in input order (claiming: leased one by one, coming back to those others
        // hold), each read into the pipeline; the writers commit a shard when all its rows
        // are through.
        let queue = runner.queue(
            pending.iter().cloned().enumerate().collect(),
            |(_, shard): &(usize, Shard)| shard.id.clone(),
        );
        let reader = tokio::spawn(read_shards(shards, queue, work_tx, out_tx));
        Ok(Pipeline {
            reader,
            decoders,
            inference,
            out_rx,
        })
    }
}

/// The reader task: every shard the queue hands out, item by item into the pipeline, then
/// its end (with what was read); a failure ends the run.
async fn read_shards<N: Fn(&(usize, Shard)) -> String>(
    shards: ShardReader,
    mut queue: crate::units::Queue<(usize, Shard), N>,
    work_tx: mpsc::Sender<(usize, u64, Ingested)>,
    out_tx: mpsc::Sender<Out>,
) {
    loop {
        let (idx, shard) = match queue.next().await {
            Ok(Some(Turn::Do(unit))) => unit,
            Ok(Some(Turn::ByOthers(_))) => continue,
            Ok(None) => return,
            Err(e) => {
                let _ = out_tx.send(Out::Fatal(e)).await;
                return;
            }
        };
        let (tx, mut rx) = mpsc::channel(64);
        let read = shards.read(&shard, tx);
        let forward = async {
            let mut n = 0u64;
            while let Some(item) = rx.recv().await {
                if work_tx.send((idx, n, item)).await.is_err() {
                    break;
                }
                n += 1;
            }
            n
        };
        let (read, n) = tokio::join!(read, forward);
        let read = match read {
            Ok(r) => ShardRead { sent: n, ..r },
            Err(e) => {
                let _ = out_tx.send(Out::Fatal(e)).await;
                return;
            }
        };
        if out_tx.send(Out::End(idx, read)).await.is_err() {
            return;
        }
    }
}

/// The shards being written, each committed when all its rows are through.
struct Writers<'a> {
    catalog: &'a Catalog,
    runner: &'a Runner,
    pending: &'a [Shard],
    schema: SchemaRef,
    generation: u64,
    params: &'a EmbedParams,
    open: HashMap<usize, ShardWriter>,
}

impl Writers<'_> {
    /// Takes one message from the pipeline (not `Fatal`) into its shard's writer.
    async fn take(
        &mut self,
        msg: Out,
        summary: &mut EmbedSummary,
        progress: &dyn Progress,
    ) -> Result<()> {
        let idx = match &msg {
            Out::Row(i, _, _) | Out::Failed(i, _, _, _) | Out::End(i, _) => *i,
            Out::Fatal(_) => unreachable!("the caller handles Fatal"),
        };
        let shard = &self.pending[idx];
        let writer = match self.open.entry(idx) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // Two workers may embed one shard after a takeover: objects of their own.
                let stem = format!("{}{}", shard.id, self.runner.suffix(self.generation));
                v.insert(ShardWriter::new(
                    self.catalog,
                    shard,
                    &stem,
                    self.schema.clone(),
                    self.params,
                )?)
            }
        };
        match msg {
            Out::Row(_, seq, row) => {
                writer.push(seq, Done::Row(row)).await?;
                summary.images += 1;
                progress.advance(1);
            }
            Out::Failed(_, seq, stage, f) => {
                tracing::debug!(key = %f.key, kind = %f.kind, "input became an errors row: {}", f.message);
                *summary.errors_by_kind.entry(f.kind.clone()).or_default() += 1;
                summary.errors += 1;
                writer.push(seq, Done::Failed(stage, f)).await?;
                progress.advance(1);
            }
            Out::End(_, read) => {
                writer.expected = Some(read.sent);
                for (status, n) in read.skipped {
                    writer.skipped += n;
                    summary.skipped_rows += n;
                    *summary.skipped_by_status.entry(status).or_default() += n;
                }
            }
            Out::Fatal(_) => unreachable!("the caller handles Fatal"),
        }
        if !writer.complete() {
            return Ok(());
        }
        let writer = self.open.remove(&idx).expect("present");
        let Some(commit) = writer.commit(self.runner, shard, self.generation).await? else {
            summary.discarded += 1;
            return Ok(());
        };
        summary.committed += 1;
        progress.message(&format!(
            "committed {} ({} images, {} errors)",
            shard.name, commit.rows, commit.error_rows
        ));
        tracing::info!(shard = %shard.name, rows = commit.rows, errors = commit.error_rows, "shard committed");
        Ok(())
    }
}

fn decode_worker(
    rx: Arc<Mutex<mpsc::Receiver<(usize, u64, Ingested)>>>,
    prep_tx: std_mpsc::SyncSender<Prepared>,
    out_tx: mpsc::Sender<Out>,
    transforms: Vec<Transform>,
    decode: DecodeParams,
) {
    let mut pre = Preprocessor::new(transforms.clone());
    loop {
        let next = rx.lock().map(|mut r| r.blocking_recv());
        let Ok(Some((shard, seq, item))) = next else {
            return;
        };
        let item = match item {
            Ingested::Failed(f) => {
                if out_tx
                    .blocking_send(Out::Failed(shard, seq, "ingest", f))
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ingested::Image(item) => item,
        };
        // A decoder that panics on crafted bytes loses that image, not the shard: the panic
        // becomes an `errors` row of kind `panic`, and the preprocessor starts afresh.
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare(&mut pre, &item.bytes, &decode)
        }))
        .unwrap_or_else(|panic| {
            pre = Preprocessor::new(transforms.clone());
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ImageFault {
                kind: "panic",
                message: format!(
                    "decoding panicked: {}",
                    why.chars().take(200).collect::<String>()
                ),
            })
        });
        match prepared {
            Ok((width, height, tensors)) => {
                let hash = blake3::hash(&item.bytes).to_hex().to_string();
                let p = Prepared {
                    shard,
                    seq,
                    key: item.key,
                    uri: item.uri,
                    width,
                    height,
                    hash,
                    caption: item.caption,
                    url: item.url,
                    tensors,
                };
                if prep_tx.send(p).is_err() {
                    return;
                }
            }
            Err(fault) => {
                let f = Failure {
                    key: item.key,
                    uri: item.uri,
                    kind: fault.kind.to_string(),
                    message: fault.message,
                };
                if out_tx
                    .blocking_send(Out::Failed(shard, seq, "decode", f))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn inference_worker(
    rx: std_mpsc::Receiver<Prepared>,
    out_tx: mpsc::Sender<Out>,
    mut clip: OnnxEncoder,
    mut dino: Option<OnnxEncoder>,
    batch_size: usize,
) {
    let mut batch: Vec<Prepared> = Vec::with_capacity(batch_size);
    loop {
        // Wait briefly for a full batch; run a partial one when the queue goes quiet.
        let wait = if batch.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(20)
        };
        let closed = match rx.recv_timeout(wait) {
            Ok(p) => {
                batch.push(p);
                if batch.len() < batch_size {
                    continue;
                }
                false
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => false,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => true,
        };
        if !batch.is_empty() {
            let items = std::mem::take(&mut batch);
            match run_batch(&mut clip, dino.as_mut(), &items) {
                Ok((c, d)) => {
                    let mut d = d.map(Vec::into_iter);
                    for (p, c) in items.into_iter().zip(c) {
                        let row = Row {
                            key: p.key,
                            uri: p.uri,
                            width: p.width,
                            height: p.height,
                            hash: p.hash,
                            caption: p.caption,
                            url: p.url,
                            clip: c,
                            dino: d.as_mut().and_then(Iterator::next),
                        };
                        if out_tx.blocking_send(Out::Row(p.shard, p.seq, row)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Out::Fatal(e));
                    return;
                }
            }
        }
        if closed {
            return;
        }
    }
}

type Embeddings = Vec<Vec<f32>>;

fn run_batch(
    clip: &mut OnnxEncoder,
    dino: Option<&mut OnnxEncoder>,
    items: &[Prepared],
) -> Result<(Embeddings, Option<Embeddings>)> {
    let run = |i: usize, enc: &mut OnnxEncoder| -> Result<Embeddings> {
        let s = enc.manifest().image_size as usize;
        let mut input = Array4::<f32>::zeros((items.len(), 3, s, s));
        for (n, p) in items.iter().enumerate() {
            input
                .index_axis_mut(ndarray::Axis(0), n)
                .as_slice_mut()
                .expect("a fresh array is contiguous")
                .copy_from_slice(&p.tensors[i]);
        }
        let out = enc.embed(input.view())?;
        Ok(out.rows().into_iter().map(|r| r.to_vec()).collect())
    };
    let c = run(0, clip)?;
    let d = match dino {
        Some(d) => Some(run(1, d)?),
        None => None,
    };
    Ok((c, d))
}

/// What became of one input item.
enum Done {
    Row(Row),
    Failed(&'static str, Failure),
}

/// Rows of one shard on their way to storage, written in the shard's input order whatever
/// order the decode and inference threads finish them in: the same input gives the same
/// objects, byte for byte, and the same partition. Items that finish early wait in `early`,
/// which holds at most the items in flight (the queues and the threads between reader and
/// writer), never the shard.
struct ShardWriter {
    expected: Option<u64>,
    received: u64,
    next: u64,
    early: std::collections::BTreeMap<u64, Done>,
    skipped: u64,
    rows: Vec<Row>,
    rows_written: u64,
    errors: Vec<(&'static str, Failure)>,
    writer: TableWriter,
    float: FloatType,
    rows_per_group: usize,
    schema: SchemaRef,
    shard: String,
    stem: String,
}

impl ShardWriter {
    fn new(
        catalog: &Catalog,
        shard: &Shard,
        stem: &str,
        schema: SchemaRef,
        params: &EmbedParams,
    ) -> Result<ShardWriter> {
        let write = WriteParams {
            rows_per_group: params.rows_per_group.max(1),
            ..WriteParams::default()
        };
        let writer = catalog.writer(&table::EMBEDDINGS, stem, schema.clone(), write)?;
        Ok(ShardWriter {
            expected: None,
            received: 0,
            next: 0,
            early: std::collections::BTreeMap::new(),
            skipped: 0,
            rows: Vec::new(),
            rows_written: 0,
            errors: Vec::new(),
            writer,
            float: params.float,
            rows_per_group: params.rows_per_group.max(1),
            schema,
            shard: shard.name.clone(),
            stem: stem.to_string(),
        })
    }

    fn complete(&self) -> bool {
        self.expected == Some(self.received)
    }

    /// Takes item `seq` of the shard; writes it, and the items after it that came early, once
    /// every item before it is in.
    async fn push(&mut self, seq: u64, done: Done) -> Result<()> {
        self.received += 1;
        self.early.insert(seq, done);
        while let Some(done) = self.early.remove(&self.next) {
            self.next += 1;
            match done {
                Done::Row(row) => {
                    self.rows.push(row);
                    if self.rows.len() >= self.rows_per_group {
                        self.flush().await?;
                    }
                }
                Done::Failed(stage, f) => self.errors.push((stage, f)),
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let batch = rows_to_batch(&self.schema, &self.shard, &rows, self.float)?;
        self.rows_written += rows.len() as u64;
        self.writer.write(&batch).await
    }

    /// Writes the shard's objects and commits them; `None` when claiming and another worker
    /// committed the shard first.
    async fn commit(
        mut self,
        runner: &Runner,
        shard: &Shard,
        generation: u64,
    ) -> Result<Option<EmbedCommit>> {
        let catalog = runner.catalog();
        self.flush().await?;
        let embeddings = self.writer.finish().await?;
        let batch = ingest::errors_batch(&shard.name, &self.errors)?;
        let errors = io::write_batches(
            catalog.root(),
            &format!("{}/{}", table::ERRORS.dir, self.stem),
            &batch.schema(),
            &[batch],
        )
        .await?;
        let meta = self.schema.metadata();
        let record = EmbedCommit {
            shard: shard.name.clone(),
            shard_uri: shard.uri.clone(),
            id: shard.id.clone(),
            embeddings: embeddings[0].path.clone(),
            errors: errors[0].path.clone(),
            rows: self.rows_written,
            error_rows: self.errors.len() as u64,
            encoders: Some([
                meta["blindspot.clip.id"].clone(),
                meta.get("blindspot.dino.id").cloned().unwrap_or_default(),
            ]),
            skipped_rows: self.skipped,
            version: crate::VERSION.to_string(),
        };
        let commit = Commit::new(&shard.id, generation, &record)?
            .with(&table::EMBEDDINGS, embeddings)
            .with(&table::ERRORS, errors);
        Ok(runner.commit(&commit).await?.then_some(record))
    }
}

fn rows_to_batch(
    schema: &SchemaRef,
    shard: &str,
    rows: &[Row],
    float: FloatType,
) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&Row) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| r.key.as_str()),
        strings(&|r| r.uri.as_str()),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| shard))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.width))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.height))),
        strings(&|r| r.hash.as_str()),
        io::vectors(
            schema.field_with_name("clip").expect("schema has clip"),
            rows,
            |r| &r.clip,
            float,
        )?,
    ];
    let mut columns = columns;
    if let Ok(field) = schema.field_with_name("dino") {
        columns.push(io::vectors(
            field,
            rows,
            |r| r.dino.as_deref().unwrap_or_default(),
            float,
        )?);
    }
    columns.push(Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.caption.as_deref()),
    )));
    columns.push(Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.url.as_deref()),
    )));
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::table(table::EMBEDDINGS.name, e))
}

/// Every committed embedding under a run root, by key: `(clip, dino)` as f32, the DINOv2
/// vector from wherever it is (`embeddings.dino` or the `dino` table; empty when the image
/// has none). For tests, the demo and small corpora; large runs are read with SQL instead.
pub async fn read_vectors(root: &Location) -> Result<HashMap<String, (Vec<f32>, Vec<f32>)>> {
    let mut out = HashMap::new();
    let mut batches = Catalog::new(root)
        .scan(&table::EMBEDDINGS, &["key", "clip"], Generations::All)
        .await?;
    while let Some(batch) = batches.try_next().await? {
        let keys = io::strings(&batch, "key")?;
        let clip = io::vector_rows(&batch, "clip")?;
        for (k, c) in keys.iter().zip(clip) {
            out.insert(k.unwrap_or_default().to_string(), (c, Vec::new()));
        }
    }
    let (ctx, _) = crate::sql::session(root).await?;
    if ctx.table_exist(crate::sql::DINO_VECTORS).unwrap_or(false) {
        let df = ctx
            .table(crate::sql::DINO_VECTORS)
            .await
            .map_err(|e| Error::table(crate::sql::DINO_VECTORS, e))?;
        for batch in crate::sql::collect(df).await? {
            let keys = io::strings(&batch, "key")?;
            let dino = io::vector_rows(&batch, "dino")?;
            for (k, d) in keys.iter().zip(dino) {
                if let Some(v) = out.get_mut(k.unwrap_or_default()) {
                    v.1 = d;
                }
            }
        }
    }
    Ok(out)
}
