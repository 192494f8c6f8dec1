//! Recall of the committed `candidates` table against brute force, for any mining method: a
//! sample of query images (chosen by a hash of the key, so the same on every run), every pair
//! above the threshold that involves one of them found by streaming all CLIP vectors past the
//! queries, and the share of those pairs the table holds. Memory: the queries, their pairs and
//! the keys of collapsed duplicates; never the vectors of the whole corpus.

use std::collections::HashSet;

use futures::TryStreamExt;
use ndarray::{Array2, ArrayView2};

use super::join;
use crate::error::Result;
use crate::table::{self, io, Catalog, Generations, TableDef};

pub use crate::table::records::Recall;

fn chosen(key: &str, stride: u64) -> bool {
    let h = blake3::hash(key.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) % stride == 0
}

/// Measures the recall of `catalog`'s candidates at `clip_min` on about `sample` queries, with
/// the CLIP vectors of `vectors`: `embeddings`, or `cells` for a partitioned table (the rows it
/// mined, each once, and raw vectors, which read several times faster than the embeddings'
/// f16 lists).
pub async fn measure(
    catalog: &Catalog,
    clip_min: f32,
    sample: usize,
    vectors: &TableDef,
) -> Result<Recall> {
    let collapsed = collapsed_keys(catalog).await?;
    let rows: u64 = catalog
        .objects(&table::EMBEDDINGS, Generations::All)
        .await?
        .iter()
        .map(|o| o.rows.unwrap_or(0))
        .sum();
    let stride = (rows / sample.max(1) as u64).max(1);
    let (qkeys, queries) = queries(catalog, vectors, stride, &collapsed).await?;
    let exact = exact_pairs(
        catalog,
        vectors,
        &qkeys,
        queries.view(),
        clip_min,
        &collapsed,
    )
    .await?;
    // The table's pairs that involve a query.
    let query_set: HashSet<&str> = qkeys.iter().map(String::as_str).collect();
    let mut found = 0u64;
    let mut s = catalog
        .scan(&table::CANDIDATES, &["a", "b"], Generations::All)
        .await?;
    while let Some(batch) = s.try_next().await? {
        let (a, b) = (io::strings(&batch, "a")?, io::strings(&batch, "b")?);
        for (a, b) in a.iter().zip(b.iter()) {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            if (query_set.contains(a) || query_set.contains(b))
                && exact.contains(&(a.to_string(), b.to_string()))
            {
                found += 1;
            }
        }
    }
    let exact_pairs = exact.len() as u64;
    Ok(Recall {
        sample: qkeys.len(),
        exact_pairs,
        found,
        recall: if exact_pairs == 0 {
            1.0
        } else {
            found as f64 / exact_pairs as f64
        },
    })
}

/// The keys collapsed as exact duplicates (not mined, so not counted).
async fn collapsed_keys(catalog: &Catalog) -> Result<HashSet<String>> {
    let mut collapsed = HashSet::new();
    if catalog.has(&table::DUPLICATES).await? {
        let mut s = catalog
            .scan(&table::DUPLICATES, &["key"], Generations::All)
            .await?;
        while let Some(b) = s.try_next().await? {
            collapsed.extend(io::strings(&b, "key")?.iter().flatten().map(str::to_string));
        }
    }
    Ok(collapsed)
}

/// Pass 1: the query images (every `stride`-th key by hash, not collapsed) and their vectors.
async fn queries(
    catalog: &Catalog,
    vectors: &TableDef,
    stride: u64,
    collapsed: &HashSet<String>,
) -> Result<(Vec<String>, Array2<f32>)> {
    let (mut qkeys, mut qdata, mut dim) = (Vec::new(), Vec::new(), 0);
    let mut s = catalog
        .scan(vectors, &["key", "clip"], Generations::All)
        .await?;
    while let Some(b) = s.try_next().await? {
        let keys = io::strings(&b, "key")?;
        let (flat, d) = io::vectors_flat(&b, "clip")?;
        dim = d;
        for (i, key) in keys.iter().enumerate() {
            let key = key.unwrap_or_default();
            if chosen(key, stride) && !collapsed.contains(key) {
                qkeys.push(key.to_string());
                qdata.extend_from_slice(&flat[i * d..(i + 1) * d]);
            }
        }
    }
    let queries = Array2::from_shape_vec((qkeys.len(), dim), qdata)
        .map_err(|e| crate::error::Error::Internal(format!("recall queries: {e}")))?;
    Ok((qkeys, queries))
}

/// Pass 2: every vector against the queries: the pairs above `clip_min` (brute force).
async fn exact_pairs(
    catalog: &Catalog,
    vectors: &TableDef,
    qkeys: &[String],
    queries: ArrayView2<'_, f32>,
    clip_min: f32,
    collapsed: &HashSet<String>,
) -> Result<HashSet<(String, String)>> {
    let mut exact: HashSet<(String, String)> = HashSet::new();
    let mut s = catalog
        .scan(vectors, &["key", "clip"], Generations::All)
        .await?;
    while let Some(b) = s.try_next().await? {
        let keys: Vec<String> = io::strings(&b, "key")?
            .iter()
            .map(|k| k.unwrap_or_default().to_string())
            .collect();
        let (flat, d) = io::vectors_flat(&b, "clip")?;
        let x = ArrayView2::from_shape((keys.len(), d), &flat)
            .map_err(|e| crate::error::Error::Internal(format!("recall batch: {e}")))?;
        let keep = |i: usize, j: usize| keys[i] != qkeys[j] && !collapsed.contains(&keys[i]);
        for (i, j, _) in join::threshold_join(x, queries, false, clip_min, &keep) {
            let (a, b) = (&keys[i as usize], &qkeys[j as usize]);
            exact.insert(if a < b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            });
        }
    }
    Ok(exact)
}
