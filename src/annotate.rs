//! Closing the loop from mining to a benchmark: mined `pairs` exported as an MMVP-format sheet
//! (`Questions.csv` and `MMVP Images/`) whose question and answer columns people fill in; the
//! filled sheet then loads with `blindspot eval mllm --benchmark` like MMVP itself.

use arrow::array::Array;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::mmvp::{MMVP_IMAGES, QUESTIONS};
use crate::sql;
use crate::storage::{get_url, Location};
use crate::table::{self, io};

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

/// The first `limit` mined pairs (all when `None`) in `sql/annotate.sql`'s order; only those
/// are ever held in memory.
async fn read_pairs(root: &Location, limit: Option<usize>) -> Result<Vec<MinedPair>> {
    let (ctx, tables) = sql::session(root).await?;
    if !tables.iter().any(|t| t == table::PAIRS.name) {
        return Err(Error::Usage(format!(
            "{} has no pairs; run the filter stage first (`blindspot filter --root {}`)",
            root.url, root.url
        )));
    }
    let mut batches = ctx
        .sql(sql::queries::ANNOTATE)
        .await
        .and_then(|df| df.limit(0, limit))
        .map_err(|e| Error::table("pairs", format!("sql/annotate.sql: {e}")))?
        .execute_stream()
        .await
        .map_err(|e| Error::table("pairs", e))?;
    let mut out = Vec::new();
    while let Some(batch) = batches
        .try_next()
        .await
        .map_err(|e| Error::table("pairs", e))?
    {
        let batch = &batch;
        let (a, b) = (io::strings(batch, "a")?, io::strings(batch, "b")?);
        let (au, bu) = (io::strings(batch, "a_uri")?, io::strings(batch, "b_uri")?);
        let (clip, dino) = (
            io::floats(batch, "clip_sim")?,
            io::floats(batch, "dino_sim")?,
        );
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
    let pairs = read_pairs(root, limit).await?;
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
