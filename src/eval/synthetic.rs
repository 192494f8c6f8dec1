//! Benchmarks generated from a synthetic corpus's truth file, in the MMVP-VLM and MMVP
//! formats, for the demo and the tests: mirror pairs become Orientation items, swapped
//! arrangements Spatial items, and pairs of differently coloured blocks Color items. Under
//! the tiny encoders the answers are known by construction: `clip-tiny` sees colour, not
//! layout.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::mmvp::{MMVP_IMAGES, QUESTIONS, VLM_IMAGES};
use crate::storage::Location;
use crate::synth::{Facts, Truth};

/// Names for colours, as `models/tiny/colour-names.json` lists them.
#[derive(Clone, Debug, Deserialize)]
pub struct ColourNames {
    /// Every named colour.
    pub colours: Vec<NamedColour>,
}

/// One named colour.
#[derive(Clone, Debug, Deserialize)]
pub struct NamedColour {
    /// 8-bit RGB.
    pub rgb: [u8; 3],
    /// Its name, one token of the tiny tokenizer.
    pub name: String,
}

impl ColourNames {
    /// Reads a colour-names file.
    pub fn load(path: &Path) -> Result<ColourNames> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("colour names {}: {e}", path.display())))
    }

    /// The name of the nearest listed colour.
    pub fn name(&self, rgb: [u8; 3]) -> &str {
        let d = |c: &NamedColour| -> i32 {
            c.rgb
                .iter()
                .zip(rgb)
                .map(|(a, b)| (*a as i32 - b as i32).pow(2))
                .sum()
        };
        self.colours
            .iter()
            .min_by_key(|c| d(c))
            .map_or("grey", |c| c.name.as_str())
    }
}

/// One generated pair: its pattern, per image (corpus file, MMVP-VLM statement, MMVP answer),
/// and the MMVP question and options both images share.
struct Item {
    pattern: &'static str,
    sides: [(Source, String, &'static str); 2],
    question: String,
    options: String,
    /// Another question whose answers follow the same letters (the demo's scripted drafter
    /// offers it as a second question; the benchmarks written here have one per pair).
    second: (String, String),
}

fn facts<'a>(truth: &'a Truth, key: &str) -> Result<&'a Facts> {
    truth.facts.get(key).ok_or_else(|| {
        Error::Usage(format!(
            "truth file has no facts for {key}; regenerate the corpus with this version of `blindspot synth`"
        ))
    })
}

/// Where an image is: its file under the corpus, and its member name when that is a tar.
type Source = (String, Option<String>);

fn file(f: &Facts, key: &str) -> Result<Source> {
    let file = f.file.clone().ok_or_else(|| {
        Error::Usage(format!(
            "truth file has no location for {key}; regenerate the corpus with this version of `blindspot synth`"
        ))
    })?;
    Ok((file, f.member.clone()))
}

/// The bytes of one image of the corpus, from its folder or its tar shard. `objects` keeps
/// what was fetched, so a tar shard is read once for all the images in it.
async fn image_bytes(
    corpus: &Location,
    (file, member): &Source,
    objects: &mut HashMap<String, Bytes>,
) -> Result<Bytes> {
    let path = corpus.path(file);
    let bytes = match objects.get(file) {
        Some(b) => b.clone(),
        None => {
            let b = corpus
                .get_bytes(&path)
                .await
                .map_err(|e| Error::storage(corpus.uri_of(&path), e))?;
            if member.is_some() {
                objects.insert(file.clone(), b.clone());
            }
            b
        }
    };
    let Some(member) = member else {
        return Ok(bytes);
    };
    let bad = |reason: String| Error::Usage(format!("{}: {reason}", corpus.uri_of(&path)));
    let mut archive = tar::Archive::new(bytes.as_ref());
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            == member.as_str()
        {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).map_err(|e| bad(e.to_string()))?;
            return Ok(Bytes::from(out));
        }
    }
    Err(bad(format!("no member {member}")))
}

fn orientation(f: &Facts, colour: &str) -> (String, &'static str) {
    match f.facing.as_deref() {
        Some("left") => (
            format!("a {colour} l shape with its foot pointing left"),
            "(a)",
        ),
        Some("right") => (
            format!("a {colour} l shape with its foot pointing right"),
            "(b)",
        ),
        Some("down") => (
            format!("a {colour} bar at the top with a leg hanging down"),
            "(a)",
        ),
        _ => (
            format!("a {colour} bar at the bottom with a leg standing up"),
            "(b)",
        ),
    }
}

