//! The unique CLIP vectors of a run root: every committed `embeddings.clip` vector, streamed
//! through the catalog, with exact duplicates (same content hash) collapsed onto the smallest
//! key. What the index is built on and what exact search compares.

use std::collections::HashMap;

use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::table::{self, io, Catalog, Generations};

/// The unique CLIP vectors of a run root, exact duplicates collapsed: what both the index
/// and the exact search work on.
pub struct UniqueVectors {
    /// Keys, by label.
    pub keys: Vec<String>,
    /// Vectors, flat, by label.
    pub data: Vec<f32>,
    /// Dimension.
    pub dim: usize,
    /// `(key, duplicate_of, content_hash)` of every collapsed row.
    pub duplicates: Vec<(String, String, String)>,
    /// The embed units (shard ids) read.
    pub shards: Vec<String>,
    /// Rows read.
    pub rows: u64,
}

impl UniqueVectors {
    /// Number of unique vectors.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The vector of one label.
    pub fn vector(&self, label: usize) -> &[f32] {
        &self.data[label * self.dim..(label + 1) * self.dim]
    }
}

/// Reads every committed `embeddings.clip` vector, collapsing exact duplicates: of each
/// content hash, the row with the smallest key is kept. Labels follow shard-id order.
pub async fn unique_vectors(catalog: &Catalog) -> Result<UniqueVectors> {
    let commits = catalog
        .commits(&table::EMBEDDINGS, Generations::All)
        .await?;
    if commits.is_empty() {
        let url = &catalog.root().url;
        return Err(Error::Usage(format!(
            "{url} has no committed embeddings; run `blindspot embed INPUT --out {url}` first"
        )));
    }
    let mut seen: HashMap<[u8; 16], u64> = HashMap::new();
    let mut dup_labels: Vec<(String, usize, String)> = Vec::new();
    let mut out = UniqueVectors {
        keys: Vec::new(),
        data: Vec::new(),
        dim: 0,
        duplicates: Vec::new(),
        shards: Vec::new(),
        rows: 0,
    };
    for commit in &commits {
        out.shards.push(commit.unit.clone());
        let paths = commit
            .objects(&table::EMBEDDINGS)
            .into_iter()
            .map(|o| o.path)
            .collect();
        let mut batches = io::scan_objects(
            catalog.root(),
            paths,
            &["key", "content_hash", "clip"],
            io::SCAN_BATCH_ROWS,
        );
        while let Some(batch) = batches.try_next().await? {
            let keys = io::strings(&batch, "key")?;
            let hashes = io::strings(&batch, "content_hash")?;
            let (flat, dim) = io::vectors_flat(&batch, "clip")?;
            if out.dim != 0 && out.dim != dim {
                return Err(Error::table(
                    "embeddings",
                    format!(
                        "clip dimension changes from {} to {dim} in shard {}",
                        out.dim, commit.unit
                    ),
                ));
            }
            out.dim = dim;
            for (i, (key, hash)) in keys.iter().zip(hashes.iter()).enumerate() {
                let (key, hash) = (key.unwrap_or_default(), hash.unwrap_or_default());
                out.rows += 1;
                match seen.entry(hash_prefix(hash)) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        // The smallest key of a group is kept, whatever order rows came in.
                        let label = *first.get() as usize;
                        let mut dropped = key.to_string();
                        if dropped < out.keys[label] {
                            std::mem::swap(&mut dropped, &mut out.keys[label]);
                        }
                        dup_labels.push((dropped, label, hash.to_string()));
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(out.keys.len() as u64);
                        out.keys.push(key.to_string());
                        out.data.extend_from_slice(&flat[i * dim..(i + 1) * dim]);
                    }
                }
            }
        }
    }
    out.duplicates = dup_labels
        .into_iter()
        .map(|(k, label, h)| (k, out.keys[label].clone(), h))
        .collect();
    out.duplicates.sort();
    Ok(out)
}

/// A 128-bit digest of a content hash string, whatever its format (collisions are out of
/// reach at 128 bits, and the map stays small).
fn hash_prefix(content_hash: &str) -> [u8; 16] {
    let digest = blake3::hash(content_hash.as_bytes());
    digest.as_bytes()[..16].try_into().expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashes_differing_anywhere_stay_apart() {
        // Regression: only the first 16 bytes were compared, so zero-padded hashes collided.
        assert_ne!(
            hash_prefix(&format!("{:064x}", 1)),
            hash_prefix(&format!("{:064x}", 2))
        );
        assert_eq!(hash_prefix("abc"), hash_prefix("abc"));
    }
}
