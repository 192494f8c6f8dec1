//! Decode once, preprocess for every encoder: bytes to RGB (EXIF orientation applied, every
//! colour model brought to 8-bit RGB, decompression bombs refused), then per encoder a resize,
//! a centre crop and a normalisation into a CHW float tensor, matching torchvision's
//! `Resize(int) + CenterCrop + ToTensor + Normalize` on a PIL image.
//!
//! Speed comes from three things: encoders whose geometry matches share one resize; a JPEG at
//! least four times every encoder's input is decoded at 1/4 or 1/8 scale in the DCT (as PIL's
//! `draft` does; at 1/2 the scaled decoder is slower than the full-size one); and
//! normalisation is a per-channel lookup table.

use std::io::Cursor;

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};

use super::{AlphaRule, CropRounding, ExifRule, Interpolation, Manifest, ResizeRule};

/// Why an image could not be used; becomes an `errors` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFault {
    /// A short machine-readable word: `empty`, `not_an_image`, `truncated`, `too_large`,
    /// `unsupported`, `decode`.
    pub kind: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

fn fault(kind: &'static str, message: impl Into<String>) -> ImageFault {
    ImageFault {
        kind,
        message: message.into(),
    }
}

/// Limits and switches for decoding.
#[derive(Clone, Debug)]
pub struct DecodeParams {
    /// Images with more pixels than this are refused as decompression bombs.
    pub max_pixels: u64,
    /// Decode large JPEGs at a reduced DCT scale when every encoder needs far fewer pixels.
    pub dct_scaling: bool,
    /// EXIF orientation: applied (default) or ignored, as the encoders' manifests say
    /// ([`super::shared_exif`]).
    pub exif: ExifRule,
    /// Keep the alpha plane of an image that has one ([`Decoded::alpha`]), for transforms that
    /// composite onto white; [`Preprocessor::decode`] sets it from its transforms.
    pub keep_alpha: bool,
}

impl Default for DecodeParams {
    fn default() -> Self {
        // PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS).
        DecodeParams {
            max_pixels: 89_478_485,
            dct_scaling: true,
            exif: ExifRule::Apply,
            keep_alpha: false,
        }
    }
}

/// A decoded image in 8-bit RGB, upright.
#[derive(Debug)]
pub struct Decoded {
    /// The pixels, after EXIF orientation (and DCT scaling, if any).
    pub rgb: RgbImage,
    /// Width of the original image, upright.
    pub width: u32,
    /// Height of the original image, upright.
    pub height: u32,
    /// The alpha channel (one byte a pixel, as `rgb`), when the image has one that is not
    /// opaque everywhere; `rgb` is the colour without it (PIL's `convert("RGB")`).
    pub alpha: Option<Vec<u8>>,
}

/// Decodes `bytes` to upright 8-bit RGB. `min_side` is the smallest shortest side that every
/// encoder still needs; it only allows DCT-scaled decoding, never changes the reported size.
pub fn decode(bytes: &[u8], min_side: u32, params: &DecodeParams) -> Result<Decoded, ImageFault> {
    if bytes.is_empty() {
        return Err(fault("empty", "the object has zero bytes"));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        // Four bytes name most formats (`3c68746d` is an HTML page) and say little else.
        let head: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        fault(
            "not_an_image",
            format!("not a known image format (starts with {head})"),
        )
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
    ) {
        return Err(fault(
            "unsupported",
            format!("{format:?} images are not supported; use JPEG, PNG, WebP or GIF"),
        ));
    }
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
        if params.dct_scaling {
            if let Some(decoded) = decode_jpeg_scaled(bytes, min_side, params)? {
                return Ok(decoded);
            }
        }
    }
    if format == ImageFormat::Png {
        if let Some(stripped) = strip_png_ancillary(bytes) {
            return decode_full(&stripped, format, params);
        }
    }
    decode_full(bytes, format, params)
}

/// PNG chunks blindspot never uses whose contents are compressed or unbounded: ICC profiles
/// and text. A 1 MB iCCP chunk can inflate to 1 GiB, which the PNG decoder would allocate
/// (within the pixel budget) on every decode thread at once.
const SKIPPED_PNG_CHUNKS: [&[u8; 4]; 4] = [b"iCCP", b"zTXt", b"iTXt", b"tEXt"];