/// A mirror pair's two questions (with options): which way it faces, and how it reads (an L
/// or a mirrored one) or where its leg points; both give (a) for a shape facing left or down.
fn orientation_questions(horizontal: bool) -> [(&'static str, &'static str); 2] {
    match horizontal {
        true => [
            (
                "Which way does the foot of the L shape point?",
                "(a) Left (b) Right",
            ),
            (
                "Does the shape look like the letter L or like a mirrored L?",
                "(a) A mirrored L (b) The letter L",
            ),
        ],
        false => [
            (
                "Is the long bar of the shape at the top or at the bottom?",
                "(a) Top (b) Bottom",
            ),
            (
                "Does the short leg of the shape point up or down?",
                "(a) Down (b) Up",
            ),
        ],
    }
}

fn items(truth: &Truth, names: &ColourNames) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let colour = |f: &Facts, i: usize| {
        names
            .name(f.colours.get(i).copied().unwrap_or([128; 3]))
            .to_string()
    };
    for p in truth.blind_pairs.iter().filter(|p| p.kind == "mirror") {
        let (fa, fb) = (facts(truth, &p.a)?, facts(truth, &p.b)?);
        let (sa, aa) = orientation(fa, &colour(fa, 0));
        let (sb, ab) = orientation(fb, &colour(fb, 0));
        let [q1, q2] =
            orientation_questions(matches!(fa.facing.as_deref(), Some("left" | "right")));
        out.push(Item {
            pattern: "Orientation",
            sides: [(file(fa, &p.a)?, sa, aa), (file(fb, &p.b)?, sb, ab)],
            question: q1.0.into(),
            options: q1.1.into(),
            second: (q2.0.into(), q2.1.into()),
        });
    }
    for p in truth.blind_pairs.iter().filter(|p| p.kind == "permutation") {
        let (fa, fb) = (facts(truth, &p.a)?, facts(truth, &p.b)?);
        // Two shades one name calls alike (two purples) make a question whose options read the
        // same, and statements that do: no one could answer them, so the pair is left out.
        if colour(fa, 0) == colour(fb, 0) {
            continue;
        }
        let st = |f: &Facts| {
            format!(
                "a {} block to the left of a {} block",
                colour(f, 0),
                colour(f, 1)
            )
        };
        out.push(Item {
            pattern: "Spatial",
            sides: [
                (file(fa, &p.a)?, st(fa), "(a)"),
                (file(fb, &p.b)?, st(fb), "(b)"),
            ],
            question: "What colour is the block on the left?".into(),
            options: format!("(a) {} (b) {}", colour(fa, 0), colour(fb, 0)),
            second: (
                "What colour is the block on the right?".into(),
                format!("(a) {} (b) {}", colour(fa, 1), colour(fb, 1)),
            ),
        });
    }
    colour_items(truth, &colour, &mut out)?;
    Ok(out)
}

/// Blocks of different colour names, paired in key order: the Color items.
fn colour_items(
    truth: &Truth,
    colour: &dyn Fn(&Facts, usize) -> String,
    out: &mut Vec<Item>,
) -> Result<()> {
    let mut singles: Vec<(&String, &Facts)> = truth
        .facts
        .iter()
        .filter(|(k, f)| k.contains("single-") && f.colours.len() == 1)
        .collect();
    while let Some((ka, fa)) = singles.first().copied() {
        singles.remove(0);
        let Some(pos) = singles
            .iter()
            .position(|(_, f)| colour(f, 0) != colour(fa, 0))
        else {
            break;
        };
        let (kb, fb) = singles.remove(pos);
        let st = |f: &Facts| format!("a {} block", colour(f, 0));
        out.push(Item {
            pattern: "Color",
            sides: [
                (file(fa, ka)?, st(fa), "(a)"),
                (file(fb, kb)?, st(fb), "(b)"),
            ],
            question: "What colour is the block?".into(),
            options: format!("(a) {} (b) {}", colour(fa, 0), colour(fb, 0)),
            second: (
                "Which colour fills the square?".into(),
                format!("(a) {} (b) {}", colour(fa, 0), colour(fb, 0)),
            ),
        });
    }
    Ok(())
}

