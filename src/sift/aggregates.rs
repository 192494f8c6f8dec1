//! What a filter unit records besides its pairs, so that nothing after filter needs the
//! candidates again: the unit's candidates counted on a fixed (CLIP, DINOv2) grid
//! (`similarity_grid`), each image's lowest DINOv2 similarity per coarse CLIP bin
//! (`image_minima`, for the number of distinct images a threshold yields), and a spanning
//! forest of its near-duplicate candidates (`dup_edges`, for the `groups`).
//!
//! The grids are fixed so that units add up exactly. A CLIP bin `k` holds similarities in
//! `(k/1000, (k+1)/1000]` (coarse bins: hundredths), so "CLIP above c" for any c on the grid is
//! a sum over bins `k >= c*1000`; a DINOv2 bin `j` holds `[j/100, (j+1)/100)`, so "DINOv2 below d"
//! is a sum over bins `j < d*100`. Both comparisons are made in f64 against the same edges the
//! report's thresholds parse to, so the counts equal SQL's `clip_sim > c AND dino_sim < d`.

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float32Type};
use petgraph::unionfind::UnionFind;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::table::{self, schema, Catalog, DataObject, WriteParams};

/// Fine CLIP bins per unit of similarity.
pub const CLIP_STEPS: i32 = 1000;
/// Coarse CLIP bins per unit of similarity (image minima).
pub const COARSE_STEPS: i32 = 100;
/// DINOv2 bins per unit of similarity.
pub const DINO_STEPS: i32 = 100;

/// The edge `k / steps`, as a threshold written with that many decimals parses.
pub fn edge(k: i32, steps: i32) -> f64 {
    k as f64 / steps as f64
}

/// The bin `k` with `edge(k) < v <= edge(k + 1)` (for "above" thresholds).
pub fn bin_above(v: f32, steps: i32) -> i32 {
    let v = v as f64;
    let mut k = (v * steps as f64).ceil() as i32 - 1;
    while edge(k, steps) >= v {
        k -= 1;
    }
    while edge(k + 1, steps) < v {
        k += 1;
    }
    k
}

/// The bin `j` with `edge(j) <= v < edge(j + 1)` (for "below" thresholds).
pub fn bin_below(v: f32, steps: i32) -> i32 {
    let v = v as f64;
    let mut j = (v * steps as f64).floor() as i32;
    while edge(j, steps) > v {
        j -= 1;
    }
    while edge(j + 1, steps) <= v {
        j += 1;
    }
    j
}

/// The grid index of a threshold that must lie on the grid (`0.95` -> 950 at 1000 steps).
pub fn on_grid(t: f64, steps: i32) -> Option<i32> {
    let k = (t * steps as f64).round() as i32;
    (edge(k, steps) == t).then_some(k)
}

/// One filter unit's aggregates, accumulated from batches of `sql/similarities.sql`.
#[derive(Default)]
pub struct UnitAggregates {
    grid: HashMap<(i32, i32), i64>,
    /// Per key, (coarse CLIP bin, lowest DINOv2) for the few bins its candidates fall in.
    minima: HashMap<String, Vec<(i32, f32)>>,
    ids: HashMap<String, u32>,
    forest: Option<UnionFind<u32>>,
    edges: Vec<(u32, u32)>,
    /// Candidates with both vectors but no DINOv2 similarity (a zero vector).
    pub undefined: u64,
    /// Candidates counted.
    pub rows: u64,
}