/// `bytes` without the chunks of `SKIPPED_PNG_CHUNKS`, when it has any (None: decode it as it
/// is; a damaged chunk list is left for the decoder to report).
fn strip_png_ancillary(bytes: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: usize = 8;
    let mut at = SIGNATURE;
    let mut spans = Vec::new();
    let mut skipped = false;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let end = at.checked_add(12)?.checked_add(len)?;
        if end > bytes.len() {
            break;
        }
        let kind = &bytes[at + 4..at + 8];
        if SKIPPED_PNG_CHUNKS.iter().any(|k| k.as_slice() == kind) {
            skipped = true;
        } else {
            spans.push(at..end);
        }
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    if !skipped {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..SIGNATURE]);
    for span in spans {
        out.extend_from_slice(&bytes[span]);
    }
    // Whatever followed a damaged or short chunk list, as it was.
    out.extend_from_slice(&bytes[at..]);
    Some(out)
}

/// A JPEG whose last scan is not followed by an end-of-image marker was cut short; most
/// decoders fill the rest with grey instead of failing, which would embed a damaged image.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), ImageFault> {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let eoi_after = |start: usize| bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]);
    match last_sos {
        Some(sos) if eoi_after(sos) => Ok(()),
        Some(_) => Err(fault(
            "truncated",
            "the JPEG ends before its end-of-image marker",
        )),
        None => Err(fault(
            "truncated",
            "the JPEG has no image data (no start-of-scan marker)",
        )),
    }
}

fn check_size(width: u32, height: u32, params: &DecodeParams) -> Result<(), ImageFault> {
    let pixels = width as u64 * height as u64;
    if pixels > params.max_pixels {
        return Err(fault(
            "too_large",
            format!(
                "{width}x{height} is {pixels} pixels, over the limit of {} (a decompression bomb?)",
                params.max_pixels
            ),
        ));
    }
    if width == 0 || height == 0 {
        return Err(fault(
            "decode",
            format!("the image declares a size of {width}x{height}"),
        ));
    }
    Ok(())
}

fn classify(err: image::ImageError) -> ImageFault {
    use image::ImageError;
    let msg = err.to_string();
    match err {
        ImageError::Limits(_) => fault("too_large", msg),
        ImageError::Unsupported(_) => fault("unsupported", msg),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            fault("truncated", msg)
        }
        _ => {
            let lower = msg.to_lowercase();
            if lower.contains("eof")
                || lower.contains("end of")
                || lower.contains("unexpected end")
                || lower.contains("truncat")
            {
                fault("truncated", msg)
            } else {
                fault("decode", msg)
            }
        }
    }
}

fn decode_full(
    bytes: &[u8],
    format: ImageFormat,
    params: &DecodeParams,
) -> Result<Decoded, ImageFault> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(params.max_pixels.saturating_mul(8));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, params)?;
    let orientation = match params.exif {
        ExifRule::Apply => decoder.orientation().ok(),
        ExifRule::Ignore => None,
    };
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(classify)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let alpha = params.keep_alpha.then(|| alpha_plane(&img)).flatten();
    let rgb = img.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(Decoded {
        rgb,
        width,
        height,
        alpha,
    })
}

/// The alpha channel of `img` at 8 bits, unless it has none or it is opaque everywhere.
fn alpha_plane(img: &image::DynamicImage) -> Option<Vec<u8>> {
    if !img.color().has_alpha() {
        return None;
    }
    let alpha: Vec<u8> = match img.as_rgba8() {
        Some(rgba) => rgba.pixels().map(|p| p.0[3]).collect(),
        None => img.to_rgba8().pixels().map(|p| p.0[3]).collect(),
    };
    alpha.iter().any(|&a| a != 255).then_some(alpha)
}

/// Pillow's `alpha_composite` of the image over opaque white (its integer arithmetic, so the
/// result is PIL's to the level), as Hugging Face's `convert_to_rgb` does it.
fn over_white(rgb: &RgbImage, alpha: &[u8]) -> RgbImage {
    let mut out = rgb.clone();
    for (px, &a) in out.pixels_mut().zip(alpha) {
        let a = a as u32;
        for c in px.0.iter_mut() {
            // coef1 = a * 128 and coef2 = (255 - a) * 128 over white (PRECISION_BITS = 7).
            let t = (*c as u32 * a + 255 * (255 - a)) * 128 + (0x80 << 7);
            *c = ((((t >> 8) + t) >> 8) >> 7) as u8;
        }
    }
    out
}

