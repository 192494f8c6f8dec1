//! Vision-encoder evaluation the MMVP-VLM way: CLIP image and text towers as ONNX models with
//! CLIP's BPE tokenizer (a `tokenizer.json`), text-to-image choice between the two images of
//! a pair, and a pair right only when both statements pick their own image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use ndarray::{Array2, Array4};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use crate::encoder::preprocess::{self, DecodeParams, Preprocessor, Transform};
use crate::encoder::{self, OnnxEncoder, SessionParams};
use crate::error::{Error, Result};
use crate::eval::benchmark::{self, MmvpVlm};
use crate::eval::stats::Bootstrap;
use crate::eval::{self as ev, AnswerRow, EvalSummary, Kind};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::Location;
use crate::units;

/// What MMVP-VLM's reference script puts before every statement.
pub const PROMPT_PREFIX: &str = "a photo of ";

/// The manifest of a text tower (TOML, kebab-case), next to its `.onnx` and `tokenizer.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TextManifest {
    /// A short name for the tables; by convention the image tower's id plus `-text`.
    pub id: String,
    /// The model file, relative to the manifest.
    pub onnx: String,
    /// The Hugging Face `tokenizer.json`, relative to the manifest.
    pub tokenizer: String,
    /// Name of the int64 token id input `[batch, seq]`.
    pub input_ids: String,
    /// Name of the int64 attention mask input, when the model has one.
    #[serde(default)]
    pub attention_mask: Option<String>,
    /// Name of the `[batch, dim]` output in the image tower's embedding space.
    pub output: String,
    /// Embedding dimension; must equal the image tower's.
    pub dim: usize,
    /// Longest token sequence, special tokens included (77 for CLIP).
    #[serde(default = "default_context")]
    pub context_length: usize,
    /// The token that pads shorter sequences.
    #[serde(default = "default_pad")]
    pub pad_token: String,
    /// CLIP's logit scale (exp of its learned temperature): the softmax over a pair's two
    /// images multiplies cosine similarities by it. 100 for OpenAI's trained CLIPs.
    #[serde(default = "default_logit_scale")]
    pub logit_scale: f64,
}

fn default_logit_scale() -> f64 {
    100.0
}

fn default_context() -> usize {
    77
}

fn default_pad() -> String {
    "<|endoftext|>".into()
}

/// A text tower: tokenizer and ONNX Runtime session.
pub struct TextEncoder {
    /// Its manifest.
    pub manifest: TextManifest,
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    session: Session,
}

