//! Image encoders: the TOML manifest that describes an ONNX model, and one ONNX Runtime
//! session per encoder that turns preprocessed batches into L2-normalised embeddings. Shared
//! by the embed stage and the evaluation of vision encoders; `preprocess` turns image bytes
//! into each encoder's input tensor and `runtime` loads ONNX Runtime and picks the device.

pub mod preprocess;
pub mod runtime;

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView4, Axis};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::table::schema::EncoderMeta;
use runtime::Device;

/// How an image is brought to the model's square input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeRule {
    /// Shortest side to `resize-size` (aspect kept), then a centre crop to `image-size`.
    ShortestSide,
    /// Straight to `image-size` x `image-size`, aspect not kept.
    Squash,
}

/// How an image with an alpha channel becomes RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaRule {
    /// The alpha channel is dropped (PIL's `convert("RGB")`, as torchvision and OpenCLIP
    /// pipelines do).
    #[default]
    Drop,
    /// The image is composited onto white first (Hugging Face transformers' `convert_to_rgb`).
    White,
}

/// How the centre crop's offset is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CropRounding {
    /// torchvision's `int(round((len - crop) / 2))`, halves to even.
    #[default]
    HalfEven,
    /// Hugging Face transformers' `(len - crop) // 2`.
    Floor,
}

/// Whether EXIF orientation is applied before preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExifRule {
    /// Upright as the camera meant (PIL's `ImageOps.exif_transpose`).
    #[default]
    Apply,
    /// As stored (a plain `Image.open`, as Hugging Face processors see it).
    Ignore,
}

/// The resampling filter, as PIL and torchvision name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// Catmull-Rom cubic (PIL's BICUBIC, a = -0.5), antialiased when shrinking.
    Bicubic,
    /// Triangle filter (PIL's BILINEAR), antialiased when shrinking.
    Bilinear,
}

/// Element type of the model's input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InputType {
    /// 32-bit floats.
    #[default]
    Float32,
    /// 16-bit floats (fp16 exports).
    Float16,
}

/// An encoder manifest as written in TOML (see `models/tiny/*.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Encoder id, recorded in the outputs.
    pub id: String,
    /// The model file, relative to the manifest.
    pub onnx: PathBuf,
    /// Name of the NCHW image input.
    pub input: String,
    /// Element type of that input.
    #[serde(default)]
    pub input_dtype: InputType,
    /// Name of the output that is the embedding, `[N, dim]`.
    pub output: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Side of the square model input.
    pub image_size: u32,
    /// Shortest side before the centre crop (shortest-side rule only); defaults to image-size.
    pub resize_size: Option<u32>,
    /// How the image is brought to the input size.
    pub resize: ResizeRule,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean of the [0, 1] RGB input.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the [0, 1] RGB input.
    pub std: [f32; 3],
    /// An alpha channel: `drop` (default) or `white`.
    #[serde(default)]
    pub alpha: AlphaRule,
    /// The centre crop's offset: `half-even` (default) or `floor`.
    #[serde(default)]
    pub crop_rounding: CropRounding,
    /// EXIF orientation: `apply` (default) or `ignore`. One decode serves every encoder of a
    /// run, so they must agree.
    #[serde(default)]
    pub exif: ExifRule,
}

/// The EXIF rule shared by `manifests` (one decode serves them all): an error naming both
/// when they disagree.
pub fn shared_exif<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> Result<ExifRule> {
    let mut seen: Option<&Manifest> = None;
    for m in manifests {
        match seen {
            Some(first) if first.exif != m.exif => {
                return Err(Error::Usage(format!(
                    "encoders {} (exif = {:?}) and {} (exif = {:?}) disagree on EXIF orientation; one decode serves both, so export them with the same `exif` key",
                    first.id, first.exif, m.id, m.exif
                )))
            }
            Some(_) => {}
            None => seen = Some(m),
        }
    }
    Ok(seen.map_or(ExifRule::Apply, |m| m.exif))
}

/// A manifest read from disk, with the paths and digest that follow from it.
#[derive(Clone, Debug)]
pub struct LoadedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Where the manifest was read from.
    pub path: PathBuf,
    /// The model file, resolved against the manifest's folder.
    pub model_path: PathBuf,
    /// blake3 over the manifest text and the model file's length.
    pub digest: String,
}