/// DCT-scaled decoding of a large baseline/progressive JPEG in RGB or greyscale. Returns
/// `None` when no reduction applies (small image, CMYK, 16-bit), so the full path runs.
fn decode_jpeg_scaled(
    bytes: &[u8],
    min_side: u32,
    params: &DecodeParams,
) -> Result<Option<Decoded>, ImageFault> {
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    if dec.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = dec.info() else {
        return Ok(None);
    };
    let (w, h) = (info.width as u32, info.height as u32);
    check_size(w, h, params)?;
    if !matches!(
        info.pixel_format,
        jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8
    ) {
        return Ok(None);
    }
    let short = w.min(h);
    // jpeg-decoder is slower than the full-size decoder at 1/2 scale (measured with
    // scripts/bench_preprocess.py --real); from 1/4 down it wins clearly.
    if min_side == 0 || short < 4 * min_side {
        return Ok(None);
    }
    // Ask for the smallest scale whose shortest side is still at least `min_side`.
    let factor = (short / min_side).min(8);
    let (rw, rh) = (w.div_ceil(factor), h.div_ceil(factor));
    let (sw, sh) = match dec.scale(
        rw.min(u16::MAX as u32) as u16,
        rh.min(u16::MAX as u32) as u16,
    ) {
        Ok(s) => (s.0 as u32, s.1 as u32),
        Err(_) => return Ok(None),
    };
    let pixels = dec.decode().map_err(|e| classify_jpeg(&e))?;
    let orientation = match params.exif {
        ExifRule::Apply => dec
            .exif_data()
            .and_then(image::metadata::Orientation::from_exif_chunk),
        ExifRule::Ignore => None,
    }
    .unwrap_or(image::metadata::Orientation::NoTransforms);
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            let grey = image::GrayImage::from_raw(sw, sh, pixels)
                .ok_or_else(|| fault("decode", "short greyscale buffer"))?;
            image::DynamicImage::ImageLuma8(grey).into_rgb8()
        }
        _ => {
            RgbImage::from_raw(sw, sh, pixels).ok_or_else(|| fault("decode", "short RGB buffer"))?
        }
    };
    let mut img = image::DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    let swaps = matches!(
        orientation,
        image::metadata::Orientation::Rotate90
            | image::metadata::Orientation::Rotate270
            | image::metadata::Orientation::Rotate90FlipH
            | image::metadata::Orientation::Rotate270FlipH
    );
    let (width, height) = if swaps { (h, w) } else { (w, h) };
    Ok(Some(Decoded {
        rgb: img.into_rgb8(),
        width,
        height,
        alpha: None,
    }))
}

fn classify_jpeg(err: &jpeg_decoder::Error) -> ImageFault {
    let msg = err.to_string();
    if msg.to_lowercase().contains("eof") {
        fault("truncated", msg)
    } else {
        fault("decode", msg)
    }
}

/// The geometry of one encoder's preprocessing, what decides whether two encoders can share
/// a resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ResizeKey {
    rule: ResizeRuleKey,
    interpolation: Interpolation,
    /// The source differs with the alpha rule, the crop box with the rounding.
    alpha: AlphaRule,
    rounding: CropRounding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ResizeRuleKey {
    ShortestSide(u32),
    Squash(u32),
}

/// One encoder's preprocessing, compiled from its manifest.
#[derive(Clone, Debug)]
pub struct Transform {
    key: ResizeKey,
    crop: u32,
    /// Per channel, the normalised value of each 8-bit level: `(v / 255 - mean) / std`.
    lut: [[f32; 256]; 3],
}

