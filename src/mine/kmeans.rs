//! Spherical k-means (Lloyd's iterations on the unit sphere): the centroids of the mining
//! cells. Scores are matrix products (ndarray's GEMM, `matrixmultiply`) of row chunks against
//! the centroids, chunks in parallel on rayon; a centroid is the normalised sum of its members.
//!
//! Written here rather than taken from a crate: the k-means crates either pin another ndarray
//! (kentro: 0.15), are Euclidean only (linfa-clustering) or need nightly Rust (kmeans); this is
//! about eighty lines over the GEMM we already link.

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::rng::Rng;

/// Rows scored against the centroids at once (memory: rows x cells floats per thread).
const CHUNK_ROWS: usize = 1024;
/// Iterations stop once fewer than this share of rows changed cell.
const SETTLED: f64 = 1e-3;

/// Scales each row to unit length (zero rows stay zero).
pub fn normalize_rows(m: &mut Array2<f32>) {
    for mut row in m.rows_mut() {
        let n = row.dot(&row).sqrt();
        if n > 0.0 {
            row.mapv_inplace(|v| v / n);
        }
    }
}

/// The scores of rows `x` against every centroid, chunk by chunk: `f(first_row, scores)` with
/// `scores` of shape (chunk rows, cells). Chunks run in parallel.
pub fn score_chunks<T: Send>(
    x: ArrayView2<f32>,
    centroids: ArrayView2<f32>,
    f: impl Fn(usize, Array2<f32>) -> T + Sync,
) -> Vec<T> {
    let rows = x.nrows();
    (0..rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| {
            let start = c * CHUNK_ROWS;
            let end = (start + CHUNK_ROWS).min(rows);
            let chunk = x.slice(ndarray::s![start..end, ..]);
            f(start, chunk.dot(&centroids.t()))
        })
        .collect()
}

/// For each row, its nearest centroid (largest dot product) and that score.
pub fn nearest(x: ArrayView2<f32>, centroids: ArrayView2<f32>) -> Vec<(u32, f32)> {
    score_chunks(x, centroids, |_, scores| {
        scores
            .rows()
            .into_iter()
            .map(|row| argmax(row.as_slice().expect("standard layout")))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The index and value of the largest entry (the first of equals).
pub fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (j, &s) in row.iter().enumerate() {
        if s > best.1 {
            best = (j as u32, s);
        }
    }
    best
}

/// Trained centroids.
#[derive(Clone, Debug)]
pub struct Trained {
    /// Unit centroids, one row per cell.
    pub centroids: Array2<f32>,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Mean cosine of the training rows to their nearest centroid.
    pub fit: f64,
}

/// Spherical k-means of the (unit) rows of `x` into `k` cells (at most one per row), seeded
/// with `k` distinct rows drawn with `seed`; at most `max_iter` iterations. A cell left empty
/// is re-seeded with the row that fits its own centroid worst.
pub fn train(x: ArrayView2<f32>, k: usize, max_iter: usize, seed: u64) -> Trained {
    let (m, d) = x.dim();
    let k = k.clamp(1, m.max(1));
    let mut rng = Rng(seed);
    let mut order: Vec<usize> = (0..m).collect();
    for i in 0..k.min(m) {
        let j = i + rng.below((m - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut centroids = Array2::<f32>::zeros((k, d));
    for (c, &row) in order.iter().take(k).enumerate() {
        centroids.row_mut(c).assign(&x.row(row));
    }
    normalize_rows(&mut centroids);
    let mut assigned: Vec<u32> = vec![u32::MAX; m];
    let mut iterations = 0;
    let mut fit = 0.0;
    while iterations < max_iter.max(1) {
        iterations += 1;
        let near = nearest(x, centroids.view());
        let changed = near
            .iter()
            .zip(&assigned)
            .filter(|((c, _), old)| c != *old)
            .count();
        fit = near.iter().map(|(_, s)| *s as f64).sum::<f64>() / m.max(1) as f64;
        assigned = near.iter().map(|(c, _)| *c).collect();
        let mut sums = Array2::<f32>::zeros((k, d));
        let mut counts = vec![0usize; k];
        for (i, &c) in assigned.iter().enumerate() {
            let mut row = sums.row_mut(c as usize);
            row += &x.row(i);
            counts[c as usize] += 1;
        }
        // Empty cells take the worst-fitting rows, so k cells stay k cells (sorted only when
        // some cell is empty).
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        if !empty.is_empty() {
            let mut worst: Vec<usize> = (0..m).collect();
            worst.sort_by(|&a, &b| near[a].1.total_cmp(&near[b].1));
            for (&c, row) in empty.iter().zip(worst) {
                sums.row_mut(c).assign(&x.row(row));
            }
        }
        normalize_rows(&mut sums);
        centroids = sums;
        if (changed as f64) < SETTLED * m as f64 {
            break;
        }
    }
    Trained {
        centroids,
        iterations,
        fit,
    }
}

/// Splits the rows of one oversized cell in two (2-means), returning the two centroids.
pub fn split(x: ArrayView2<f32>, seed: u64) -> Array2<f32> {
    train(x, 2, 10, seed).centroids
}

/// The rows of `x` listed in `rows`, as a new matrix.
pub fn gather(x: ArrayView2<f32>, rows: &[usize]) -> Array2<f32> {
    x.select(Axis(0), rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_clusters_get_one_centroid_each() {
        // Four tight clusters around the axes of R^8 (plus noise), 50 rows each.
        let mut rng = Rng(3);
        let mut x = Array2::<f32>::zeros((200, 8));
        for i in 0..200 {
            x[[i, i % 4]] = 1.0;
            for j in 0..8 {
                x[[i, j]] += (rng.normal() * 0.05) as f32;
            }
        }
        normalize_rows(&mut x);
        let t = train(x.view(), 4, 50, 11);
        assert!(t.fit > 0.95, "fit {}", t.fit);
        let near = nearest(x.view(), t.centroids.view());
        for c in 0..4 {
            let cells: std::collections::BTreeSet<u32> =
                (0..200).filter(|i| i % 4 == c).map(|i| near[i].0).collect();
            assert_eq!(cells.len(), 1, "cluster {c} spread over {cells:?}");
        }
        let norms: Vec<f32> = t.centroids.rows().into_iter().map(|r| r.dot(&r)).collect();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
        let halves = split(gather(x.view(), &[0, 1, 4, 5]).view(), 1);
        assert_eq!(halves.nrows(), 2);
    }
}