impl TextEncoder {
    /// Reads the manifest, the tokenizer and the model, and checks that they fit together.
    pub fn load(path: &Path, params: &SessionParams) -> Result<TextEncoder> {
        let bad = |reason: String| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let manifest: TextManifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tok_path = dir.join(&manifest.tokenizer);
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
            bad(format!(
                "tokenizer {}: {e}; fix `tokenizer` (relative to the manifest)",
                tok_path.display()
            ))
        })?;
        let pad_id = tokenizer.token_to_id(&manifest.pad_token).ok_or_else(|| {
            bad(format!(
                "pad-token {:?} is not in {}",
                manifest.pad_token,
                tok_path.display()
            ))
        })?;
        if manifest.context_length < 2 {
            return Err(bad("context-length must be at least 2".into()));
        }
        let model: PathBuf = dir.join(&manifest.onnx);
        if !model.exists() {
            return Err(bad(format!(
                "model file {} does not exist; fix `onnx` or export the text tower first",
                model.display()
            )));
        }
        let session = encoder::open_session(&model, &manifest.id, params)?;
        let mut inputs: Vec<&str> = vec![&manifest.input_ids];
        inputs.extend(manifest.attention_mask.as_deref());
        for name in inputs {
            if !session.inputs().iter().any(|o| o.name() == name) {
                return Err(bad(format!("the model has no input {name:?}")));
            }
        }
        if !session
            .outputs()
            .iter()
            .any(|o| o.name() == manifest.output)
        {
            return Err(bad(format!(
                "the model has no output {:?}",
                manifest.output
            )));
        }
        let mut enc = TextEncoder {
            manifest,
            tokenizer,
            pad_id,
            session,
        };
        let probe = enc.embed(&["a photo of a cat".to_string()])?;
        if probe.ncols() != enc.manifest.dim {
            return Err(bad(format!(
                "output has {} columns but dim = {}",
                probe.ncols(),
                enc.manifest.dim
            )));
        }
        Ok(enc)
    }

    /// Token ids for `texts`, each truncated to the context length (keeping its last, end of
    /// text token as CLIP does), padded to the longest; and the attention mask.
    pub fn tokenize(&self, texts: &[String]) -> Result<(Array2<i64>, Array2<i64>)> {
        let fail = |reason: String| Error::Encoder {
            id: self.manifest.id.clone(),
            reason,
        };
        let ctx = self.manifest.context_length;
        let mut seqs = Vec::with_capacity(texts.len());
        for t in texts {
            let enc = self
                .tokenizer
                .encode(t.as_str(), true)
                .map_err(|e| fail(format!("tokenizing {t:?}: {e}")))?;
            let mut ids: Vec<u32> = enc.get_ids().to_vec();
            if ids.len() > ctx {
                let last = *ids.last().unwrap_or(&self.pad_id);
                ids.truncate(ctx - 1);
                ids.push(last);
            }
            seqs.push(ids);
        }
        let len = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Array2::<i64>::from_elem((texts.len(), len), self.pad_id as i64);
        let mut mask = Array2::<i64>::zeros((texts.len(), len));
        for (r, seq) in seqs.iter().enumerate() {
            for (c, id) in seq.iter().enumerate() {
                ids[[r, c]] = *id as i64;
                mask[[r, c]] = 1;
            }
        }
        Ok((ids, mask))
    }

    /// L2-normalised text embeddings `[n, dim]`.
    pub fn embed(&mut self, texts: &[String]) -> Result<Array2<f32>> {
        let m = &self.manifest;
        let fail = |reason: String| Error::Encoder {
            id: m.id.clone(),
            reason,
        };
        let (ids, mask) = self.tokenize(texts)?;
        let ids_t = TensorRef::from_array_view(ids.view()).map_err(|e| fail(e.to_string()))?;
        let mask_t = TensorRef::from_array_view(mask.view()).map_err(|e| fail(e.to_string()))?;
        let outputs = match &m.attention_mask {
            Some(name) => self.session.run(ort::inputs![
                m.input_ids.as_str() => ids_t,
                name.as_str() => mask_t
            ]),
            None => self
                .session
                .run(ort::inputs![m.input_ids.as_str() => ids_t]),
        }
        .map_err(|e| fail(format!("inference failed: {e}")))?;
        let out = outputs[m.output.as_str()]
            .try_extract_array::<f32>()
            .map_err(|e| fail(format!("output {:?}: {e}", m.output)))?
            .to_owned();
        let mut out = out
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| fail(format!("output must be [batch, dim]: {e}")))?;
        encoder::l2_normalise(&mut out);
        Ok(out)
    }
}

/// The probability that a text picks the first of two images: the softmax over the two
/// images of the cosine similarities times CLIP's logit scale.
pub fn first_image_probability(text: &[f32], first: &[f32], second: &[f32], scale: f64) -> f64 {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
    let d = scale * (dot(text, second) - dot(text, first));
    1.0 / (1.0 + d.exp())
}

/// What `eval vlm` needs besides the benchmark and the run root.
#[derive(Clone, Debug)]
pub struct VlmParams {
    /// The image tower's manifest (as for `blindspot embed --clip`).
    pub image: PathBuf,
    /// The text tower's manifest.
    pub text: PathBuf,
    /// Where to run the encoders.
    pub session: SessionParams,
    /// How the scores' intervals are computed.
    pub bootstrap: Bootstrap,
}

/// Scores an image/text encoder pair on an MMVP-VLM benchmark and commits its `answers` and
/// `scores`.
pub async fn eval_vlm(
    bench: &Location,
    root: &Location,
    params: &VlmParams,
    progress: &dyn Progress,
) -> Result<EvalSummary> {
    let started = Instant::now();
    let benchmark = benchmark::load_vlm(bench).await?;
    let image_manifest = encoder::load_manifest(&params.image)?;
    let session = params.session.clone();
    let text_path = params.text.clone();
    let (image_enc, text_enc) = tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((
            OnnxEncoder::load(image_manifest, &session)?,
            TextEncoder::load(&text_path, &session)?,
        ))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    if image_enc.manifest().dim != text_enc.manifest.dim {
        return Err(Error::Usage(format!(
            "image tower {} has dim {} but text tower {} has dim {}: they must come from one CLIP",
            image_enc.manifest().id,
            image_enc.manifest().dim,
            text_enc.manifest.id,
            text_enc.manifest.dim
        )));
    }
    let body = async {
        progress.start(
            Stage::EvalVlm.name(),
            Some(benchmark.statements.len() as u64),
        );
        let result = score_benchmark(&benchmark, image_enc, text_enc, progress).await;
        progress.finish();
        ev::commit(root, Kind::Vlm, result?, &params.bootstrap, started).await
    };
    units::locked(root, Stage::EvalVlm, body).await
}

/// What scores a pair: both towers and the image preprocessing, moved to a blocking thread
/// for each pair and back, so that decoding and inference stay off the async runtime.
struct Towers {
    image: OnnxEncoder,
    text: TextEncoder,
    pre: Preprocessor,
}

