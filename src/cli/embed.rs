//! `blindspot synth`, `embed` and `bench-preprocess`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use blindspot::embed::{self, EmbedParams, EmbedSettings, EmbedSummary, EncoderSet};
use blindspot::encoder::preprocess::{prepare, DecodeParams, Preprocessor, Transform};
use blindspot::encoder::runtime::Device;
use blindspot::encoder::{self, OnnxEncoder, SessionParams};
use blindspot::ingest::fetch::UriKind;
use blindspot::storage::Location;
use blindspot::synth::{self, SynthFormat, SynthParams};
use blindspot::table::schema::FloatType;
use clap::Args;

use blindspot::synth::vectors::{VectorKind, VectorParams};

use super::{checkout, parse_worker, progress, ClaimArgs};

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
    /// DINOv2 dimension (default 1024, DINOv2 ViT-L/14's, for laion-like; 16 otherwise).
    #[arg(long)]
    pub dino_dim: Option<usize>,
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
    /// laion-like: the share of images in near-duplicate groups.
    #[arg(long, default_value_t = VectorParams::default().group_share)]
    pub group_share: f64,
    /// laion-like: the largest near-duplicate group (one group is this large).
    #[arg(long, default_value_t = VectorParams::default().max_group)]
    pub max_group: usize,
    /// laion-like: the share of groups that are two pictures in DINOv2 (CLIP-blind halves).
    #[arg(long, default_value_t = VectorParams::default().blind_share)]
    pub blind_share: f64,
}