impl Manifest {
    /// The shortest side before cropping.
    pub fn resize_size(&self) -> u32 {
        self.resize_size.unwrap_or(self.image_size)
    }

    /// Every inconsistency in the manifest's own values.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.id.trim().is_empty() {
            p.push("id is empty".to_string());
        }
        if self.dim == 0 {
            p.push("dim must be at least 1".to_string());
        }
        if self.image_size == 0 {
            p.push("image-size must be at least 1".to_string());
        }
        if self.resize == ResizeRule::ShortestSide && self.resize_size() < self.image_size {
            p.push(format!(
                "resize-size {} is smaller than image-size {}: the centre crop would not fit",
                self.resize_size(),
                self.image_size
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            p.push(format!("std {:?} must be positive", self.std));
        }
        p
    }
}

/// Reads and checks a manifest's own values, without looking for its model file (for
/// preprocessing-only uses such as benchmarks).
pub fn load_manifest_unchecked(path: &Path) -> Result<Manifest> {
    Ok(read_manifest(path)?.0)
}

fn read_manifest(path: &Path) -> Result<(Manifest, String)> {
    let bad = |reason: String| Error::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let problems = manifest.problems();
    if !problems.is_empty() {
        return Err(bad(problems.join("; ")));
    }
    Ok((manifest, text))
}

/// Reads and checks a manifest and finds its model file (the model itself is checked by
/// [`OnnxEncoder::load`]).
pub fn load_manifest(path: &Path) -> Result<LoadedManifest> {
    let bad = |reason: String| Error::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let (manifest, text) = read_manifest(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let model_path = dir.join(&manifest.onnx);
    let model_len = std::fs::metadata(&model_path)
        .map(|m| m.len())
        .map_err(|e| {
            bad(format!(
            "model file {} ({e}); fix `onnx` (relative to the manifest) or export the model first",
            model_path.display()
        ))
        })?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(text.as_bytes());
    hasher.update(&model_len.to_le_bytes());
    let digest = hasher.finalize().to_hex()[..16].to_string();
    Ok(LoadedManifest {
        manifest,
        path: path.to_path_buf(),
        model_path,
        digest,
    })
}

/// Settings for creating encoder sessions.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Where to run.
    pub device: Device,
    /// ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            device: Device::Cpu,
            intra_threads: 0,
        }
    }
}

/// An ONNX Runtime session for the model at `path` on the device `params` asks for.
pub(crate) fn open_session(path: &Path, id: &str, params: &SessionParams) -> Result<Session> {
    let fail = |reason: String| Error::Encoder {
        id: id.to_string(),
        reason,
    };
    let (lib, env) = runtime::init()?;
    let providers = runtime::execution_providers(params.device, &lib)?;
    let mut builder = Session::builder(&env).map_err(|e| fail(e.to_string()))?;
    builder = builder
        .with_execution_providers(providers)
        .map_err(|e| fail(format!("execution provider for {}: {e}", params.device)))?;
    if params.intra_threads > 0 {
        builder = builder
            .with_intra_threads(params.intra_threads)
            .map_err(|e| fail(e.to_string()))?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| fail(format!("cannot load {}: {e}", path.display())))
}

/// One encoder: its manifest and its ONNX Runtime session, created once and reused.
pub struct OnnxEncoder {
    /// The manifest it was loaded from.
    pub loaded: LoadedManifest,
    session: Session,
}

impl std::fmt::Debug for OnnxEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEncoder")
            .field("id", &self.loaded.manifest.id)
            .finish()
    }
}