impl Towers {
    /// p(first image) for each of the two statements of a pair.
    fn score_pair(&mut self, images: &[(String, Bytes); 2], texts: &[String]) -> Result<[f64; 2]> {
        let size = self.image.manifest().image_size as usize;
        let mut batch = Array4::<f32>::zeros((2, 3, size, size));
        for (i, (uri, bytes)) in images.iter().enumerate() {
            let bad = |f: preprocess::ImageFault| Error::Benchmark {
                uri: uri.clone(),
                reason: format!("{}: {}", f.kind, f.message),
            };
            let params = DecodeParams {
                exif: self.image.manifest().exif,
                ..DecodeParams::default()
            };
            let decoded = self.pre.decode(bytes, &params).map_err(bad)?;
            let mut slot = batch.index_axis_mut(ndarray::Axis(0), i);
            let buf = slot
                .as_slice_mut()
                .ok_or_else(|| Error::Internal("batch is not contiguous".into()))?;
            self.pre.run_decoded(&decoded, &mut [buf]).map_err(bad)?;
        }
        let images = self.image.embed(batch.view())?;
        let text = self.text.embed(texts)?;
        let (first, second) = (images.row(0).to_vec(), images.row(1).to_vec());
        let p = |i: usize| {
            first_image_probability(
                &text.row(i).to_vec(),
                &first,
                &second,
                self.text.manifest.logit_scale,
            )
        };
        Ok([p(0), p(1)])
    }
}

/// One benchmark image: its URI and bytes.
async fn fetch(b: &MmvpVlm, rel: &str) -> Result<(String, Bytes)> {
    let path = b.root.path(rel);
    let uri = b.root.uri_of(&path);
    match b.root.get_bytes(&path).await {
        Ok(bytes) => Ok((uri, bytes)),
        Err(e) => Err(Error::storage(uri, e)),
    }
}

async fn score_benchmark(
    b: &MmvpVlm,
    image: OnnxEncoder,
    text: TextEncoder,
    progress: &dyn Progress,
) -> Result<Vec<AnswerRow>> {
    let model = format!("{}+{}", image.manifest().id, text.manifest.id);
    let pre = Preprocessor::new(vec![Transform::new(image.manifest())]);
    let mut towers = Towers { image, text, pre };
    let mut rows = Vec::new();
    for pair in b.statements.chunks(2) {
        let [s1, s2] = pair else {
            return Err(Error::Internal("statements come in pairs".into()));
        };
        let fetched = [fetch(b, &s1.image).await?, fetch(b, &s2.image).await?];
        let texts: Vec<String> = [s1, s2]
            .iter()
            .map(|s| format!("{PROMPT_PREFIX}{}", s.statement))
            .collect();
        let uris = [fetched[0].0.clone(), fetched[1].0.clone()];
        let prompts = texts.clone();
        let (back, probs) = tokio::task::spawn_blocking(move || {
            let probs = towers.score_pair(&fetched, &prompts);
            (towers, probs)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        towers = back;
        let probs = probs?;
        for (i, s) in [s1, s2].iter().enumerate() {
            let p = probs[i];
            let choice = if p > 0.5 { "1" } else { "2" };
            let answer = if s.id % 2 == 1 { "1" } else { "2" };
            rows.push(AnswerRow {
                benchmark: b.name.clone(),
                model: model.clone(),
                item: s.id,
                pair: s.pair,
                pattern: s.pattern.clone(),
                template: "mmvp-vlm".into(),
                prompt: texts[i].clone(),
                image: uris[i].clone(),
                response: Some(format!("p(image 1) = {p:.6}")),
                choice: Some(choice.into()),
                answer: answer.into(),
                correct: choice == answer,
                grader: "clip-softmax".into(),
                labels: "original".into(),
                ..Default::default()
            });
        }
        progress.advance(2);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_image_wins_only_when_strictly_closer() {
        let t = [1.0, 0.0];
        assert!(first_image_probability(&t, &[1.0, 0.0], &[0.0, 1.0], 100.0) > 0.99);
        assert!(first_image_probability(&t, &[0.0, 1.0], &[1.0, 0.0], 100.0) < 0.01);
        // The scale sharpens the probability but never changes the choice.
        let soft = first_image_probability(&t, &[0.9, 0.1], &[0.8, 0.2], 1.0);
        assert!(soft > 0.5 && soft < 0.53, "{soft}");
        // A tie is 0.5 exactly, which the reference script counts as the second image.
        assert_eq!(
            first_image_probability(&t, &[0.6, 0.8], &[0.6, 0.8], 100.0),
            0.5
        );
    }
}
