//! `blindspot synth`, `embed` and `bench-preprocess`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use blindspot::embed::{self, EmbedParams, EmbedSummary};
use blindspot::encoder::preprocess::{prepare, DecodeParams, Preprocessor, Transform};
use blindspot::encoder::runtime::Device;
use blindspot::encoder::{self, OnnxEncoder, SessionParams};
use blindspot::storage::Location;
use blindspot::synth::{self, SynthFormat, SynthParams};
use blindspot::table::schema::FloatType;
use clap::Args;

use blindspot::synth::vectors::{VectorKind, VectorParams};

use super::{checkout, parse_worker, progress};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output URL or path: writes `images/` and `truth.json` under it.
    #[arg(long)]
    pub out: String,
    /// Corpus layout.
    #[arg(long, value_enum, default_value_t = SynthFormat::Folder)]
    pub format: SynthFormat,
    /// Images per shard.
    #[arg(long, default_value_t = SynthParams::default().per_shard)]
    pub per_shard: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = SynthParams::default().seed)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct SynthVectorsArgs {
    /// Run root to write committed `embeddings` shards into.
    #[arg(long)]
    pub out: String,
    /// Vectors.
    #[arg(long, default_value_t = VectorParams::default().n)]
    pub n: usize,
    /// CLIP dimension.
    #[arg(long, default_value_t = VectorParams::default().dim)]
    pub dim: usize,
    /// DINOv2 dimension.
    #[arg(long, default_value_t = VectorParams::default().dino_dim)]
    pub dino_dim: usize,
    /// The distribution.
    #[arg(long, value_enum, default_value_t = VectorKind::Planted)]
    pub kind: VectorKind,
    /// Vectors per embed shard.
    #[arg(long, default_value_t = VectorParams::default().shard_rows)]
    pub shard_rows: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: FloatType,
    /// Shard and key prefix (use another for a later increment of the same root).
    #[arg(long, default_value = "vectors")]
    pub prefix: String,
}

/// `blindspot synth-vectors`.
pub async fn synth_vectors_cmd(a: SynthVectorsArgs) -> Result<()> {
    let root = Location::open(&a.out)?;
    let params = VectorParams {
        n: a.n,
        dim: a.dim,
        dino_dim: a.dino_dim,
        kind: a.kind,
        shard_rows: a.shard_rows,
        seed: a.seed,
        float: a.dtype,
        prefix: a.prefix,
    };
    let shards = blindspot::synth::vectors::write(&root, &params).await?;
    println!(
        "synth-vectors: {} {:?} vectors of dim {} in {shards} committed shards under {}",
        a.n, a.kind, a.dim, root.url
    );
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct EncoderArgs {
    /// CLIP encoder manifest [default: models/tiny/clip-tiny.toml of this checkout].
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// DINOv2 encoder manifest [default: models/tiny/dino-tiny.toml of this checkout].
    #[arg(long)]
    pub dino: Option<PathBuf>,
    /// Where the encoders run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// ONNX Runtime intra-op threads per encoder (0: ONNX Runtime decides).
    #[arg(long, default_value_t = 0)]
    pub intra_threads: usize,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Input: a folder, a prefix URL, a .tar or an image (file://, s3://, gs://, az://, memory://).
    pub input: String,
    /// Run root: outputs go under it.
    #[arg(long)]
    pub out: String,
    #[command(flatten)]
    pub encoders: EncoderArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = EmbedParams::default().batch_size)]
    pub batch_size: usize,
    /// Decode threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    /// Objects fetched at once.
    #[arg(long, default_value_t = EmbedParams::default().fetch_concurrency)]
    pub fetch_concurrency: usize,
    /// Embedding float type: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: FloatType,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeParams::default().max_pixels)]
    pub max_pixels: u64,
    /// Always decode JPEGs at full size (no DCT scaling).
    #[arg(long)]
    pub no_dct_scaling: bool,
    /// Only this worker's shards, as i/N (e.g. a Kubernetes indexed Job or Slurm array).
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Folder of images (top level only).
    #[arg(long)]
    pub images: PathBuf,
    /// CLIP manifest (only its preprocessing is used; the model is not loaded).
    #[arg(long)]
    pub clip: PathBuf,
    /// DINOv2 manifest (only its preprocessing is used).
    #[arg(long)]
    pub dino: PathBuf,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Passes over the images.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Always decode JPEGs at full size.
    #[arg(long)]
    pub no_dct_scaling: bool,
}