impl Transform {
    /// Compiles a manifest's preprocessing.
    pub fn new(m: &Manifest) -> Transform {
        let rule = match m.resize {
            ResizeRule::ShortestSide => ResizeRuleKey::ShortestSide(m.resize_size()),
            ResizeRule::Squash => ResizeRuleKey::Squash(m.image_size),
        };
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                // The same float32 operations, in the same order, as ToTensor + Normalize.
                *slot = (v as f32 / 255.0 - m.mean[c]) / m.std[c];
            }
        }
        Transform {
            key: ResizeKey {
                rule,
                interpolation: m.interpolation,
                alpha: m.alpha,
                rounding: m.crop_rounding,
            },
            crop: m.image_size,
            lut,
        }
    }

    /// Side of the output tensor.
    pub fn size(&self) -> u32 {
        self.crop
    }

    /// Number of floats in one preprocessed image.
    pub fn len(&self) -> usize {
        3 * (self.crop as usize).pow(2)
    }

    /// Never true: a transform always yields 3 x size x size values.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shortest side this transform needs from the decoder.
    fn min_side(&self) -> u32 {
        match self.key.rule {
            ResizeRuleKey::ShortestSide(s) => s,
            ResizeRuleKey::Squash(s) => s,
        }
    }
}

/// torchvision's `Resize(int)` output size: the short side becomes `size`, the long side
/// `int(size * long / short)`.
pub fn shortest_side_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as u32)
    } else {
        ((size as f64 * width as f64 / height as f64) as u32, size)
    }
}

/// The centre crop's offset: torchvision's `int(round((len - crop) / 2))`, rounding halves to
/// even, or Hugging Face's `(len - crop) // 2`.
pub fn centre_offset(len: u32, crop: u32, rounding: CropRounding) -> u32 {
    let d = (len as f64 - crop as f64) / 2.0;
    match rounding {
        CropRounding::HalfEven => d.round_ties_even().max(0.0) as u32,
        CropRounding::Floor => d.floor().max(0.0) as u32,
    }
}

/// Preprocesses decoded images for a fixed set of encoders, reusing its buffers. One per
/// worker thread.
pub struct Preprocessor {
    transforms: Vec<Transform>,
    /// For each transform, the index of the first transform with the same resize.
    share: Vec<usize>,
    resizer: Resizer,
}

impl Preprocessor {
    /// A preprocessor for these encoders' transforms, in order.
    pub fn new(transforms: Vec<Transform>) -> Preprocessor {
        let share = (0..transforms.len())
            .map(|i| {
                (0..=i)
                    .find(|&j| transforms[j].key == transforms[i].key)
                    .unwrap_or(i)
            })
            .collect();
        Preprocessor {
            transforms,
            share,
            resizer: Resizer::new(),
        }
    }

    /// The transforms, in order.
    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// The smallest shortest side that still serves every transform (for DCT scaling).
    pub fn min_side(&self) -> u32 {
        self.transforms
            .iter()
            .map(Transform::min_side)
            .max()
            .unwrap_or(0)
    }

    /// Decodes `bytes` for these transforms: at the smallest scale they allow, with the alpha
    /// plane only when one of them composites onto white.
    pub fn decode(&self, bytes: &[u8], params: &DecodeParams) -> Result<Decoded, ImageFault> {
        let params = DecodeParams {
            keep_alpha: self.wants_white(),
            ..params.clone()
        };
        decode(bytes, self.min_side(), &params)
    }

    fn wants_white(&self) -> bool {
        self.transforms
            .iter()
            .any(|t| t.key.alpha == AlphaRule::White)
    }

    /// Fills `outs[i]` (length `transforms[i].len()`, CHW) for every transform, from an
    /// image without alpha.
    pub fn run(&mut self, img: &RgbImage, outs: &mut [&mut [f32]]) -> Result<(), ImageFault> {
        self.run_with(img, None, outs)
    }

    /// [`Preprocessor::run`] on a decoded image: transforms whose alpha rule is `white` see
    /// it composited onto white.
    pub fn run_decoded(&mut self, d: &Decoded, outs: &mut [&mut [f32]]) -> Result<(), ImageFault> {
        self.run_with(&d.rgb, d.alpha.as_deref(), outs)
    }

