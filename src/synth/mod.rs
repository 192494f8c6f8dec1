//! A synthetic corpus whose CLIP-blind pairs are known, for the demo and the tests.
//!
//! Every image is shapes in distinct colours on a mid-grey background. Under the tiny
//! encoders (`models/tiny`): a shape and its mirror image, or two shapes and their swapped
//! arrangement, have the same colour statistics (so `clip-tiny` sees them as one) but a
//! different layout (so `dino-tiny` does not): those are the blind pairs. A shape and a
//! slightly shifted, slightly recoloured copy is a near-duplicate both encoders agree on;
//! exact duplicates share their bytes; every other image has a colour of its own.

pub mod vectors;

use bytes::Bytes;
use image::{ImageFormat, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::storage::Location;

/// The synthetic corpus of an input: one level above `images/`, where synth puts the images
/// (and `truth.json` beside them).
pub fn corpus_of(input: &Location) -> String {
    input
        .url
        .strip_suffix("/images")
        .unwrap_or(&input.url)
        .to_string()
}

/// How the corpus is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SynthFormat {
    /// `images/part-NNNNN/<name>.<ext>` files.
    #[default]
    Folder,
    /// `images/part-NNNNN.tar` webdataset shards as img2dataset writes them.
    Tar,
}

/// Sizes of the synthetic corpus; a spec's `[synth]` section sets its layout and seed.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SynthParams {
    /// Folder or tar shards.
    pub format: SynthFormat,
    /// Pairs of a shape and its mirror image.
    #[serde(skip)]
    pub mirror_pairs: usize,
    /// Pairs of an arrangement and its permutation.
    #[serde(skip)]
    pub permutation_pairs: usize,
    /// Near-duplicate pairs (not blind).
    #[serde(skip)]
    pub near_duplicates: usize,
    /// Pairs of byte-identical images.
    #[serde(skip)]
    pub exact_duplicates: usize,
    /// Unrelated images.
    #[serde(skip)]
    pub singles: usize,
    /// Images per shard.
    pub per_shard: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl SynthParams {
    /// Every problem with these settings, by key.
    pub fn check(&self) -> Vec<String> {
        match self.per_shard {
            0 => vec!["per-shard must be at least 1".into()],
            _ => Vec::new(),
        }
    }
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams {
            format: SynthFormat::Folder,
            mirror_pairs: 8,
            permutation_pairs: 6,
            near_duplicates: 6,
            exact_duplicates: 2,
            singles: 12,
            per_shard: 16,
            seed: 7,
        }
    }
}

/// One known pair, by the keys `blindspot embed` gives its images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct TruthPair {
    /// The smaller key.
    pub a: String,
    /// The larger key.
    pub b: String,
    /// How the pair was made: `mirror`, `permutation`, `near-duplicate`, `exact-duplicate`.
    pub kind: String,
}

/// The truth file (`truth.json`) written next to the corpus.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Truth {
    /// Where the images are (pass this to `blindspot embed`).
    pub images: String,
    /// Every image key.
    pub keys: Vec<String>,
    /// The CLIP-blind pairs.
    pub blind_pairs: Vec<TruthPair>,
    /// Pairs both encoders find similar (not blind).
    pub near_duplicates: Vec<TruthPair>,
    /// Byte-identical pairs.
    pub exact_duplicates: Vec<TruthPair>,
    /// What each image shows, by key (for generating benchmarks from the corpus).
    #[serde(default)]
    pub facts: std::collections::BTreeMap<String, Facts>,
}

/// What one synthetic image shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The image file relative to the corpus folder, or the tar shard holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The image's member name inside `file`, when that is a tar shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Its shapes' colours, left to right.
    pub colours: Vec<[u8; 3]>,
    /// Where an L shape's free end points (`left`, `right`, `up`, `down`), for mirror pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facing: Option<String>,
}

const GREY: Rgb<u8> = Rgb([128, 128, 128]);
const SIDE: u32 = 128;

