//! The threshold join: every pair of rows of two blocks whose dot product is above a
//! threshold, by tiled matrix products (ndarray's GEMM, tiles in parallel on rayon). A tile's
//! products only nominate pairs, with a small allowance for rounding; each nominee is re-scored
//! with [`dot`], the plain f32 sum the brute-force method uses, so a pair's similarity and
//! whether it passes are the same whichever method found it.
//!
//! [`cell_pairs`] is one mining cell: exact duplicates collapsed, then home x home and
//! home x guest, each unordered pair emitted by exactly one cell.

use std::collections::HashMap;

use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;

/// Rows of the left block per tile (one task each).
const TILE_ROWS: usize = 256;
/// Columns of the right block per tile product.
const TILE_COLS: usize = 2048;
/// Products this far below the threshold are still re-scored (GEMM sums in another order).
const NOMINATE: f32 = 1e-3;

/// The dot product, summed in order: the one definition of a pair's CLIP similarity.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A pair found by the join: row `i` of the left block, row `j` of the right, similarity.
pub type Hit = (u32, u32, f32);

/// Every `(i, j)` with `dot(a[i], b[j]) > threshold` and `keep(i, j)`; with `upper` (a block
/// joined with itself) only `i < j`. Memory: one tile of products per thread.
pub fn threshold_join(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    upper: bool,
    threshold: f32,
    keep: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Vec<Hit> {
    let (n, m) = (a.nrows(), b.nrows());
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let nominate = threshold - NOMINATE;
    (0..n.div_ceil(TILE_ROWS))
        .into_par_iter()
        .flat_map_iter(|t| {
            let r0 = t * TILE_ROWS;
            let r1 = (r0 + TILE_ROWS).min(n);
            let rows = a.slice(ndarray::s![r0..r1, ..]);
            let mut out = Vec::new();
            let first_col = if upper { r0 + 1 } else { 0 };
            let mut c0 = first_col;
            while c0 < m {
                let c1 = (c0 + TILE_COLS).min(m);
                let cols = b.slice(ndarray::s![c0..c1, ..]);
                let products = rows.dot(&cols.t());
                for (di, prow) in products.axis_iter(Axis(0)).enumerate() {
                    let i = r0 + di;
                    for (dj, &p) in prow.iter().enumerate() {
                        let j = c0 + dj;
                        if p <= nominate || (upper && j <= i) || !keep(i, j) {
                            continue;
                        }
                        let ra = a.row(i);
                        let rb = b.row(j);
                        let sim = dot(
                            ra.as_slice().expect("standard layout"),
                            rb.as_slice().expect("standard layout"),
                        );
                        if sim > threshold {
                            out.push((i as u32, j as u32, sim));
                        }
                    }
                }
                c0 = c1;
            }
            out
        })
        .collect()
}

/// The members of one mining cell as read from the `cells` table: its home vectors and its
/// guests (vectors homed elsewhere that can pair with a home vector), with the partition
/// generation that added each.
#[derive(Debug, Default)]
pub struct Members {
    /// Keys.
    pub keys: Vec<String>,
    /// Content hashes (exact duplicates share one).
    pub hashes: Vec<String>,
    /// The partition generation that placed each member.
    pub generations: Vec<u64>,
    /// Home member (true) or guest.
    pub home: Vec<bool>,
    /// Each member's home cell.
    pub home_cell: Vec<u32>,
    /// For home members, the cells they are a guest of (empty for guests).
    pub guest_cells: Vec<Vec<u32>>,
    /// Vectors, flat, f32.
    pub data: Vec<f32>,
    /// Dimension.
    pub dim: usize,
}

impl Members {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes of vector data held.
    pub fn vector_bytes(&self) -> u64 {
        (self.data.len() * 4) as u64
    }
}

/// What one cell yields: pairs and collapsed duplicates, as member indices.
#[derive(Debug, Default)]
pub struct CellOutput {
    /// `(i, j, sim)` with `keys[i] < keys[j]`.
    pub pairs: Vec<Hit>,
    /// `(duplicate, kept)`: home members of the new generation byte-identical to `kept`.
    pub duplicates: Vec<(u32, u32)>,
    /// Vector products the join evaluated (each `dim` multiply-adds).
    pub products: u64,
}

/// The pairs one cell owns among `members`, counting only pairs with at least one member of
/// partition generation `new` (a full run places everything in one generation, so that is every
/// pair). Exact duplicates are collapsed first: of each content hash the member of the lowest
/// generation, then the smallest key, is kept. A pair of two home members belongs to this cell.
/// A home member `x` and a guest `y` (homed in cell `h`) meet here; they also meet in `h` when
/// `x` is a guest of `h`. Then the pair belongs to the home cell of the smaller key; otherwise
/// (possible only with `--probe`, where guest placements are capped) it belongs here. So each
/// unordered pair above the threshold that meets in any cell is emitted by exactly one.
pub fn cell_pairs(members: &Members, new: u64, threshold: f32) -> CellOutput {
    let n = members.len();
    let dim = members.dim;
    let mut kept_of: HashMap<&str, u32> = HashMap::new();
    for i in 0..n {
        let rank = |i: usize| (members.generations[i], members.keys[i].as_str());
        kept_of
            .entry(members.hashes[i].as_str())
            .and_modify(|k| {
                if rank(i) < rank(*k as usize) {
                    *k = i as u32
                }
            })
            .or_insert(i as u32);
    }
    let mut out = CellOutput::default();
    // Home and guest members kept, split into new and old.
    let (mut home_new, mut home_old, mut guest_new, mut guest_old) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let kept = kept_of[members.hashes[i].as_str()] as usize;
        let is_new = members.generations[i] == new;
        if kept != i {
            if members.home[i] && is_new {
                out.duplicates.push((i as u32, kept as u32));
            }
            continue;
        }
        match (members.home[i], is_new) {
            (true, true) => home_new.push(i),
            (true, false) => home_old.push(i),
            (false, true) => guest_new.push(i),
            (false, false) => guest_old.push(i),
        }
    }
    let all = ArrayView2::from_shape((n, dim), &members.data).expect("members are n x dim");
    let block = |rows: &[usize]| all.select(Axis(0), rows);
    let keys = &members.keys;
    let (hn, ho) = (block(&home_new), block(&home_old));
    let guests: Vec<usize> = guest_new.iter().chain(&guest_old).copied().collect();
    let (g_all, g_new) = (block(&guests), block(&guest_new));
    let mut emit = |left: &[usize], right: &[usize], hits: Vec<Hit>| {
        for (i, j, s) in hits {
            let (x, y) = (left[i as usize], right[j as usize]);
            let (a, b) = if keys[x] < keys[y] { (x, y) } else { (y, x) };
            out.pairs.push((a as u32, b as u32, s));
        }
    };
    // Home `x` x guest `y`: emitted here unless it is also met in y's home cell and y's key is
    // the smaller.
    fn owned_here<'a>(
        m: &'a Members,
        left: &'a [usize],
        right: &'a [usize],
    ) -> impl Fn(usize, usize) -> bool + Sync + 'a {
        move |i, j| {
            let (x, y) = (left[i], right[j]);
            m.keys[x] < m.keys[y] || !m.guest_cells[x].contains(&m.home_cell[y])
        }
    }
    let any = |_: usize, _: usize| true;
    let (nn, no, ng, gn) = (
        home_new.len(),
        home_old.len(),
        guests.len(),
        guest_new.len(),
    );
    out.products = (nn * (nn + 1) / 2 + nn * no + nn * ng + no * gn) as u64;
    // new home x new home, new home x old home.
    emit(
        &home_new,
        &home_new,
        threshold_join(hn.view(), hn.view(), true, threshold, &any),
    );
    emit(
        &home_new,
        &home_old,
        threshold_join(hn.view(), ho.view(), false, threshold, &any),
    );
    // new home x every guest, old home x new guests.
    emit(
        &home_new,
        &guests,
        threshold_join(
            hn.view(),
            g_all.view(),
            false,
            threshold,
            &owned_here(members, &home_new, &guests),
        ),
    );
    emit(
        &home_old,
        &guest_new,
        threshold_join(
            ho.view(),
            g_new.view(),
            false,
            threshold,
            &owned_here(members, &home_old, &guest_new),
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn the_tiled_join_finds_exactly_what_a_double_loop_finds() {
        let mut rng = crate::rng::Rng(5);
        // Rows in a few tight groups, so plenty of pairs pass 0.9; sizes cross tile borders.
        let (n, d) = (700, 16);
        let mut x = Array2::<f32>::zeros((n, d));
        for i in 0..n {
            let g = i % 37;
            for j in 0..d {
                x[[i, j]] = ((g * 7 + j) % 11) as f32 + (rng.normal() * 0.3) as f32;
            }
        }
        super::super::kmeans::normalize_rows(&mut x);
        let slices: Vec<&[f32]> = x
            .rows()
            .into_iter()
            .map(|r| r.to_slice().unwrap())
            .collect();
        let mut expect = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let s = dot(slices[i], slices[j]);
                if s > 0.9 {
                    expect.push((i as u32, j as u32, s));
                }
            }
        }
        let mut got = threshold_join(x.view(), x.view(), true, 0.9, &|_, _| true);
        got.sort_by_key(|h| (h.0, h.1));
        assert!(expect.len() > 1000, "{} pairs", expect.len());
        assert_eq!(got, expect);
    }

    #[test]
    fn a_cell_collapses_duplicates_and_owns_a_cross_pair_only_by_its_smaller_key() {
        // Cell 0: a and b pair (home, home); c duplicates a; g and 0 are guests from cell 1
        // pairing with a and b. a and b are guests of cell 1 too, except that b was capped
        // (--probe), so 0 meets b only here.
        let v = [1.0f32, 0.0];
        let w = [0.999f32, 0.0447];
        let members = Members {
            keys: ["a", "b", "c", "g", "0"].map(String::from).to_vec(),
            hashes: ["h1", "h2", "h1", "h3", "h4"].map(String::from).to_vec(),
            generations: vec![1; 5],
            home: vec![true, true, true, false, false],
            home_cell: vec![0, 0, 0, 1, 1],
            guest_cells: vec![vec![1], vec![], vec![1], vec![], vec![]],
            data: [v, w, v, v, w].concat(),
            dim: 2,
        };
        let out = cell_pairs(&members, 1, 0.95);
        let names: Vec<(&str, &str)> = out
            .pairs
            .iter()
            .map(|&(i, j, _)| {
                (
                    members.keys[i as usize].as_str(),
                    members.keys[j as usize].as_str(),
                )
            })
            .collect();
        // (a,b) home x home; (a,g), (b,g): smaller key at home here; (0,a) belongs to cell 1,
        // where a is a guest; (0,b) is met only here.
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, [("0", "b"), ("a", "b"), ("a", "g"), ("b", "g")]);
        assert_eq!(out.duplicates, [(2, 0)]);
        // Two new home members kept (c collapsed onto a): their upper triangle, 3 products,
        // and 2 x 2 against the two new guests.
        assert_eq!(out.products, 3 + 4);
    }
}