    fn run_with(
        &mut self,
        img: &RgbImage,
        alpha: Option<&[u8]>,
        outs: &mut [&mut [f32]],
    ) -> Result<(), ImageFault> {
        let (w, h) = img.dimensions();
        let white = alpha
            .filter(|_| self.wants_white())
            .map(|a| over_white(img, a));
        let src = image_ref(img)?;
        let src_white = white.as_ref().map(image_ref).transpose()?;
        let mut resized: Vec<Option<(FirImage<'static>, u32, u32)>> =
            (0..self.transforms.len()).map(|_| None).collect();
        assert_eq!(
            outs.len(),
            self.transforms.len(),
            "one output per transform"
        );
        for (i, out) in outs.iter_mut().enumerate() {
            let owner = self.share[i];
            if resized[owner].is_none() {
                let from = match (&src_white, self.transforms[owner].key.alpha) {
                    (Some(white), AlphaRule::White) => white,
                    _ => &src,
                };
                resized[owner] = Some(self.resize(from, owner)?);
            }
            let (img, off_x, off_y) = resized[owner].as_ref().expect("resized above");
            let t = &self.transforms[i];
            let (ox, oy) = match t.key.rule {
                ResizeRuleKey::ShortestSide(_) => {
                    // The shared image holds the owner's crop box; this crop is centred in it.
                    let (nw, nh) = full_size(&self.transforms[owner], w, h);
                    let r = t.key.rounding;
                    (
                        centre_offset(nw, t.crop, r) - off_x,
                        centre_offset(nh, t.crop, r) - off_y,
                    )
                }
                ResizeRuleKey::Squash(_) => (0, 0),
            };
            normalise_into(img, ox, oy, t, out);
        }
        Ok(())
    }

    /// Resizes for transform `owner` (and every transform sharing it): only the region that
    /// survives the largest of their centre crops is computed. Returns the image and where
    /// that region starts in the full resized image.
    fn resize(
        &mut self,
        src: &ImageRef<'_>,
        owner: usize,
    ) -> Result<(FirImage<'static>, u32, u32), ImageFault> {
        let t = &self.transforms[owner];
        let (w, h) = (src.width(), src.height());
        let crop = (0..self.transforms.len())
            .filter(|&j| self.share[j] == owner)
            .map(|j| self.transforms[j].crop)
            .max()
            .unwrap_or(t.crop);
        let alg = ResizeAlg::Convolution(match t.key.interpolation {
            Interpolation::Bicubic => FilterType::CatmullRom,
            Interpolation::Bilinear => FilterType::Bilinear,
        });
        let (nw, nh) = full_size(t, w, h);
        let (out_w, out_h, off_x, off_y) = match t.key.rule {
            ResizeRuleKey::ShortestSide(_) => {
                let (cw, ch) = (crop.min(nw), crop.min(nh));
                let r = t.key.rounding;
                (cw, ch, centre_offset(nw, cw, r), centre_offset(nh, ch, r))
            }
            ResizeRuleKey::Squash(s) => (s, s, 0, 0),
        };
        let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
        let mut dst = FirImage::new(out_w, out_h, PixelType::U8x3);
        if (nw, nh) == (w, h) {
            // torchvision leaves an image already at the target size untouched.
            copy_region(src, off_x, off_y, &mut dst);
            return Ok((dst, off_x, off_y));
        }
        // PIL resizes horizontally first, rounding to 8 bits between the passes, and only the
        // rows the vertical pass reads. fast_image_resize does the vertical pass first on 8-bit
        // images (up to 18 levels apart from PIL at sharp edges), so the two passes are asked
        // for one at a time, in PIL's order.
        // The crop box in source pixels, kept inside the source: `224 * (499 / 224)` is a
        // hair above 499 in floating point, which the resizer refuses.
        let (left, top) = (off_x as f64 * sx, off_y as f64 * sy);
        let width = (out_w as f64 * sx).min(w as f64 - left);
        let height = (out_h as f64 * sy).min(h as f64 - top);
        let reach = (SUPPORT * sy.max(1.0)).ceil() + 1.0;
        let y0 = (top - reach).floor().max(0.0) as u32;
        let y1 = ((top + height + reach).ceil() as u32).min(h);
        let fail = |e: fast_image_resize::ResizeError| fault("decode", e.to_string());
        let mut rows = FirImage::new(out_w, y1 - y0, PixelType::U8x3);
        let across =
            ResizeOptions::new()
                .resize_alg(alg)
                .crop(left, y0 as f64, width, (y1 - y0) as f64);
        self.resizer.resize(src, &mut rows, &across).map_err(fail)?;
        let down = ResizeOptions::new().resize_alg(alg).crop(
            0.0,
            top - y0 as f64,
            out_w as f64,
            height.min((y1 - y0) as f64 - (top - y0 as f64)),
        );
        self.resizer.resize(&rows, &mut dst, &down).map_err(fail)?;
        Ok((dst, off_x, off_y))
    }
}

/// The widest reach of the resize filters, in output pixels (bicubic's 2; bilinear's is 1).
const SUPPORT: f64 = 2.0;

/// An RGB image as fast_image_resize reads it.
fn image_ref(img: &RgbImage) -> Result<ImageRef<'_>, ImageFault> {
    ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .map_err(|e| fault("decode", e.to_string()))
}