/// Colours at the tiny CLIP's prototypes, far from grey, in a seeded order.
fn palette(rng: &mut Rng) -> Vec<Rgb<u8>> {
    const LEVELS: [u8; 4] = [26, 89, 166, 230];
    let mut out = Vec::new();
    for r in LEVELS {
        for g in LEVELS {
            for b in LEVELS {
                let d2: i32 = [r, g, b].iter().map(|&v| (v as i32 - 128).pow(2)).sum();
                if d2 > 90 * 90 {
                    out.push(Rgb([r, g, b]));
                }
            }
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

fn canvas(w: u32, h: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, GREY)
}

fn rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

fn brighten(c: Rgb<u8>, by: u8) -> Rgb<u8> {
    Rgb(c.0.map(|v| v.saturating_add(by)))
}

/// An L shape in the left half, moved down a little per index.
fn l_shape(c: Rgb<u8>, i: usize) -> RgbImage {
    let dy = (i % 3) as u32 * 4;
    let mut img = canvas(SIDE, SIDE);
    rect(&mut img, 16, 20 + dy, 32, 100 + dy, c);
    rect(&mut img, 16, 84 + dy, 60, 100 + dy, c);
    img
}

/// The same L turned on its side, in the top half, for the vertical mirror.
fn l_shape_top(c: Rgb<u8>, i: usize) -> RgbImage {
    let dx = (i % 3) as u32 * 4;
    let mut img = canvas(SIDE, SIDE);
    rect(&mut img, 20 + dx, 16, 100 + dx, 32, c);
    rect(&mut img, 84 + dx, 16, 100 + dx, 60, c);
    img
}

fn two_blocks(left: Rgb<u8>, right: Rgb<u8>) -> RgbImage {
    let mut img = canvas(SIDE, SIDE);
    rect(&mut img, 12, 40, 56, 88, left);
    rect(&mut img, 72, 40, 116, 88, right);
    img
}

fn t_shape(c: Rgb<u8>, dx: u32, dy: u32) -> RgbImage {
    let mut img = canvas(SIDE, SIDE);
    rect(&mut img, 30 + dx, 30 + dy, 90 + dx, 70 + dy, c);
    rect(&mut img, 50 + dx, 70 + dy, 70 + dx, 100 + dy, c);
    img
}

fn single(c: Rgb<u8>, rng: &mut Rng, i: usize) -> RgbImage {
    // Some singles are not square, so the centre crop is exercised.
    let (w, h) = if i % 3 == 1 { (160, 120) } else { (SIDE, SIDE) };
    let mut img = canvas(w, h);
    let x = 24 + rng.below(50) as u32;
    let y = 10 + rng.below(60) as u32;
    rect(&mut img, x, y, x + 40, y + 30, c);
    img
}

fn encode(img: &RgbImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95);
            img.write_with_encoder(enc)
        }
        other => img.write_to(&mut buf, other),
    }
    .map_err(|e| Error::Internal(format!("encoding a synthetic image: {e}")))?;
    Ok(buf.into_inner())
}

fn ext(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpg",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        _ => "png",
    }
}

struct Entry {
    name: String,
    ext: &'static str,
    bytes: Vec<u8>,
    caption: String,
    facts: Facts,
}

fn facts(colours: &[Rgb<u8>], facing: Option<&str>) -> Facts {
    Facts {
        file: None,
        member: None,
        colours: colours.iter().map(|c| c.0).collect(),
        facing: facing.map(str::to_string),
    }
}

/// The truth file's name, beside `images/`.
pub const TRUTH: &str = "truth.json";

/// Reads the truth file of the synthetic corpus at `corpus`.
pub async fn read_truth(corpus: &Location) -> Result<Truth> {
    let path = corpus.path(TRUTH);
    let bytes = corpus
        .get_bytes(&path)
        .await
        .map_err(|e| Error::storage(corpus.uri_of(&path), e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("{}: {e}", corpus.uri_of(&path))))
}

/// Makes the corpus and writes it under `out` (`images/` and `truth.json`).
pub async fn synth(out: &Location, params: &SynthParams) -> Result<Truth> {
    let (entries, pairs) = draw(params)?;
    let (mut truth, key_of) = write_images(out, &entries, params).await?;
    truth.keys = entries.iter().map(|e| key_of[&e.name].clone()).collect();
    for (a, b, kind) in pairs {
        let (ka, kb) = (key_of[&a].clone(), key_of[&b].clone());
        let (a, b) = if ka < kb { (ka, kb) } else { (kb, ka) };
        let pair = TruthPair {
            a,
            b,
            kind: kind
                .replace("near", "near-duplicate")
                .replace("exact", "exact-duplicate"),
        };
        match kind {
            "mirror" | "permutation" => truth.blind_pairs.push(pair),
            "near" => truth.near_duplicates.push(pair),
            _ => truth.exact_duplicates.push(pair),
        }
    }
    out.put_json(TRUTH, &truth).await?;
    Ok(truth)
}