impl OnnxEncoder {
    /// Creates the session and checks the model against its manifest: the input and output
    /// exist, and a one-image batch gives an embedding of the declared dimension.
    pub fn load(loaded: LoadedManifest, params: &SessionParams) -> Result<OnnxEncoder> {
        let id = loaded.manifest.id.clone();
        let fail = |reason: String| Error::Encoder {
            id: id.clone(),
            reason,
        };
        let session = open_session(&loaded.model_path, &id, params)?;
        let m = &loaded.manifest;
        let names = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| o.name().to_string())
                .collect::<Vec<_>>()
        };
        if !session.inputs().iter().any(|o| o.name() == m.input) {
            return Err(fail(format!(
                "the model has no input {:?} (it has {:?}); fix `input` in {}",
                m.input,
                names(session.inputs()),
                loaded.path.display()
            )));
        }
        if !session.outputs().iter().any(|o| o.name() == m.output) {
            return Err(fail(format!(
                "the model has no output {:?} (it has {:?}); fix `output` in {}",
                m.output,
                names(session.outputs()),
                loaded.path.display()
            )));
        }
        let mut encoder = OnnxEncoder { loaded, session };
        let size = encoder.loaded.manifest.image_size as usize;
        let probe = ndarray::Array4::<f32>::zeros((1, 3, size, size));
        let out = encoder.run_raw(probe.view())?;
        let want = encoder.loaded.manifest.dim;
        if out.dim() != (1, want) {
            return Err(Error::Encoder {
                id: encoder.loaded.manifest.id.clone(),
                reason: format!(
                    "output {:?} has shape {:?} for one image, but the manifest says dim = {want}; \
                     fix `dim` or `output` in {}",
                    encoder.loaded.manifest.output,
                    out.shape(),
                    encoder.loaded.path.display()
                ),
            });
        }
        Ok(encoder)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.loaded.manifest
    }

    /// What the embeddings table records about this encoder.
    pub fn meta(&self) -> EncoderMeta {
        EncoderMeta {
            id: self.loaded.manifest.id.clone(),
            digest: self.loaded.digest.clone(),
            dim: self.loaded.manifest.dim,
        }
    }

    /// Runs a preprocessed batch `[N, 3, S, S]` and returns L2-normalised embeddings `[N, dim]`.
    pub fn embed(&mut self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let mut out = self.run_raw(batch)?;
        l2_normalise(&mut out);
        Ok(out)
    }

    fn run_raw(&mut self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let m = &self.loaded.manifest;
        let fail = |reason: String| Error::Encoder {
            id: m.id.clone(),
            reason,
        };
        let outputs = match m.input_dtype {
            InputType::Float32 => {
                let tensor = TensorRef::from_array_view(batch).map_err(|e| fail(e.to_string()))?;
                self.session.run(ort::inputs![m.input.as_str() => tensor])
            }
            InputType::Float16 => {
                let half = batch.mapv(half::f16::from_f32);
                let tensor =
                    TensorRef::from_array_view(half.view()).map_err(|e| fail(e.to_string()))?;
                self.session.run(ort::inputs![m.input.as_str() => tensor])
            }
        }
        .map_err(|e| fail(format!("inference failed: {e}")))?;
        let value = &outputs[m.output.as_str()];
        let view = match value.try_extract_array::<f32>() {
            Ok(v) => v.to_owned(),
            Err(_) => value
                .try_extract_array::<half::f16>()
                .map_err(|e| fail(format!("output {:?} is neither f32 nor f16: {e}", m.output)))?
                .mapv(half::f16::to_f32),
        };
        let n = batch.len_of(Axis(0));
        let shape = view.shape().to_vec();
        if shape.len() != 2 || shape[0] != n {
            return Err(fail(format!(
                "output {:?} has shape {shape:?} for a batch of {n}; it must be [batch, dim]",
                m.output
            )));
        }
        view.into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| fail(e.to_string()))
    }
}

/// Scales each row to unit length; an all-zero row stays zero rather than becoming NaN.
pub fn l2_normalise(rows: &mut Array2<f32>) {
    for mut row in rows.rows_mut() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalised_rows_have_unit_norm(v in proptest::collection::vec(-1e3f32..1e3, 1..64)) {
            let n = v.len();
            let mut a = Array2::from_shape_vec((1, n), v.clone()).unwrap();
            l2_normalise(&mut a);
            let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            if v.iter().any(|x| *x != 0.0) {
                prop_assert!((norm - 1.0).abs() < 1e-4, "norm {}", norm);
            } else {
                prop_assert_eq!(norm, 0.0);
            }
        }
    }

    #[test]
    fn manifest_problems_are_all_reported() {
        let m: Manifest = toml::from_str(
            r#"id = ""
onnx = "x.onnx"
input = "i"
output = "o"
dim = 0
image-size = 64
resize-size = 32
resize = "shortest-side"
interpolation = "bicubic"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.0, 0.5]
"#,
        )
        .unwrap();
        let p = m.problems();
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn unknown_manifest_keys_are_refused() {
        let err = toml::from_str::<Manifest>("id = \"a\"\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