pub fn load_encoders(args: &EncoderArgs) -> Result<(OnnxEncoder, OnnxEncoder)> {
    let clip = args
        .clip
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/clip-tiny.toml"));
    let dino = args
        .dino
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/dino-tiny.toml"));
    let params = SessionParams {
        device: args.device,
        intra_threads: args.intra_threads,
    };
    let c = OnnxEncoder::load(encoder::load_manifest(&clip)?, &params)
        .context("loading the CLIP encoder")?;
    let d = OnnxEncoder::load(encoder::load_manifest(&dino)?, &params)
        .context("loading the DINOv2 encoder")?;
    tracing::info!(clip = %c.manifest().id, dino = %d.manifest().id, device = %args.device, "encoders loaded");
    Ok((c, d))
}

pub async fn embed_cmd(a: EmbedArgs) -> Result<()> {
    let input = Location::open(&a.input)?;
    let root = Location::open(&a.out)?;
    let (clip, dino) = load_encoders(&a.encoders)?;
    let params = EmbedParams {
        batch_size: a.batch_size,
        decode_threads: a.decode_threads,
        fetch_concurrency: a.fetch_concurrency,
        float: a.dtype,
        decode: DecodeParams {
            max_pixels: a.max_pixels,
            dct_scaling: !a.no_dct_scaling,
        },
        worker: a.worker,
        ..EmbedParams::default()
    };
    let summary = embed::embed(&input, &root, clip, dino, &params, progress()).await?;
    report_embed(&summary, &input, &root, a.json);
    Ok(())
}

pub fn report_embed(s: &EmbedSummary, input: &Location, root: &Location, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    let rate = if s.seconds > 0.0 {
        s.images as f64 / s.seconds
    } else {
        0.0
    };
    println!("embed: {} -> {}", input.url, root.url);
    println!(
        "  shards     {} ({} committed now, {} already committed)",
        s.shards, s.committed, s.skipped
    );
    println!(
        "  images     {} embedded in {:.1}s ({rate:.1} images/s)",
        s.images, s.seconds
    );
    println!("  errors     {}", s.errors);
    for (kind, n) in &s.errors_by_kind {
        println!("    {kind:<14} {n}");
    }
}

pub async fn synth_cmd(a: SynthArgs) -> Result<()> {
    let out = Location::open(&a.out)?;
    let params = SynthParams {
        format: a.format,
        per_shard: a.per_shard,
        seed: a.seed,
        ..Default::default()
    };
    let truth = synth::synth(&out, &params).await?;
    println!(
        "synth: {} images in {} ({} blind pairs, {} near-duplicates, {} exact duplicates); truth in {}/truth.json",
        truth.keys.len(),
        truth.images,
        truth.blind_pairs.len(),
        truth.near_duplicates.len(),
        truth.exact_duplicates.len(),
        out.url
    );
    Ok(())
}

pub fn bench_preprocess(a: BenchArgs) -> Result<()> {
    let clip = encoder::load_manifest_unchecked(&a.clip)?;
    let dino = encoder::load_manifest_unchecked(&a.dino)?;
    let transforms = vec![Transform::new(&clip), Transform::new(&dino)];
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&a.images).with_context(|| format!("reading {}", a.images.display()))?
    {
        let path = entry?.path();
        if path.is_file() && blindspot::embed::ingest::is_image_name(&path.to_string_lossy()) {
            files.push(path);
        }
    }
    files.sort();
    let images: Vec<bytes::Bytes> = files
        .iter()
        .map(|p| std::fs::read(p).map(bytes::Bytes::from))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", a.images.display());
    let decode = DecodeParams {
        dct_scaling: !a.no_dct_scaling,
        ..DecodeParams::default()
    };
    let threads = a.threads.max(1);
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (images, transforms, decode, done) = (&images, transforms.clone(), &decode, &done);
            s.spawn(move || {
                let mut pre = Preprocessor::new(transforms);
                let min_side = pre.min_side();
                for r in 0..a.repeat {
                    for (i, img) in images.iter().enumerate() {
                        if (i + r * images.len()) % threads == t
                            && prepare(&mut pre, img, min_side, decode).is_ok()
                        {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let n = done.into_inner();
    println!(
        "{}",
        serde_json::json!({"images": n, "seconds": seconds, "images_per_sec": n as f64 / seconds, "threads": threads})
    );
    Ok(())
}