impl Entry {
    /// A PNG entry named `name` with its bytes and facts.
    fn png(name: &str, (bytes, facts): (Vec<u8>, Facts), caption: String) -> Entry {
        Entry {
            name: name.to_string(),
            ext: "png",
            bytes,
            caption,
            facts,
        }
    }
}

/// An L shape of colour `c` and its mirror image, and where each one's foot or leg points:
/// the L's foot points right and its mirror's left; the turned L's leg hangs down from a bar
/// at the top and its mirror's stands up from a bar at the bottom.
fn mirrored(c: Rgb<u8>, i: usize) -> (RgbImage, RgbImage, [&'static str; 2]) {
    match i.is_multiple_of(2) {
        true => {
            let img = l_shape(c, i);
            let flipped = image::imageops::flip_horizontal(&img);
            (img, flipped, ["right", "left"])
        }
        false => {
            let img = l_shape_top(c, i);
            let flipped = image::imageops::flip_vertical(&img);
            (img, flipped, ["down", "up"])
        }
    }
}

/// A known pair: the names of its two entries and its kind.
type Drawn = (String, String, &'static str);

/// A colour for each group of images `params` asks for (the palette has 56).
fn colours(rng: &mut Rng, params: &SynthParams) -> Result<Vec<Rgb<u8>>> {
    let needed = params.mirror_pairs
        + 2 * params.permutation_pairs
        + params.near_duplicates
        + params.exact_duplicates
        + params.singles;
    let palette = palette(rng);
    if needed > palette.len() {
        return Err(Error::Usage(format!(
            "the synthetic corpus has colours for at most {} groups; {needed} asked for",
            palette.len()
        )));
    }
    Ok(palette.into_iter().take(needed).collect())
}

/// Every image of the corpus, in order, and the pairs among them.
fn draw(params: &SynthParams) -> Result<(Vec<Entry>, Vec<Drawn>)> {
    let mut rng = Rng(params.seed);
    let mut colours = colours(&mut rng, params)?.into_iter();
    let mut next_colour = || Ok::<_, Error>(colours.next().expect("one colour per group"));
    let mut entries: Vec<Entry> = Vec::new();
    let mut pairs: Vec<Drawn> = Vec::new();
    let png = |img: &RgbImage| encode(img, ImageFormat::Png);
    let mut add_pair = |entries: &mut Vec<Entry>,
                        kind: &'static str,
                        i: usize,
                        a: (Vec<u8>, Facts),
                        b: (Vec<u8>, Facts),
                        caption: &str| {
        let (na, nb) = (format!("{kind}-{i:02}-a"), format!("{kind}-{i:02}-b"));
        entries.push(Entry::png(&na, a, format!("{caption} (a)")));
        entries.push(Entry::png(&nb, b, format!("{caption} (b)")));
        pairs.push((na, nb, kind));
    };
    for i in 0..params.mirror_pairs {
        let c = next_colour()?;
        let (img, flipped, facing) = mirrored(c, i);
        add_pair(
            &mut entries,
            "mirror",
            i,
            (png(&img)?, facts(&[c], Some(facing[0]))),
            (png(&flipped)?, facts(&[c], Some(facing[1]))),
            "an L shape and its mirror image",
        );
    }
    for i in 0..params.permutation_pairs {
        let (l, r) = (next_colour()?, next_colour()?);
        add_pair(
            &mut entries,
            "permutation",
            i,
            (png(&two_blocks(l, r))?, facts(&[l, r], None)),
            (png(&two_blocks(r, l))?, facts(&[r, l], None)),
            "two blocks, swapped",
        );
    }
    for i in 0..params.near_duplicates {
        let c = next_colour()?;
        add_pair(
            &mut entries,
            "near",
            i,
            (png(&t_shape(c, 0, 0))?, facts(&[c], None)),
            (
                png(&t_shape(brighten(c, 8), 3, 2))?,
                facts(&[brighten(c, 8)], None),
            ),
            "a T shape, shifted",
        );
    }
    for i in 0..params.exact_duplicates {
        let c = next_colour()?;
        let bytes = png(&single(c, &mut rng, i))?;
        add_pair(
            &mut entries,
            "exact",
            i,
            (bytes.clone(), facts(&[c], None)),
            (bytes, facts(&[c], None)),
            "one image stored twice",
        );
    }
    for i in 0..params.singles {
        let c = next_colour()?;
        entries.push(Entry::single(c, &mut rng, i)?);
    }
    Ok((entries, pairs))
}

impl Entry {
    /// The `i`-th unrelated image, in PNG, JPEG, WebP and GIF by turns.
    fn single(c: Rgb<u8>, rng: &mut Rng, i: usize) -> Result<Entry> {
        let img = single(c, rng, i);
        let format = [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::WebP,
            ImageFormat::Gif,
        ][i % 4];
        Ok(Entry {
            name: format!("single-{i:02}"),
            ext: ext(format),
            bytes: encode(&img, format)?,
            caption: "a block".into(),
            facts: facts(&[c], None),
        })
    }
}

/// Writes the entries under `out` in shards of `per_shard` (folders or tars); the truth with
/// every image's facts, and each entry's key.
async fn write_images(
    out: &Location,
    entries: &[Entry],
    params: &SynthParams,
) -> Result<(Truth, std::collections::HashMap<String, String>)> {
    let mut truth = Truth {
        images: format!("{}/images", out.url),
        ..Default::default()
    };
    let mut key_of = std::collections::HashMap::new();
    for (n, chunk) in entries.chunks(params.per_shard.max(1)).enumerate() {
        let part = format!("part-{n:05}");
        match params.format {
            SynthFormat::Folder => {
                for e in chunk {
                    out.put(
                        &format!("images/{part}/{}.{}", e.name, e.ext),
                        Bytes::from(e.bytes.clone()),
                    )
                    .await?;
                    key_of.insert(e.name.clone(), format!("{part}/{}", e.name));
                    let mut f = e.facts.clone();
                    f.file = Some(format!("images/{part}/{}.{}", e.name, e.ext));
                    truth.facts.insert(format!("{part}/{}", e.name), f);
                }
            }
            SynthFormat::Tar => {
                let tar = write_tar(chunk)?;
                out.put(&format!("images/{part}.tar"), Bytes::from(tar))
                    .await?;
                for e in chunk {
                    key_of.insert(e.name.clone(), e.name.clone());
                    let mut f = e.facts.clone();
                    f.file = Some(format!("images/{part}.tar"));
                    f.member = Some(format!("{}.{}", e.name, e.ext));
                    truth.facts.insert(e.name.clone(), f);
                }
            }
        }
    }
    Ok((truth, key_of))
}

fn write_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: String, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        builder
            .append_data(&mut h, name, data)
            .map_err(|e| Error::Internal(format!("writing a synthetic tar: {e}")))
    };
    for e in entries {
        add(format!("{}.{}", e.name, e.ext), &e.bytes)?;
        let json = serde_json::json!({"key": e.name, "caption": e.caption, "status": "success"});
        add(format!("{}.json", e.name), json.to_string().as_bytes())?;
        add(format!("{}.txt", e.name), e.caption.as_bytes())?;
    }
    builder
        .into_inner()
        .map_err(|e| Error::Internal(format!("writing a synthetic tar: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn truth_keys_match_layout() {
        let out = Location::open("memory://synth-test/c").unwrap();
        let params = SynthParams {
            format: SynthFormat::Folder,
            ..Default::default()
        };
        let truth = synth(&out, &params).await.unwrap();
        let pairs = params.mirror_pairs
            + params.permutation_pairs
            + params.near_duplicates
            + params.exact_duplicates;
        assert_eq!(truth.keys.len(), 2 * pairs + params.singles);
        assert_eq!(
            truth.blind_pairs.len(),
            params.mirror_pairs + params.permutation_pairs
        );
        assert!(truth
            .blind_pairs
            .iter()
            .all(|p| p.a < p.b && p.a.starts_with("part-")));
        let listed = out.list("images").await.unwrap();
        assert_eq!(listed.len(), truth.keys.len());
    }

    #[test]
    fn mirror_pairs_share_colour_counts() {
        let img = l_shape(Rgb([230, 26, 26]), 1);
        let flipped = image::imageops::flip_horizontal(&img);
        let count = |i: &RgbImage| i.pixels().filter(|p| **p != GREY).count();
        assert_eq!(count(&img), count(&flipped));
        assert_ne!(img, flipped);
    }
}