/// Size of the whole image after the resize step of `t`.
fn full_size(t: &Transform, w: u32, h: u32) -> (u32, u32) {
    match t.key.rule {
        ResizeRuleKey::ShortestSide(s) => shortest_side_size(w, h, s),
        ResizeRuleKey::Squash(s) => (s, s),
    }
}

fn copy_region(src: &ImageRef<'_>, x: u32, y: u32, dst: &mut FirImage<'_>) {
    let (sw, dw, dh) = (
        src.width() as usize,
        dst.width() as usize,
        dst.height() as usize,
    );
    let from = src.buffer();
    let to = dst.buffer_mut();
    for row in 0..dh {
        let s = ((y as usize + row) * sw + x as usize) * 3;
        to[row * dw * 3..(row + 1) * dw * 3].copy_from_slice(&from[s..s + dw * 3]);
    }
}

/// Writes the `t.crop`-square at (`ox`, `oy`) of `img` as normalised CHW floats. A region
/// smaller than the crop (an image smaller than the model input) is zero-padded, centred,
/// as torchvision's CenterCrop pads.
fn normalise_into(img: &FirImage<'_>, ox: u32, oy: u32, t: &Transform, out: &mut [f32]) {
    let s = t.crop as usize;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let plane = s * s;
    let buf = img.buffer();
    let (pad_x, pad_y) = (s.saturating_sub(iw) / 2, s.saturating_sub(ih) / 2);
    if pad_x > 0 || pad_y > 0 || iw < s || ih < s {
        out.fill(0.0);
    }
    let rows = s.min(ih);
    let cols = s.min(iw);
    let [r, g, b] = &t.lut;
    for y in 0..rows {
        let src_row = &buf[((oy as usize + y) * iw + ox as usize) * 3..][..cols * 3];
        let base = (y + pad_y) * s + pad_x;
        let (rp, rest) = out.split_at_mut(plane);
        let (gp, bp) = rest.split_at_mut(plane);
        for (x, px) in src_row.chunks_exact(3).enumerate() {
            rp[base + x] = r[px[0] as usize];
            gp[base + x] = g[px[1] as usize];
            bp[base + x] = b[px[2] as usize];
        }
    }
}