/// What a unit's aggregates wrote, for its commit.
pub struct Written {
    /// The objects, by table.
    pub objects: Vec<(&'static table::TableDef, Vec<DataObject>)>,
    /// Near-duplicate edges kept (the spanning forest).
    pub dup_edges: u64,
}

impl UnitAggregates {
    /// Counts the rows of one batch (`a`, `b`, `clip_sim`, `dino_sim`); candidates with DINOv2
    /// similarity at or above `dup_min` become near-duplicate edges.
    pub fn take(&mut self, batch: &RecordBatch, dup_min: f32) -> Result<()> {
        let bad = |e: String| Error::table("similarities", e);
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("no column {name}")))?;
            arrow::compute::cast(c, to).map_err(|e| bad(e.to_string()))
        };
        let (a, b) = (column("a", &DataType::Utf8)?, column("b", &DataType::Utf8)?);
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        let clip = column("clip_sim", &DataType::Float32)?;
        let dino = column("dino_sim", &DataType::Float32)?;
        let (clip, dino) = (
            clip.as_primitive::<Float32Type>(),
            dino.as_primitive::<Float32Type>(),
        );
        for i in 0..batch.num_rows() {
            if a.is_null(i) || b.is_null(i) {
                continue;
            }
            let (a, b) = (a.value(i), b.value(i));
            self.rows += 1;
            if dino.is_null(i) || clip.is_null(i) {
                self.undefined += 1;
                continue;
            }
            let (c, d) = (clip.value(i), dino.value(i));
            *self
                .grid
                .entry((bin_above(c, CLIP_STEPS), bin_below(d, DINO_STEPS)))
                .or_default() += 1;
            let coarse = bin_above(c, COARSE_STEPS);
            for key in [a, b] {
                // Looked up by &str: a key's String is made once, not per candidate.
                let bins = match self.minima.get_mut(key) {
                    Some(bins) => bins,
                    None => self.minima.entry(key.to_string()).or_default(),
                };
                match bins.iter_mut().find(|(k, _)| *k == coarse) {
                    Some((_, m)) => *m = m.min(d),
                    None => bins.push((coarse, d)),
                }
            }
            if d >= dup_min {
                let forest = self.forest.get_or_insert_with(UnionFind::new_empty);
                let mut id = |k: &str| match self.ids.get(k) {
                    Some(i) => *i,
                    None => {
                        let i = forest.new_set();
                        self.ids.insert(k.to_string(), i);
                        i
                    }
                };
                let (x, y) = (id(a), id(b));
                if forest.union(x, y) {
                    self.edges.push((x, y));
                }
            }
        }
        Ok(())
    }

    /// Writes the unit's aggregates under `stem` (a table with no rows writes nothing unless
    /// `always`, so that the first unit gives every table its schema).
    pub async fn write(self, catalog: &Catalog, stem: &str, always: bool) -> Result<Written> {
        let mut objects = Vec::new();
        let mut grid: Vec<((i32, i32), i64)> = self.grid.into_iter().collect();
        grid.sort_unstable();
        let grid = RecordBatch::try_new(
            schema::grid(),
            vec![
                Arc::new(Int32Array::from_iter_values(grid.iter().map(|g| g.0 .0))),
                Arc::new(Int32Array::from_iter_values(grid.iter().map(|g| g.0 .1))),
                Arc::new(Int64Array::from_iter_values(grid.iter().map(|g| g.1))),
            ],
        )
        .map_err(|e| Error::table(table::GRID.name, e))?;
        let mut minima: Vec<((String, i32), f32)> = self
            .minima
            .into_iter()
            .flat_map(|(key, bins)| bins.into_iter().map(move |(k, m)| ((key.clone(), k), m)))
            .collect();
        minima.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        let minima = RecordBatch::try_new(
            schema::minima(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    minima.iter().map(|m| &m.0 .0),
                )),
                Arc::new(Int32Array::from_iter_values(minima.iter().map(|m| m.0 .1))),
                Arc::new(Float32Array::from_iter_values(minima.iter().map(|m| m.1))),
            ],
        )
        .map_err(|e| Error::table(table::MINIMA.name, e))?;
        let mut names = vec![""; self.ids.len()];
        for (k, i) in &self.ids {
            names[*i as usize] = k;
        }
        let mut edges: Vec<(&str, &str)> = self
            .edges
            .iter()
            .map(|(x, y)| {
                let (x, y) = (names[*x as usize], names[*y as usize]);
                if x < y {
                    (x, y)
                } else {
                    (y, x)
                }
            })
            .collect();
        edges.sort_unstable();
        let dup_edges = edges.len() as u64;
        let edges = RecordBatch::try_new(
            schema::dup_edges(),
            vec![
                Arc::new(StringArray::from_iter_values(edges.iter().map(|e| e.0))),
                Arc::new(StringArray::from_iter_values(edges.iter().map(|e| e.1))),
            ],
        )
        .map_err(|e| Error::table(table::DUP_EDGES.name, e))?;
        for (def, batch) in [
            (&table::GRID, grid),
            (&table::MINIMA, minima),
            (&table::DUP_EDGES, edges),
        ] {
            if batch.num_rows() == 0 && !always {
                continue;
            }
            let mut w = catalog.writer(def, stem, batch.schema(), WriteParams::default())?;
            w.write(&batch).await?;
            objects.push((def, w.finish().await?));
        }
        Ok(Written { objects, dup_edges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_agree_with_the_comparisons_they_stand_for() {
        let values = [
            0.95f32, 0.9500001, 0.94999, 1.0, -1.0, 0.0, 0.5, 0.6, 0.59999996, 0.123456, -0.3,
        ];
        for v in values {
            for steps in [CLIP_STEPS, COARSE_STEPS, DINO_STEPS] {
                for k in -steps..=steps {
                    let t = edge(k, steps);
                    assert_eq!(bin_above(v, steps) >= k, v as f64 > t, "{v} > {t}");
                    assert_eq!(bin_below(v, steps) < k, (v as f64) < t, "{v} < {t}");
                }
            }
        }
        assert_eq!(on_grid(0.95, CLIP_STEPS), Some(950));
        assert_eq!(on_grid(0.6, DINO_STEPS), Some(60));
        assert_eq!(on_grid(0.955, DINO_STEPS), None);
    }
}
