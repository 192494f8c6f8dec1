//! Thumbnails: each image of a shown pair fetched again by its `uri` (objects, URLs, tar
//! members, img2dataset Parquet rows), decoded once (DCT-scaled for large JPEGs), shrunk to a
//! bounded size and re-encoded as JPEG under the site's `thumbs/`, named by a hash of the uri,
//! so a second report over the same root fetches nothing it already has.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::encoder::preprocess::{decode, DecodeParams};
use crate::error::{Error, Result};
use crate::ingest::by_uri::fetch_uris;
use crate::ingest::fetch::{FetchParams, Fetcher};
use crate::storage::Location;

/// Where thumbnails go in the site.
pub const DIR: &str = "thumbs";

/// How thumbnails are made.
#[derive(Clone, Debug)]
pub struct ThumbParams {
    /// The longest side, in pixels.
    pub size: u32,
    /// JPEG quality (1-100).
    pub quality: u8,
    /// How images are fetched.
    pub fetch: FetchParams,
}

impl Default for ThumbParams {
    fn default() -> Self {
        ThumbParams {
            size: 224,
            quality: 82,
            fetch: FetchParams::default(),
        }
    }
}

/// The thumbnail of `uri`, relative to the site.
pub fn name(uri: &str) -> String {
    let h = blake3::hash(uri.as_bytes()).to_hex();
    format!("{DIR}/{}/{}.jpg", &h[..2], &h[2..18])
}

/// What making thumbnails did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ThumbStats {
    /// Thumbnails made by this run.
    pub made: u64,
    /// Found from an earlier run.
    pub cached: u64,
    /// Images that could not be fetched or decoded.
    pub failed: u64,
}

/// Makes thumbnails at a site, remembering which exist.
pub struct Thumbnailer {
    out: Location,
    params: ThumbParams,
    fetcher: Arc<Fetcher>,
    have: HashSet<String>,
    /// Why an image has no thumbnail, by uri.
    pub failures: std::collections::HashMap<String, String>,
    /// Counts.
    pub stats: ThumbStats,
}

impl Thumbnailer {
    /// Lists the site's existing thumbnails once.
    pub async fn open(out: &Location, params: &ThumbParams) -> Result<Thumbnailer> {
        // A site written for the first time has no thumbnails folder yet.
        let listed: Vec<object_store::ObjectMeta> =
            match out.store.list(Some(&out.path(DIR))).try_collect().await {
                Ok(l) => l,
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(Error::storage(out.uri_of(&out.path(DIR)), e)),
            };
        let prefix = out.path("").to_string();
        let have = listed
            .into_iter()
            .map(|m| {
                let p = m.location.to_string();
                p.strip_prefix(&prefix)
                    .unwrap_or(&p)
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        Ok(Thumbnailer {
            out: out.clone(),
            params: params.clone(),
            fetcher: Arc::new(Fetcher::new(&params.fetch)?),
            have,
            failures: Default::default(),
            stats: ThumbStats::default(),
        })
    }

    /// Whether `uri` has a thumbnail now.
    pub fn has(&self, uri: &str) -> bool {
        self.have.contains(&name(uri))
    }

    /// Makes the thumbnails of `uris` that do not exist yet; failures are remembered, never
    /// fatal (a card then says why it has no picture).
    pub async fn make(&mut self, uris: &[String]) -> Result<()> {
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        for u in uris {
            if !seen.insert(u.as_str()) || self.failures.contains_key(u) {
                continue;
            }
            if self.has(u) {
                self.stats.cached += 1;
            } else {
                wanted.push((u.clone(), u.clone()));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let (tx, mut rx) = mpsc::channel(64);
        let fetching = tokio::spawn(fetch_uris(self.fetcher.clone(), wanted, None, tx));
        let mut fetched: Vec<(String, Bytes)> = Vec::new();
        while let Some((uri, got)) = rx.recv().await {
            match got {
                Ok(bytes) => fetched.push((uri, bytes)),
                Err(e) => {
                    self.failures
                        .insert(uri, format!("{}: {}", e.kind, e.message));
                }
            }
        }
        fetching
            .await
            .map_err(|e| Error::Internal(format!("thumbnail fetch task: {e}")))?;
        let (size, quality) = (self.params.size, self.params.quality);
        let encoded: Vec<(String, std::result::Result<Vec<u8>, String>)> =
            tokio::task::spawn_blocking(move || {
                fetched
                    .into_par_iter()
                    .map(|(uri, bytes)| {
                        let r = thumbnail(&bytes, size, quality);
                        (uri, r)
                    })
                    .collect()
            })
            .await
            .map_err(|e| Error::Internal(format!("thumbnail task: {e}")))?;
        for (uri, r) in encoded {
            match r {
                Ok(jpeg) => {
                    let n = name(&uri);
                    self.out.put(&n, Bytes::from(jpeg)).await?;
                    self.have.insert(n);
                    self.stats.made += 1;
                }
                Err(why) => {
                    self.failures.insert(uri, why);
                }
            }
        }
        self.stats.failed = self.failures.len() as u64;
        Ok(())
    }
}

/// Decodes `bytes` and re-encodes them as a JPEG whose longest side is at most `size`.
pub fn thumbnail(bytes: &[u8], size: u32, quality: u8) -> std::result::Result<Vec<u8>, String> {
    let decoded = decode(bytes, size, &DecodeParams::default())
        .map_err(|f| format!("{}: {}", f.kind, f.message))?;
    let img = image::DynamicImage::ImageRgb8(decoded.rgb);
    let small = if img.width().max(img.height()) > size {
        img.thumbnail(size, size)
    } else {
        img
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&small.to_rgb8())
        .map_err(|e| format!("encode: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_bounded_jpegs_and_bad_bytes_say_why() {
        let img = image::RgbImage::from_fn(640, 320, |x, _| image::Rgb([(x % 256) as u8, 0, 90]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let jpeg = thumbnail(png.get_ref(), 128, 80).unwrap();
        assert_eq!(
            image::guess_format(&jpeg).unwrap(),
            image::ImageFormat::Jpeg
        );
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (128, 64));
        let why = thumbnail(b"not an image", 128, 80).unwrap_err();
        assert!(why.starts_with("not_an_image"), "{why}");
        assert_ne!(name("a"), name("b"));
        assert!(name("a").starts_with("thumbs/") && name("a").ends_with(".jpg"));
    }
}