/// `blindspot synth-vectors`.
pub async fn synth_vectors_cmd(a: SynthVectorsArgs) -> Result<()> {
    let root = Location::open(&a.out)?;
    let params = VectorParams {
        n: a.n,
        dim: a.dim,
        dino_dim: a.dino_dim.unwrap_or(match a.kind {
            VectorKind::LaionLike => 1024,
            _ => VectorParams::default().dino_dim,
        }),
        kind: a.kind,
        shard_rows: a.shard_rows,
        seed: a.seed,
        float: a.dtype,
        prefix: a.prefix,
        group_share: a.group_share,
        max_group: a.max_group,
        blind_share: a.blind_share,
    };
    if !(0.0..=1.0).contains(&params.group_share) || !(0.0..=1.0).contains(&params.blind_share) {
        anyhow::bail!("--group-share and --blind-share are shares: between 0 and 1");
    }
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
    /// Input: a folder, a prefix URL, a .tar, img2dataset Parquet, a URI manifest or an image
    /// (file://, s3://, gs://, az://, memory://).
    pub input: String,
    /// Run root: outputs go under it.
    #[arg(long)]
    pub out: String,
    #[command(flatten)]
    pub encoders: EncoderArgs,
    #[command(flatten)]
    pub settings: EmbedSettings,
    /// Only this worker's shards, as i/N (e.g. a Kubernetes indexed Job or Slurm array).
    #[arg(long, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImportCommand {
    /// clip-retrieval's output: img_emb/img_emb_N.npy (f16 or f32, N x D, L2-normalised) and
    /// metadata/metadata_N.parquet (image_path or url, caption, key), row i for vector i.
    ClipRetrieval(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The folder (or prefix URL) holding img_emb/ and metadata/.
    pub dir: String,
    /// Run root to write committed `embeddings` shards (CLIP only) into.
    #[arg(long)]
    pub out: String,
    /// The id of the CLIP model that made the vectors, recorded as their encoder
    /// (e.g. openai-clip-vit-l-14).
    #[arg(long)]
    pub clip_id: String,
    /// The metadata column with the key (rows without one get `<N>/<row>`).
    #[arg(long, default_value = "key")]
    pub key_column: String,
    /// Stored float type: f16 or f32 [default: as in the .npy files].
    #[arg(long)]
    pub dtype: Option<FloatType>,
    /// The metadata's image paths may also name these (comma-separated): `file`, `outside`
    /// (outside the folder, as absolute local paths are), `store`; refused paths keep the
    /// vector and lose the path.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub allow_uri: Vec<UriKind>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn import_cmd(c: ImportCommand) -> Result<()> {
    let ImportCommand::ClipRetrieval(a) = c;
    let dir = Location::open(&a.dir)?;
    let root = Location::open(&a.out)?;
    let params = blindspot::embed::import::ImportParams {
        clip_id: a.clip_id.clone(),
        key_column: a.key_column.clone(),
        float: a.dtype,
        allow: a.allow_uri.clone(),
        ..Default::default()
    };
    let s =
        blindspot::embed::import::import_clip_retrieval(&dir, &root, &params, progress()).await?;
    super::report(a.json, &s, || {
        format!(
            "import clip-retrieval: {} -> {}\n  shards     {} ({} committed now, {} already committed)\n  vectors    {} of dim {} in {:.1}s ({} re-normalised, {} zero or non-finite as errors rows)\n  next       blindspot partition/candidates --root {}, then blindspot dino --root {}",
            dir.url, root.url, s.shards, s.committed, s.skipped, s.vectors, s.dim, s.seconds,
            s.renormalised, s.errors, root.url, root.url
        ) + &match s.blocked_paths {
            0 => String::new(),
            n => format!("\n  paths      {n} image paths refused by the fetch policy (vectors kept; pass --allow-uri outside for absolute local paths)"),
        }
    });
    Ok(())
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

fn session_params(args: &EncoderArgs) -> SessionParams {
    SessionParams {
        device: args.device,
        intra_threads: args.intra_threads,
    }
}

pub fn load_clip(args: &EncoderArgs) -> Result<OnnxEncoder> {
    let clip = args
        .clip
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/clip-tiny.toml"));
    OnnxEncoder::load(encoder::load_manifest(&clip)?, &session_params(args))
        .context("loading the CLIP encoder")
}

pub fn load_dino(args: &EncoderArgs) -> Result<OnnxEncoder> {
    let dino = args
        .dino
        .clone()
        .unwrap_or_else(|| checkout().join("models/tiny/dino-tiny.toml"));
    OnnxEncoder::load(encoder::load_manifest(&dino)?, &session_params(args))
        .context("loading the DINOv2 encoder")
}

pub async fn embed_cmd(a: EmbedArgs) -> Result<()> {
    let input = Location::open(&a.input)?;
    let root = Location::open(&a.out)?;
    let clip = load_clip(&a.encoders)?;
    blindspot::stage::Stage::Embed.settings(a.settings.check())?;
    let dino = match a.settings.encoders {
        EncoderSet::Both => Some(load_dino(&a.encoders)?),
        EncoderSet::Clip => None,
    };
    let params = EmbedParams {
        worker: a.worker,
        claim: a.claims.params(),
        ..a.settings.params()
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
        "  shards     {} ({} committed now, {} already committed{})",
        s.shards,
        s.committed,
        s.skipped,
        match s.discarded {
            0 => String::new(),
            n => format!(", {n} embedded but committed first by another worker"),
        }
    );
    println!(
        "  images     {} embedded in {:.1}s ({rate:.1} images/s)",
        s.images, s.seconds
    );
    println!("  errors     {}", s.errors);
    for (kind, n) in &s.errors_by_kind {
        println!("    {kind:<14} {n}");
    }
    if s.skipped_rows > 0 {
        println!(
            "  skipped    {} input rows img2dataset did not download",
            s.skipped_rows
        );
        for (status, n) in &s.skipped_by_status {
            println!("    {status:<22} {n}");
        }
    }
    if s.clip_only {
        println!(
            "  encoders   CLIP only: run `blindspot dino --root {}` after candidates",
            root.url
        );
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
        if path.is_file() && blindspot::ingest::is_image_name(&path.to_string_lossy()) {
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
        exif: encoder::shared_exif([&clip, &dino])?,
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
                for r in 0..a.repeat {
                    for (i, img) in images.iter().enumerate() {
                        if (i + r * images.len()) % threads == t
                            && prepare(&mut pre, img, decode).is_ok()
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