/// One image of a generated pair, as the demo's scripted endpoint knows it (see
/// [`super::scripted`]).
#[derive(Clone, Debug)]
pub struct KnownImage {
    /// The pair's number among the generated pairs.
    pub pair: usize,
    /// Its pattern.
    pub pattern: &'static str,
    /// The questions both images of the pair share (one asked, another whose answers follow
    /// the same letters), each with its two options' texts.
    pub questions: [(String, [String; 2]); 2],
    /// The right option for this image, in both questions: `a` or `b`.
    pub answer: char,
    /// What this image shows, in words.
    pub shows: String,
}

/// Every image of the generated pairs by the blake3 digest of its bytes (hex).
pub async fn known_images(
    corpus: &Location,
    truth: &Truth,
    names: &ColourNames,
) -> Result<HashMap<String, KnownImage>> {
    let mut objects = HashMap::new();
    let mut out = HashMap::new();
    for (pair, item) in items(truth, names)?.into_iter().enumerate() {
        let texts = |options: &str| -> Result<[String; 2]> {
            let c = crate::eval::grade::parse_options(options)
                .map_err(|e| Error::Usage(format!("generated options {options:?}: {e}")))?;
            Ok([c[0].text.clone(), c[1].text.clone()])
        };
        let questions = [
            (item.question.clone(), texts(&item.options)?),
            (item.second.0.clone(), texts(&item.second.1)?),
        ];
        for (source, shows, answer) in &item.sides {
            let bytes = image_bytes(corpus, source, &mut objects).await?;
            out.insert(
                blake3::hash(&bytes).to_hex().to_string(),
                KnownImage {
                    pair,
                    pattern: item.pattern,
                    questions: questions.clone(),
                    answer: if *answer == "(a)" { 'a' } else { 'b' },
                    shows: shows.clone(),
                },
            );
        }
    }
    Ok(out)
}

fn ext((file, member): &Source) -> &str {
    let name = member.as_deref().unwrap_or(file);
    name.rsplit_once('.').map_or("png", |(_, e)| e)
}

/// Writes an MMVP-VLM benchmark to `vlm` and an MMVP benchmark (with a `Pattern` column) to
/// `mmvp`, from the corpus at `corpus` and its truth. Returns the number of pairs.
pub async fn write_benchmarks(
    corpus: &Location,
    truth: &Truth,
    names: &ColourNames,
    vlm: &Location,
    mmvp: &Location,
) -> Result<usize> {
    let items = items(truth, names)?;
    let mut objects = HashMap::new();
    let mut vlm_sheet = csv::Writer::from_writer(Vec::new());
    let mut mmvp_sheet = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::table("benchmark sheet", e);
    vlm_sheet
        .write_record(["Question ID", "Type", "Statement"])
        .map_err(csv_err)?;
    mmvp_sheet
        .write_record(["Index", "Question", "Options", "Correct Answer", "Pattern"])
        .map_err(csv_err)?;
    for (k, item) in items.iter().enumerate() {
        for (j, (file, statement, answer)) in item.sides.iter().enumerate() {
            let id = 2 * k + j + 1;
            let bytes = image_bytes(corpus, file, &mut objects).await?;
            vlm.put(
                &format!("{VLM_IMAGES}/{}/{id}.{}", item.pattern, ext(file)),
                bytes.clone(),
            )
            .await?;
            mmvp.put(&format!("{MMVP_IMAGES}/{id}.{}", ext(file)), bytes)
                .await?;
            vlm_sheet
                .write_record([id.to_string().as_str(), item.pattern, statement])
                .map_err(csv_err)?;
            mmvp_sheet
                .write_record([
                    id.to_string().as_str(),
                    &item.question,
                    &item.options,
                    *answer,
                    item.pattern,
                ])
                .map_err(csv_err)?;
        }
    }
    for (loc, sheet) in [(vlm, vlm_sheet), (mmvp, mmvp_sheet)] {
        let bytes = sheet
            .into_inner()
            .map_err(|e| Error::table("benchmark sheet", e.to_string()))?;
        loc.put(QUESTIONS, Bytes::from(bytes)).await?;
    }
    Ok(items.len())
}
