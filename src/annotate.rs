//! Closing the loop from mining to a benchmark: mined `pairs` exported as an MMVP-format sheet
//! (`Questions.csv` and `MMVP Images/`) whose question and answer columns people fill in; the
//! filled sheet then loads with `blindspot eval mllm --benchmark` like MMVP itself.

use arrow::array::{Array, Float32Array};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::benchmark::{MMVP_IMAGES, QUESTIONS};
use crate::storage::{get_url, Location};
use crate::{filter, tables};

/// What `annotate` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct AnnotateSummary {
    /// Pairs exported.
    pub pairs: usize,
    /// The sheet's URL.
    pub sheet: String,
}

struct MinedPair {
    a: String,
    b: String,
    a_uri: String,
    b_uri: String,
    clip: f32,
    dino: f32,
}

async fn read_pairs(root: &Location) -> Result<Vec<MinedPair>> {
    if root.store.head(&root.path(filter::COMMIT)).await.is_err() {
        return Err(Error::Usage(format!(
            "{} has no pairs; run the filter stage first (`blindspot filter --root {}`)",
            root.url, root.url
        )));
    }
    let batches = tables::read(
        root,
        filter::PAIRS,
        &["a", "b", "a_uri", "b_uri", "clip_sim", "dino_sim"],
    )
    .await?;
    let mut out = Vec::new();
    for batch in &batches {
        let f32s = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
                .ok_or_else(|| Error::table("pairs", format!("no float column {name}")))
        };
        let (a, b) = (tables::strings(batch, "a")?, tables::strings(batch, "b")?);
        let (au, bu) = (
            tables::strings(batch, "a_uri")?,
            tables::strings(batch, "b_uri")?,
        );
        let (clip, dino) = (f32s("clip_sim")?, f32s("dino_sim")?);
        for i in 0..batch.num_rows() {
            out.push(MinedPair {
                a: a.value(i).to_string(),
                b: b.value(i).to_string(),
                a_uri: au.value(i).to_string(),
                b_uri: bu.value(i).to_string(),
                clip: clip.value(i),
                dino: if dino.is_null(i) {
                    f32::NAN
                } else {
                    dino.value(i)
                },
            });
        }
    }
    // The most CLIP-blind pairs (lowest DINOv2 similarity) first; ties by key for stable output.
    out.sort_by(|x, y| {
        x.dino
            .total_cmp(&y.dino)
            .then_with(|| (&x.a, &x.b).cmp(&(&y.a, &y.b)))
    });
    Ok(out)
}

fn extension(uri: &str) -> &str {
    let name = uri.rsplit('/').next().unwrap_or(uri);
    name.rsplit_once('.').map_or("jpg", |(_, e)| e)
}

/// Exports up to `limit` mined pairs of `root` (all when `None`) as an MMVP-format sheet at
/// `out`, copying the images.
pub async fn annotate(
    root: &Location,
    out: &Location,
    limit: Option<usize>,
) -> Result<AnnotateSummary> {
    let mut pairs = read_pairs(root).await?;
    pairs.truncate(limit.unwrap_or(usize::MAX));
    let mut sheet = csv::Writer::from_writer(Vec::new());
    let header = [
        "Index",
        "Question",
        "Options",
        "Correct Answer",
        "Pattern",
        "key",
        "source",
        "clip_sim",
        "dino_sim",
    ];
    let csv_err = |e: csv::Error| Error::table("annotation sheet", e);
    sheet.write_record(header).map_err(csv_err)?;
    for (k, p) in pairs.iter().enumerate() {
        for (j, (key, uri)) in [(&p.a, &p.a_uri), (&p.b, &p.b_uri)].into_iter().enumerate() {
            let index = 2 * k + j + 1;
            let bytes: Bytes = get_url(uri).await?;
            out.put(&format!("{MMVP_IMAGES}/{index}.{}", extension(uri)), bytes)
                .await?;
            sheet
                .write_record([
                    index.to_string().as_str(),
                    "",
                    "",
                    "",
                    "",
                    key,
                    uri,
                    &format!("{:.4}", p.clip),
                    &format!("{:.4}", p.dino),
                ])
                .map_err(csv_err)?;
        }
    }
    let text = sheet
        .into_inner()
        .map_err(|e| Error::table("annotation sheet", e.to_string()))?;
    out.put(QUESTIONS, Bytes::from(text)).await?;
    Ok(AnnotateSummary {
        pairs: pairs.len(),
        sheet: out.uri_of(&out.path(QUESTIONS)),
    })
}