/// Decodes `bytes` once and preprocesses them for every transform of `pre`: the original
/// (upright) width and height, and one input tensor per encoder.
pub fn prepare(
    pre: &mut Preprocessor,
    bytes: &[u8],
    decode_params: &DecodeParams,
) -> Result<(u32, u32, Vec<Vec<f32>>), ImageFault> {
    let decoded = pre.decode(bytes, decode_params)?;
    let mut tensors: Vec<Vec<f32>> = pre
        .transforms()
        .iter()
        .map(|t| vec![0f32; t.len()])
        .collect();
    let mut slices: Vec<&mut [f32]> = tensors.iter_mut().map(|v| v.as_mut_slice()).collect();
    pre.run_decoded(&decoded, &mut slices)?;
    Ok((decoded.width, decoded.height, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_boxes_a_hair_past_the_source_still_resize() {
        // 888 x 499 and 501 x 471 to 224 and 256: the crop box's float height is a hair above
        // the source's (224 * (499 / 224) > 499), which the resizer used to refuse.
        for (w, h) in [(888, 499), (501, 471)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
            for size in [224, 256] {
                let m: Manifest = toml::from_str(&format!(
                    "id = \"t\"\nonnx = \"t.onnx\"\ninput = \"i\"\noutput = \"o\"\ndim = 4\nimage-size = 224\nresize-size = {size}\nresize = \"shortest-side\"\ninterpolation = \"bicubic\"\nmean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\n"
                ))
                .unwrap();
                let t = Transform::new(&m);
                let mut out = vec![0f32; t.len()];
                Preprocessor::new(vec![t])
                    .run(&img, &mut [&mut out])
                    .unwrap_or_else(|e| panic!("{w} x {h} to {size}: {e:?}"));
            }
        }
    }

    #[test]
    fn torchvision_resize_and_crop_rules() {
        assert_eq!(shortest_side_size(640, 480, 256), (341, 256));
        assert_eq!(shortest_side_size(333, 500, 72), (72, 108));
        let (even, floor) = (CropRounding::HalfEven, CropRounding::Floor);
        assert_eq!(centre_offset(97, 64, even), 16);
        assert_eq!(centre_offset(99, 64, even), 18);
        assert_eq!(centre_offset(64, 64, even), 0);
        // Transformers floors: 17.5 -> 17 where torchvision rounds to the even 18.
        assert_eq!(centre_offset(99, 64, floor), 17);
        assert_eq!(centre_offset(97, 64, floor), 16);
    }

    #[test]
    fn alpha_over_white_is_pillows_arithmetic() {
        // Pillow: alpha_composite(white, (r, g, b, a)) for these values, computed with its
        // formula by hand: a = 0 is white, a = 255 the colour, a = 128 halfway.
        let rgb = RgbImage::from_fn(3, 1, |_, _| image::Rgb([0, 100, 255]));
        let out = over_white(&rgb, &[0, 255, 128]);
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 100, 255]);
        // 0 * 128/255 + 255 * 127/255 = 127.0; 100 -> 177.2 -> 177; 255 -> 255.
        assert_eq!(out.get_pixel(2, 0).0, [127, 177, 255]);
    }

    /// A PNG with a chunk of `kind` holding `data` inserted after IHDR.
    fn png_with_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([10, 200, 30]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let ihdr_end = 8 + 12 + 13;
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        chunk.extend_from_slice(&crc.finalize().to_be_bytes());
        let mut out = png[..ihdr_end].to_vec();
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&png[ihdr_end..]);
        out
    }

    #[test]
    fn an_icc_bomb_is_skipped_and_the_image_decodes() {
        use std::io::Write;
        // 64 MiB of zeros deflate to about 64 KiB: an ICC profile that would inflate to it.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        let mut data = b"bomb\0\0".to_vec();
        data.extend(z.finish().unwrap());
        let png = png_with_chunk(b"iCCP", &data);
        assert!(png.len() < 1 << 20);
        let stripped = strip_png_ancillary(&png).unwrap();
        assert!(!stripped.windows(4).any(|w| w == b"iCCP"));
        let d = decode(&png, 16, &DecodeParams::default()).unwrap();
        assert_eq!((d.width, d.height), (40, 30));
        assert_eq!(d.rgb.get_pixel(5, 5).0, [10, 200, 30]);
        // A PNG without such chunks is decoded as it is.
        let plain = png_with_chunk(b"tIME", &[7, 234, 1, 1, 0, 0, 0]);
        assert!(strip_png_ancillary(&plain).is_none());
    }

    #[test]
    fn empty_and_garbage_bytes_are_classified() {
        let p = DecodeParams::default();
        assert_eq!(decode(&[], 64, &p).unwrap_err().kind, "empty");
        assert_eq!(
            decode(b"hello, this is text", 64, &p).unwrap_err().kind,
            "not_an_image"
        );
    }

    #[test]
    fn a_solid_colour_normalises_exactly() {
        let m: Manifest = toml::from_str(
            r#"id = "t"
onnx = "t.onnx"
input = "i"
output = "o"
dim = 4
image-size = 8
resize-size = 10
resize = "shortest-side"
interpolation = "bilinear"
mean = [0.5, 0.4, 0.3]
std = [0.2, 0.25, 0.5]
"#,
        )
        .unwrap();
        let img = RgbImage::from_pixel(30, 20, image::Rgb([200, 100, 50]));
        let mut pre = Preprocessor::new(vec![Transform::new(&m)]);
        let mut out = vec![0f32; pre.transforms()[0].len()];
        pre.run(&img, &mut [&mut out]).unwrap();
        let want = [
            (200.0 / 255.0 - 0.5) / 0.2,
            (100.0 / 255.0 - 0.4) / 0.25,
            (50.0 / 255.0 - 0.3) / 0.5,
        ];
        for (c, w) in want.iter().enumerate() {
            for v in &out[c * 64..(c + 1) * 64] {
                assert!((v - w).abs() < 1e-5, "channel {c}: {v} vs {w}");
            }
        }
    }
}
