//! An image's bytes found again by its `uri`, as the ingest stage recorded it: an object or URL,
//! a webdataset member (`<tar>#<member>`) or an img2dataset Parquet row (`<object>#row=<n>`).
//! Used by every stage that goes back to the images after embedding (`dino`, the report's
//! thumbnails, `annotate`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use super::fetch::{FetchError, Fetcher};
use super::{parquet, tar_members};

/// Where an image's bytes are.
enum Source {
    /// A whole object or URL.
    Object,
    /// A member of a webdataset tar.
    Member(String, String),
    /// A row of an img2dataset Parquet object.
    Row(String, u64),
}

fn source_of(uri: &str) -> Source {
    if let Some((object, row)) = parquet::row_reference(uri) {
        return Source::Row(object.to_string(), row);
    }
    if let Some((tar, member)) = uri.split_once(".tar#") {
        return Source::Member(format!("{tar}.tar"), member.to_string());
    }
    Source::Object
}

/// What a fetch hands back: the payload it was given and the bytes, or why there are none.
pub type Fetched<T> = (T, Result<Bytes, FetchError>);

/// Fetches the bytes of every `(uri, payload)`, grouped by source: a tar is streamed once for
/// all its wanted members, a Parquet object read once with a row selection for all its rows,
/// other objects and URLs `concurrency` at a time. Results come in no particular order; the
/// function returns early when the receiver is dropped.
pub async fn fetch_uris<T: Send + 'static>(
    fetcher: Arc<Fetcher>,
    wants: Vec<(String, T)>,
    image_column: Option<String>,
    tx: mpsc::Sender<Fetched<T>>,
) {
    let mut objects = Vec::new();
    let mut tars: BTreeMap<String, Vec<(String, T)>> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<(u64, T)>> = BTreeMap::new();
    for (uri, w) in wants {
        match source_of(&uri) {
            Source::Object => objects.push((uri, w)),
            Source::Member(tar, m) => tars.entry(tar).or_default().push((m, w)),
            Source::Row(object, n) => rows.entry(object).or_default().push((n, w)),
        }
    }
    let fail = FetchError::permanent;
    for (object, wanted) in rows {
        let got = match fetcher.store_of(&object) {
            Ok((loc, path)) => match loc.store.head(&path).await {
                Ok(meta) => {
                    let ns: Vec<u64> = wanted.iter().map(|(n, _)| *n).collect();
                    parquet::fetch_rows(&loc.store, &meta, image_column.as_deref(), &ns)
                        .await
                        .map_err(|e| fail("read", e.to_string()))
                }
                Err(e) => Err(fail("not_found", e.to_string())),
            },
            Err(e) => Err(e),
        };
        for (n, w) in wanted {
            let r = match &got {
                Ok(map) => map
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| fail("no_image", format!("row {n} of {object} has no image"))),
                Err(e) => Err(e.clone()),
            };
            if tx.send((w, r)).await.is_err() {
                return;
            }
        }
    }
    for (tar, wanted) in tars {
        let mut by_member: HashMap<String, T> = wanted.into_iter().collect();
        let names: HashSet<String> = by_member.keys().cloned().collect();
        let (mtx, mut mrx) = mpsc::channel::<(String, Bytes)>(8);
        let reading = {
            let fetcher = fetcher.clone();
            let tar = tar.clone();
            tokio::spawn(async move { tar_members(&fetcher, &tar, names, mtx).await })
        };
        while let Some((member, bytes)) = mrx.recv().await {
            if let Some(w) = by_member.remove(&member) {
                if tx.send((w, Ok(bytes))).await.is_err() {
                    return;
                }
            }
        }
        let why = match reading.await {
            Ok(Ok(())) => fail("not_found", format!("no member of that name in {tar}")),
            Ok(Err(e)) => e,
            Err(e) => fail("read", e.to_string()),
        };
        for (_, w) in by_member {
            if tx.send((w, Err(why.clone()))).await.is_err() {
                return;
            }
        }
    }
    let concurrency = fetcher.params().concurrency.max(1);
    let fetches = futures::stream::iter(objects)
        .map(|(uri, w)| {
            let fetcher = fetcher.clone();
            async move {
                let r = fetcher.get(&uri).await;
                (w, r)
            }
        })
        .buffered(concurrency);
    tokio::pin!(fetches);
    while let Some(item) = fetches.next().await {
        if tx.send(item).await.is_err() {
            return;
        }
    }
}
