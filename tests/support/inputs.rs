//! The inputs users already have: img2dataset Parquet, URI manifests fetched over loopback
//! HTTP and from object stores, clip-retrieval embeddings, and DINOv2 only for candidates.

use super::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Mutex;

use arrow::array::{BinaryArray, Int64Array};
use arrow::datatypes::{Field, Schema};
use blindspot::ingest::fetch::{FetchParams, UriKind};
use blindspot::ingest::IngestParams;

/// Every image file of a synthetic folder corpus, sorted.
fn image_files(images: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(images)
        .into_iter()
        .filter(|p| blindspot::ingest::is_image_name(&p.to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// Writes `images` as img2dataset writes `--output_format parquet`: its columns, `key` as a
/// zero-padded number, every image in the `jpg` column whatever its format, and `failed` rows
/// (status not success, no image) after every fifth image. Returns (key, file) per success.
fn write_img2dataset_parquet(
    out: &Path,
    images: &[PathBuf],
    per_file: usize,
) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(out).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("jpg", DataType::Binary, true),
        Field::new("caption", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("error_message", DataType::Utf8, true),
        Field::new("width", DataType::Int64, true),
        Field::new("height", DataType::Int64, true),
    ]));
    let mut kept = Vec::new();
    let mut n = 0usize;
    for (f, chunk) in images.chunks(per_file).enumerate() {
        let mut rows: Vec<(String, Option<Vec<u8>>, String, &str)> = Vec::new();
        for (i, path) in chunk.iter().enumerate() {
            let key = format!("{f:05}{n:04}");
            n += 1;
            rows.push((
                key.clone(),
                Some(std::fs::read(path).unwrap()),
                format!("caption {key}"),
                "success",
            ));
            kept.push((key, path.clone()));
            if i % 5 == 4 {
                let key = format!("{f:05}{n:04}");
                n += 1;
                rows.push((key, None, String::new(), "failed_to_download"));
            }
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(BinaryArray::from_iter(rows.iter().map(|r| r.1.as_deref()))),
                Arc::new(StringArray::from_iter(
                    rows.iter()
                        .map(|r| (r.3 == "success").then_some(r.2.as_str())),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter()
                        .map(|r| format!("http://example.com/{}.jpg", r.0)),
                )),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(StringArray::from_iter(
                    rows.iter()
                        .map(|r| (r.3 != "success").then_some("HTTP Error 404")),
                )),
                Arc::new(Int64Array::from_iter(rows.iter().map(|_| None::<i64>))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|_| None::<i64>))),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(out.join(format!("{f:05}.parquet"))).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(7))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(out.join(format!("{f:05}_stats.json")), b"{\"count\": 1}").unwrap();
    }
    kept
}

/// Embeddings rows by key: (uri, content_hash, caption, url, clip).
type EmbeddedRow = (String, String, Option<String>, Option<String>, Vec<f32>);

fn embedded(root: &Path) -> BTreeMap<String, EmbeddedRow> {
    let mut out = BTreeMap::new();
    for b in read_parquet_dir(&root.join("embeddings")) {
        let opt = |name: &str| -> Vec<Option<String>> {
            col::<StringArray>(&b, name)
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        let clip = blindspot::table::io::vector_rows(&b, "clip").unwrap();
        let rows = strings(&b, "key")
            .into_iter()
            .zip(strings(&b, "uri"))
            .zip(strings(&b, "content_hash"))
            .zip(opt("caption"))
            .zip(opt("url"))
            .zip(clip);
        for (((((k, u), h), c), url), v) in rows {
            out.insert(k, (u, h, c, url, v));
        }
    }
    out
}

#[test]
fn img2dataset_parquet_embeds_every_success_once_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    run_ok(&["synth", "--out", corpus.to_str().unwrap()]);
    let images = image_files(&corpus.join("images"));
    let out = dir.path().join("img2dataset");
    let kept = write_img2dataset_parquet(&out, &images, 40);
    let pngs = kept
        .iter()
        .filter(|(_, p)| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert!(pngs > 0, "some PNGs ride in the jpg column");

    let root = dir.path().join("run");
    let json = run_ok(&[
        "embed",
        out.to_str().unwrap(),
        "--out",
        root.to_str().unwrap(),
        "--json",
    ]);
    let s: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let failed: usize = images.chunks(40).map(|c| c.len() / 5).sum();
    assert_eq!(s["images"], kept.len());
    assert_eq!(s["errors"], 0);
    assert_eq!(s["skipped_rows"], failed);
    assert_eq!(s["skipped_by_status"]["failed_to_download"], failed);

    // The same images embedded from the folder: the same vectors, found by content.
    let folder_root = dir.path().join("folder-run");
    run_ok(&[
        "embed",
        corpus.join("images").to_str().unwrap(),
        "--out",
        folder_root.to_str().unwrap(),
    ]);
    let by_hash: HashMap<String, Vec<f32>> = embedded(&folder_root)
        .into_values()
        .map(|(_, h, _, _, v)| (h, v))
        .collect();
    let got = embedded(&root);
    let keys: BTreeSet<&String> = got.keys().collect();
    let want: BTreeSet<&String> = kept.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, want, "img2dataset's keys, every success once");
    for (key, (uri, hash, caption, url, clip)) in &got {
        assert!(uri.contains(".parquet#row="), "{uri}");
        assert_eq!(caption.as_deref(), Some(format!("caption {key}").as_str()));
        assert_eq!(
            url.as_deref(),
            Some(format!("http://example.com/{key}.jpg").as_str())
        );
        let reference = &by_hash[hash];
        assert!(
            dot(clip, reference) > 0.99999,
            "{key}: not the folder's vector"
        );
    }

    // A webdataset corpus carries its sidecar captions into the table too.
    let tars = dir.path().join("tars");
    run_ok(&["synth", "--out", tars.to_str().unwrap(), "--format", "tar"]);
    let tar_root = dir.path().join("tar-run");
    run_ok(&[
        "embed",
        tars.join("images").to_str().unwrap(),
        "--out",
        tar_root.to_str().unwrap(),
    ]);
    let rows = embedded(&tar_root);
    assert!(!rows.is_empty());
    assert!(rows
        .values()
        .all(|r| r.2.as_deref().is_some_and(|c| !c.is_empty())));

    // CLIP only, then dino: the bytes are found again as Parquet rows and as tar members.
    for (name, input) in [("parquet", out.clone()), ("tar", tars.join("images"))] {
        let r = dir.path().join(format!("clip-only-{name}"));
        let r = r.to_str().unwrap();
        run_ok(&[
            "embed",
            input.to_str().unwrap(),
            "--out",
            r,
            "--encoders",
            "clip",
        ]);
        run_ok(&["partition", "--root", r]);
        run_ok(&["candidates", "--root", r]);
        let s: serde_json::Value =
            serde_json::from_str(run_ok(&["dino", "--root", r, "--json"]).trim()).unwrap();
        assert!(s["needed"].as_u64().unwrap() > 0, "{name}: {s}");
        assert_eq!(s["embedded"], s["needed"], "{name}: {s}");
        assert_eq!(s["errors"], 0, "{name}: {s}");
        run_ok(&["filter", "--root", r]);
        let n = sql_csv(r, "SELECT COUNT(*) FROM pairs");
        assert!(n[1].parse::<u64>().unwrap() > 0, "{name}: pairs were mined");
    }
}

#[test]
fn inputs_with_nothing_readable_stop_with_exit_2_and_say_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "caption",
        DataType::Utf8,
        true,
    )]));
    for i in 0..4 {
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["a"]))])
                .unwrap();
        let file = std::fs::File::create(tables.join(format!("{i:05}.parquet"))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let root = dir.path().join("run");
    let r = root.to_str().unwrap();
    let out = run(&["embed", tables.to_str().unwrap(), "--out", r]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 .parquet object(s)"), "{err}");
    assert!(err.contains("`jpg` column"), "{err}");
    assert!(err.contains("--image-column"), "{err}");
    assert!(err.contains("`uri` or `url`"), "{err}");
    let out = run(&[
        "embed",
        tables.to_str().unwrap(),
        "--out",
        r,
        "--input-format",
        "parquet",
    ]);
    assert_eq!(out.status.code(), Some(2));

    let texts = dir.path().join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    std::fs::write(texts.join("a.txt"), "x").unwrap();
    std::fs::write(texts.join("b.bin"), "x").unwrap();
    let out = run(&["embed", texts.to_str().unwrap(), "--out", r]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no shard blindspot can read"), "{err}");
    assert!(err.contains(".bin"), "{err}");
    assert!(!root.join("_commits").exists(), "nothing was written");
}

/// A loopback HTTP server for manifest fetches: `/ok/<file>` serves the file, `/missing` is
/// 404, `/flaky/<file>` is 500 on its first request then serves the file, `/slow/<file>`
/// waits 3 s first. Counts requests per path.
fn image_server(files: PathBuf) -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let log = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let n = {
                    let mut l = log.lock().unwrap();
                    let c = l.entry(path.clone()).or_default();
                    *c += 1;
                    *c
                };
                let file = |rest: &str| std::fs::read(files.join(rest)).ok();
                let (status, body) = if let Some(rest) = path.strip_prefix("/ok/") {
                    (200, file(rest))
                } else if let Some(rest) = path.strip_prefix("/flaky/") {
                    if n == 1 {
                        (500, None)
                    } else {
                        (200, file(rest))
                    }
                } else if let Some(rest) = path.strip_prefix("/slow/") {
                    std::thread::sleep(Duration::from_secs(3));
                    (200, file(rest))
                } else if path == "/huge" {
                    // Says 512 MiB, and would send them.
                    let head =
                        "HTTP/1.1 200 X\r\nContent-Length: 536870912\r\nConnection: close\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes());
                    let zeros = vec![0u8; 1 << 20];
                    for _ in 0..512 {
                        if stream.write_all(&zeros).is_err() {
                            break;
                        }
                    }
                    return;
                } else if path == "/endless" {
                    // No length: a body that ends when the connection does (64 MiB).
                    let head = "HTTP/1.1 200 X\r\nConnection: close\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes());
                    let zeros = vec![0u8; 1 << 20];
                    for _ in 0..64 {
                        if stream.write_all(&zeros).is_err() {
                            break;
                        }
                    }
                    return;
                } else if let Some(n) = path.strip_prefix("/loop/") {
                    let next = n.parse::<u32>().unwrap_or(0) + 1;
                    let head = format!(
                        "HTTP/1.1 302 X\r\nLocation: /loop/{next}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(head.as_bytes());
                    return;
                } else if path == "/to-file" {
                    let head = "HTTP/1.1 302 X\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes());
                    return;
                } else {
                    (404, None)
                };
                let body = body.unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// The synthetic corpus written under `dir/corpus`, and its image files.
async fn synth_corpus(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let corpus = dir.join("corpus");
    blindspot::synth::synth(
        &Location::open(corpus.to_str().unwrap()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let images = image_files(&corpus.join("images"));
    (corpus, images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_fetches_from_stores_and_http_and_failures_become_error_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, images) = synth_corpus(dir.path()).await;
    let rel = |p: &Path| {
        p.strip_prefix(corpus.join("images"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (base, hits) = image_server(corpus.join("images"));
    // One image in a memory store, one on disk, and the web ones.
    let mem = Location::open("memory://manifest-test/").unwrap();
    mem.put("img/one.png", std::fs::read(&images[0]).unwrap().into())
        .await
        .unwrap();
    let rows = [
        ("mem", "memory://manifest-test/img/one.png".to_string()),
        ("disk", format!("file://{}", images[1].display())),
        ("ok", format!("{base}/ok/{}", rel(&images[2]))),
        ("missing", format!("{base}/missing")),
        ("flaky", format!("{base}/flaky/{}", rel(&images[3]))),
        ("slow", format!("{base}/slow/{}", rel(&images[4]))),
        ("relative", format!("../corpus/images/{}", rel(&images[5]))),
    ];
    let mut csv = String::from("key,url,caption\n");
    for (k, u) in &rows {
        csv.push_str(&format!("{k},{u},the {k} one\n"));
    }
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("list.csv"), csv).unwrap();

    let root = Location::open("memory://manifest-test/run").unwrap();
    let (clip, dino) = load_tiny();
    let params = EmbedParams {
        ingest: IngestParams {
            rows_per_shard: Some(4),
            fetch: FetchParams {
                timeout: Duration::from_secs(1),
                retries: 1,
                backoff: Duration::from_millis(50),
                // Files outside the manifest's folder, another store, a loopback server.
                allow: vec![UriKind::Outside, UriKind::Store],
                allow_private: true,
                ..FetchParams::default()
            },
            ..IngestParams::default()
        },
        ..EmbedParams::default()
    };
    let input = Location::open(manifests.to_str().unwrap()).unwrap();
    let s = embed::embed(
        &input,
        &root,
        clip,
        Some(dino),
        &params,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(s.shards, 2, "7 rows at 4 rows per shard");
    assert_eq!(s.images, 5, "{s:?}");
    assert_eq!(s.errors_by_kind.get("http_404"), Some(&1), "{s:?}");
    assert_eq!(s.errors_by_kind.get("timeout"), Some(&1), "{s:?}");
    assert_eq!(s.errors, 2);
    let flaky = format!("/flaky/{}", rel(&images[3]));
    assert_eq!(hits.lock().unwrap()[&flaky], 2, "500 then retried to 200");

    let v = embed::read_vectors(&root).await.unwrap();
    let keys: BTreeSet<&str> = v.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["disk", "flaky", "mem", "ok", "relative"])
    );
    // A rerun finds both parts committed and fetches nothing.
    let before: usize = hits.lock().unwrap().values().sum();
    let (clip, dino) = load_tiny();
    let again = embed::embed(
        &input,
        &root,
        clip,
        Some(dino),
        &params,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!((again.skipped, again.images), (2, 0));
    assert_eq!(hits.lock().unwrap().values().sum::<usize>(), before);
}

/// The `errors` rows of `root`: (key, kind, message), sorted.
async fn error_rows(root: &Location) -> Vec<(String, String, String)> {
    use futures::TryStreamExt;
    let batches: Vec<_> = blindspot::table::Catalog::new(root)
        .scan(
            &blindspot::table::ERRORS,
            &["key", "kind", "message"],
            blindspot::table::Generations::All,
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let column = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        let (k, kind, m) = (column("key"), column("kind"), column("message"));
        for i in 0..b.num_rows() {
            rows.push((k[i].clone(), kind[i].clone(), m[i].clone()));
        }
    }
    rows.sort();
    rows
}

/// Issue 20: a manifest from the web names local files, `..` escapes, another store, a
/// `javascript:` URI and loopback servers; by default each is an error row that says which
/// rule refused it, nothing of them is read, and only the image under the manifest's folder is
/// embedded. With private addresses allowed, a 512 MiB body, an endless body, a redirect loop
/// and a redirect to a file are refused before they cost anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_policy_blocks_what_a_manifest_may_not_name_and_bounds_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, images) = synth_corpus(dir.path()).await;
    let (base, hits) = image_server(corpus.join("images"));
    let port = base.rsplit(':').next().unwrap().to_string();
    let name = images[2]
        .strip_prefix(corpus.join("images"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(manifests.join("imgs")).unwrap();
    std::fs::copy(&images[0], manifests.join("imgs/inside.png")).unwrap();
    let write = |rows: &[(&str, String)]| {
        let mut csv = String::from("key,url\n");
        for (k, u) in rows {
            csv.push_str(&format!("{k},{u}\n"));
        }
        std::fs::write(manifests.join("list.csv"), csv).unwrap();
    };
    write(&[
        ("inside", "imgs/inside.png".to_string()),
        ("passwd", "file:///etc/passwd".to_string()),
        ("absolute", images[1].display().to_string()),
        ("escape", "../corpus/images/x.png".to_string()),
        ("script", "javascript:alert(1)".to_string()),
        ("store", "memory://elsewhere/x.png".to_string()),
        ("loopback", format!("{base}/ok/{name}")),
        ("localhost", format!("http://localhost:{port}/ok/{name}")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
    ]);
    let input = Location::open(manifests.to_str().unwrap()).unwrap();
    let embed_with = |fetch: FetchParams, root: Location| {
        let input = input.clone();
        async move {
            let (clip, dino) = load_tiny();
            let params = EmbedParams {
                ingest: IngestParams {
                    // The folder holds an image too: read the manifest only.
                    format: blindspot::ingest::InputFormat::Manifest,
                    fetch,
                    ..IngestParams::default()
                },
                ..EmbedParams::default()
            };
            let s = embed::embed(
                &input,
                &root,
                clip,
                Some(dino),
                &params,
                Arc::new(NoProgress),
            )
            .await
            .unwrap();
            (s, error_rows(&root).await)
        }
    };
    let quick = FetchParams {
        timeout: Duration::from_secs(5),
        retries: 0,
        ..FetchParams::default()
    };
    let root = Location::open("memory://fetch-policy/default").unwrap();
    let (s, errors) = embed_with(quick.clone(), root.clone()).await;
    assert_eq!(s.images, 1, "{s:?}");
    let v = embed::read_vectors(&root).await.unwrap();
    assert_eq!(v.keys().collect::<Vec<_>>(), ["inside"]);
    let kinds: BTreeMap<&str, &str> = errors
        .iter()
        .map(|(k, kind, _)| (k.as_str(), kind.as_str()))
        .collect();
    for key in ["passwd", "absolute", "escape", "script", "store"] {
        assert_eq!(kinds.get(key), Some(&"blocked_uri"), "{key}: {errors:?}");
    }
    for key in ["loopback", "localhost", "metadata"] {
        assert_eq!(
            kinds.get(key),
            Some(&"blocked_address"),
            "{key}: {errors:?}"
        );
    }
    // Each message names the rule to relax, and none carries a byte of what was refused.
    let message = |key: &str| &errors.iter().find(|e| e.0 == key).unwrap().2;
    assert!(
        message("passwd").contains("--allow-uri outside"),
        "{errors:?}"
    );
    assert!(message("store").contains("--allow-uri store"), "{errors:?}");
    assert!(
        message("loopback").contains("--allow-private"),
        "{errors:?}"
    );
    for (_, _, m) in &errors {
        assert!(!m.contains("root:") && !m.contains("726f6f74"), "{m}");
    }
    assert!(
        hits.lock().unwrap().is_empty(),
        "the server was never asked"
    );

    // Loopback allowed: bodies are bounded, redirects too.
    write(&[
        ("huge", format!("{base}/huge")),
        ("endless", format!("{base}/endless")),
        ("loop", format!("{base}/loop/0")),
        ("to-file", format!("{base}/to-file")),
        ("ok", format!("{base}/ok/{name}")),
    ]);
    let open = FetchParams {
        allow_private: true,
        max_bytes: 1 << 20,
        ..quick
    };
    let root = Location::open("memory://fetch-policy/private").unwrap();
    let (s, errors) = embed_with(open, root.clone()).await;
    assert_eq!(s.images, 1, "{s:?} {errors:?}");
    let kinds: BTreeMap<&str, &str> = errors
        .iter()
        .map(|(k, kind, _)| (k.as_str(), kind.as_str()))
        .collect();
    assert_eq!(kinds.get("huge"), Some(&"too_large"), "{errors:?}");
    assert_eq!(kinds.get("endless"), Some(&"too_large"), "{errors:?}");
    assert_eq!(kinds.get("loop"), Some(&"too_many_redirects"), "{errors:?}");
    assert_eq!(kinds.get("to-file"), Some(&"blocked_uri"), "{errors:?}");
    let loops = hits
        .lock()
        .unwrap()
        .keys()
        .filter(|p| p.starts_with("/loop/"))
        .count();
    assert_eq!(loops, 6, "the first request and five redirects");
}

/// Writes `root`'s CLIP vectors in clip-retrieval's layout under `out`: two parts, the first
/// float16 and the second float32, metadata with image_path, caption and key.
fn export_clip_retrieval(root: &Path, out: &Path) {
    let script = r#"
import sys, os, numpy as np, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
root, out = sys.argv[1], sys.argv[2]
t = ds.dataset(root + "/embeddings", format="parquet").to_table().sort_by("key")
os.makedirs(out + "/img_emb", exist_ok=True)
os.makedirs(out + "/metadata", exist_ok=True)
half = t.num_rows // 3
for n, (lo, hi, dtype) in enumerate([(0, half, np.float16), (half, t.num_rows, np.float32)]):
    part = t.slice(lo, hi - lo)
    clip = np.array(part.column("clip").to_pylist(), dtype=np.float32).astype(dtype)
    np.save(f"{out}/img_emb/img_emb_{n}.npy", clip)
    paths = [u[len("file://"):] for u in part.column("uri").to_pylist()]
    meta = pa.table({"image_path": paths, "caption": ["c " + k for k in part.column("key").to_pylist()],
                     "key": part.column("key")})
    pq.write_table(meta, f"{out}/metadata/metadata_{n}.parquet")
"#;
    let status = Command::new(python())
        .args(["-c", script, root.to_str().unwrap(), out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn pairs_of(root: &Path) -> Vec<(String, String, f32, f32)> {
    let mut out: Vec<(String, String, f32, f32)> = read_parquet_dir(&root.join("pairs"))
        .iter()
        .flat_map(|b| {
            let a = strings(b, "a");
            let bb = strings(b, "b");
            let c = col::<Float32Array>(b, "clip_sim").values().to_vec();
            let d = col::<Float32Array>(b, "dino_sim").values().to_vec();
            a.into_iter()
                .zip(bb)
                .zip(c.into_iter().zip(d))
                .map(|((a, b), (c, d))| (a, b, c, d))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    out
}

fn mine_root(root: &str) {
    run_ok(&["partition", "--root", root]);
    run_ok(&["candidates", "--root", root]);
}

#[test]
fn clip_first_then_dino_and_imported_clip_retrieval_give_the_pairs_of_a_full_embed() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    run_ok(&["synth", "--out", corpus.to_str().unwrap()]);
    let images = corpus.join("images");
    let images = images.to_str().unwrap();

    // Both encoders on everything.
    let full = dir.path().join("full");
    let f = full.to_str().unwrap();
    run_ok(&["embed", images, "--out", f]);
    mine_root(f);
    run_ok(&["filter", "--root", f]);
    let want = pairs_of(&full);
    assert!(want.len() >= 3, "the corpus has blind pairs");

    // CLIP first; filter refuses until dino has run; then the very same pairs.
    let first = dir.path().join("clip-first");
    let c = first.to_str().unwrap();
    run_ok(&["embed", images, "--out", c, "--encoders", "clip"]);
    mine_root(c);
    let out = run(&["filter", "--root", c]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blindspot dino"));
    // The key queries in 4 MiB: they spill to disk rather than hold the keys.
    let s: serde_json::Value = serde_json::from_str(
        run_ok(&["dino", "--root", c, "--json", "--key-memory-mib", "4"]).trim(),
    )
    .unwrap();
    let images_n = s["images"].as_u64().unwrap();
    let needed = s["needed"].as_u64().unwrap();
    assert_eq!(s["candidate_images"].as_u64().unwrap(), needed);
    assert!(needed > 0 && needed < images_n, "{s}");
    assert_eq!(s["embedded"].as_u64().unwrap(), needed);
    assert!((s["share"].as_f64().unwrap() - needed as f64 / images_n as f64).abs() < 1e-9);
    run_ok(&["filter", "--root", c]);
    assert_eq!(
        pairs_of(&first),
        want,
        "CLIP-then-DINO equals both-on-everything"
    );
    let again: serde_json::Value =
        serde_json::from_str(run_ok(&["dino", "--root", c, "--json"]).trim()).unwrap();
    assert_eq!(again["up_to_date"], true);

    // A dino run killed after its first shard commit: the rerun does the rest, once each.
    let commits = first.join("_commits/dino");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&commits)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let shard_commits: Vec<&PathBuf> = names
        .iter()
        .filter(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy();
            !blindspot::table::records::UnitId::is_dino_closing(&stem)
        })
        .collect();
    assert!(shard_commits.len() >= 2, "{names:?}");
    for p in names.iter().filter(|p| *p != shard_commits[0]) {
        std::fs::remove_file(p).unwrap();
    }
    let resumed: serde_json::Value =
        serde_json::from_str(run_ok(&["dino", "--root", c, "--json"]).trim()).unwrap();
    let kept = resumed["already"].as_u64().unwrap();
    assert!(kept > 0 && kept < needed, "{resumed}");
    assert_eq!(resumed["embedded"].as_u64().unwrap(), needed - kept);
    let counts = sql_csv(
        c,
        "SELECT COUNT(*) AS n, COUNT(DISTINCT key) AS d FROM dino",
    );
    assert_eq!(counts[1], format!("{needed},{needed}"), "no key twice");
    std::fs::remove_dir_all(first.join("_commits/filter")).unwrap();
    std::fs::remove_dir_all(first.join("pairs")).unwrap();
    run_ok(&["filter", "--root", c]);
    assert_eq!(pairs_of(&first), want);

    // clip-retrieval's layout (f16 and f32 parts) imported, then the same mining.
    let cr = dir.path().join("clip-retrieval");
    export_clip_retrieval(&full, &cr);
    let imported = dir.path().join("imported");
    let i = imported.to_str().unwrap();
    let s: serde_json::Value = serde_json::from_str(
        run_ok(&[
            "import",
            "clip-retrieval",
            cr.to_str().unwrap(),
            "--out",
            i,
            "--clip-id",
            "clip-tiny",
            "--dtype",
            "f32",
            // Its image paths are absolute local paths, outside the folder.
            "--allow-uri",
            "outside",
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(s["committed"], 2);
    assert_eq!(s["vectors"].as_u64().unwrap(), images_n);
    assert_eq!(s["blocked_paths"], 0);
    // Without it the fetch policy refuses the paths: the vectors come in, the paths do not.
    let refused = dir.path().join("refused");
    let r: serde_json::Value = serde_json::from_str(
        run_ok(&[
            "import",
            "clip-retrieval",
            cr.to_str().unwrap(),
            "--out",
            refused.to_str().unwrap(),
            "--clip-id",
            "clip-tiny",
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(r["vectors"].as_u64().unwrap(), images_n);
    assert_eq!(r["blocked_paths"].as_u64().unwrap(), images_n);
    let own = sql_csv(
        refused.to_str().unwrap(),
        "SELECT COUNT(*) FROM embeddings WHERE uri LIKE '%img_emb_%.npy#row=%'",
    );
    assert_eq!(own[1], images_n.to_string());
    mine_root(i);
    run_ok(&["dino", "--root", i]);
    run_ok(&["filter", "--root", i]);
    let got = pairs_of(&imported);
    let keys = |v: &[(String, String, f32, f32)]| -> Vec<(String, String)> {
        v.iter().map(|p| (p.0.clone(), p.1.clone())).collect()
    };
    assert_eq!(keys(&got), keys(&want));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.3, w.3, "the same DINOv2 similarity");
        assert!(
            (g.2 - w.2).abs() < 5e-3,
            "CLIP similarity within f16 rounding"
        );
    }
    let captions = sql_csv(
        i,
        "SELECT COUNT(*) FROM embeddings WHERE caption LIKE 'c %'",
    );
    assert_eq!(captions[1], images_n.to_string());

    // A metadata file that does not match its vectors is named, with the vectors.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(bad.join("img_emb")).unwrap();
    std::fs::create_dir_all(bad.join("metadata")).unwrap();
    std::fs::copy(
        cr.join("img_emb/img_emb_1.npy"),
        bad.join("img_emb/img_emb_0.npy"),
    )
    .unwrap();
    std::fs::copy(
        cr.join("metadata/metadata_0.parquet"),
        bad.join("metadata/metadata_0.parquet"),
    )
    .unwrap();
    let b = dir.path().join("bad-run");
    let out = run(&[
        "import",
        "clip-retrieval",
        bad.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--clip-id",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("img_emb_0.npy") && err.contains("metadata_0.parquet"),
        "{err}"
    );
}
