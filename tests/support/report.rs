//! The report in a real browser: Debian's chromium, headless, driven by playwright-core
//! (`tests/browser/report.mjs`, installed by `scripts/setup-browser.sh`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{bin, repo, run, run_ok, sql_csv};

/// Drives the report at `site` and returns what the browser saw.
pub(super) fn browse(site: &Path, artefacts: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(repo().join("tests/browser/report.mjs"))
        .arg(site)
        .arg(artefacts)
        .args(args)
        .output()
        .expect("node runs (scripts/setup-browser.sh installs the browser tests' tools)");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the driver prints one JSON object")
}

pub(super) fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A threshold halfway between two neighbouring DINOv2 similarities of the table, far from
/// both, so rounding in the page's index cannot move a pair across it.
fn threshold_between(dinos: &[f64]) -> f64 {
    let mut v = dinos.to_vec();
    v.sort_by(f64::total_cmp);
    let k = v.len() / 3;
    for w in v[k..].windows(2) {
        if w[1] - w[0] > 2e-3 {
            return (w[0] + w[1]) / 2.0;
        }
    }
    panic!("no gap between DINOv2 similarities: {v:?}");
}

fn sheet_rows(dir: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(dir.join("Questions.csv")).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn the_report_renders_in_chromium_and_review_decisions_become_the_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&["demo", "--out", dir.path().to_str().unwrap()]);
    let site = dir.path().join("report");
    let index = format!("file://{}/index.html", site.display());
    assert!(out.contains(&format!("open {index}")), "{out}");
    let root = dir.path().join("run");
    let root_s = root.to_str().unwrap();

    let dinos: Vec<f64> = sql_csv(root_s, "SELECT dino_sim FROM pairs")
        .iter()
        .skip(1)
        .map(|l| l.parse().unwrap())
        .collect();
    let x = threshold_between(&dinos);
    let below = dinos.iter().filter(|d| **d <= x).count() as u64;
    let art = artefacts();
    // Small chunks and pages, so that paging crosses chunks; thumbnails for 10 pairs only.
    let site = dir.path().join("report-small");
    let said = run_ok(&[
        "report",
        "--root",
        root_s,
        "--out",
        site.to_str().unwrap(),
        "--chunk",
        "4",
        "--thumbnails",
        "10",
    ]);
    assert!(said.contains("14 of 14 gallery rows in 4 chunks"), "{said}");
    yield_equals_sql(root_s, &site.join("thresholds.html"));
    assert!(said.contains("thumbnails 20 made"), "{said}");
    let seen = browse(
        &site,
        &art,
        &[
            "--page-size",
            "12",
            "--dino-max",
            &format!("{x:.6}"),
            "--review",
        ],
    );
    assert_eq!(seen["pages"], 2, "{seen}");
    // The 4 pairs beyond --thumbnails show why their 8 images have no picture.
    assert_eq!(seen["placeholders"], 8, "{seen}");
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    // As many cards, across pages, as the pairs table has rows.
    assert_eq!(seen["total_cards"], dinos.len() as u64, "{seen}");
    assert_eq!(seen["count_initial"], dinos.len() as u64);
    // The filter's count, as computed from the table.
    assert_eq!(seen["filtered_count"], below, "{seen}");
    assert!(below > 0 && below < dinos.len() as u64);
    // Keyboard review: two accepted (Color; Orientation with a note), one rejected; kept
    // across a reload; the decision and pattern filters count them.
    assert_eq!(seen["decided_text"], "2 accepted, 1 rejected");
    assert_eq!(seen["decided_after_reload"], "2 accepted, 1 rejected");
    assert_eq!(seen["accepted_count"], 2);
    assert_eq!(seen["color_count"], 1);
    for page in ["thresholds.html", "evaluation.html"] {
        let p = &seen[page];
        assert!(p["charts"].as_u64().unwrap() > 0, "{page}: {p}");
        assert_eq!(
            p["charts"], p["charts_loaded"],
            "{page}: a chart did not load"
        );
    }
    let eval_text = seen["evaluation.html"]["text"].as_str().unwrap();
    assert!(
        eval_text.contains("percentile bootstrap over pairs"),
        "{eval_text}"
    );
    assert!(eval_text.contains("clip-tiny+clip-tiny-text"));
    let thr_text = seen["thresholds.html"]["text"].as_str().unwrap();
    assert!(thr_text.contains("connected components"), "{thr_text}");
    let shot = image::open(art.join("gallery.png")).expect("a gallery screenshot");
    assert_eq!((shot.width(), shot.height()), (1400, 1000));
    eprintln!("gallery screenshot: {}", art.join("gallery.png").display());

    // The exported decisions feed annotate: exactly the accepted pairs, with their patterns.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("decisions.json")).unwrap())
            .unwrap();
    let decisions = json["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    let accepted: BTreeSet<(String, String, String)> = decisions
        .iter()
        .filter(|d| d["decision"] == "accept")
        .map(|d| {
            (
                d["a"].as_str().unwrap().to_string(),
                d["b"].as_str().unwrap().to_string(),
                d["pattern"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(accepted.len(), 2);
    let csv = std::fs::read_to_string(art.join("decisions.csv")).unwrap();
    assert!(
        csv.contains("\"'=tilted, check\"") && !csv.contains(",=tilted"),
        "{csv}"
    );
    for file in ["decisions.json", "decisions.csv"] {
        let sheet = dir.path().join(format!("sheet-{file}"));
        let said = run_ok(&[
            "annotate",
            "--root",
            root_s,
            "--out",
            sheet.to_str().unwrap(),
            "--decisions",
            art.join(file).to_str().unwrap(),
        ]);
        assert!(said.contains("annotate: 2 pairs"), "{said}");
        let rows = sheet_rows(&sheet);
        assert_eq!(rows.len(), 4, "{rows:?}");
        let got: BTreeSet<(String, String, String)> = rows
            .chunks(2)
            .map(|p| (p[0][5].clone(), p[1][5].clone(), p[0][4].clone()))
            .collect();
        assert_eq!(got, accepted, "{file}");
        let notes: BTreeSet<&str> = rows.iter().map(|r| r[7].as_str()).collect();
        // The note begins with `=`: the CSV export neutralised it for spreadsheets, the import
        // took the apostrophe off again, and the sheet (opened in spreadsheets too) puts it
        // back, once.
        assert!(notes.contains("'=tilted, check"), "{rows:?}");
        assert_eq!(
            std::fs::read_dir(sheet.join("MMVP Images"))
                .unwrap()
                .count(),
            4
        );
    }
    // Imported into the demo's own report (another build, a fresh browser, with the demo's
    // drafts on its cards), by keys.
    for file in ["decisions.json", "decisions.csv"] {
        let back = browse(
            &dir.path().join("report"),
            &art.join("import"),
            &["--import", art.join(file).to_str().unwrap()],
        );
        assert_eq!(back["page_errors"], serde_json::json!([]), "{back}");
        assert_eq!(
            back["imported_text"], "2 accepted, 1 rejected, 0 drafts reviewed (imported 3)",
            "{file}: {back}"
        );
    }
    // Decisions from another run are refused, naming the pair.
    let foreign = dir.path().join("foreign.csv");
    std::fs::write(
        &foreign,
        "a,b,decision,pattern,note\nno/such,pair,accept,Color,\n",
    )
    .unwrap();
    let refused = run(&[
        "annotate",
        "--root",
        root_s,
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--decisions",
        foreign.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no/such / pair") && err.contains("another run root"),
        "{err}"
    );

    // The scores table carries the intervals the page shows (the encoder's evaluation: the
    // demo's drafted benchmark adds MLLM runs, one of which is 0 with no width).
    let csv = sql_csv(
        root_s,
        "SELECT pattern, pair_accuracy, pair_accuracy_low, pair_accuracy_high FROM scores WHERE pattern = 'all' AND kind = 'vlm'",
    );
    let f: Vec<f64> = csv[1]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(f[1] <= f[0] && f[0] <= f[2] && f[1] < f[2], "{csv:?}");
}

#[test]
fn report_serves_its_site_on_loopback_and_refuses_an_empty_root() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = run(&[
        "report",
        "--root",
        empty.to_str().unwrap(),
        "--out",
        dir.path().join("site").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nothing to report"));

    let (_d, _corpus, root) = super::mine("folder");
    let site = dir.path().join("site");
    let mut child = bin()
        .args([
            "report",
            "--root",
            root.to_str().unwrap(),
            "--out",
            site.to_str().unwrap(),
            "--serve",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .unwrap();
        if let Some(rest) = line.split(" at http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let get_as = |path: &str, host: &str| -> String {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let get = |path: &str| get_as(path, &addr);
    let index = get("/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains("Mined pairs") && index.contains("text/html"));
    // Issue 20: the headers that keep the page to its own files.
    let head = index.to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{index}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{index}");
    assert!(head.contains("referrer-policy: no-referrer"), "{index}");
    let js = get("/data/meta.js");
    assert!(
        js.contains("text/javascript") && js.contains("report_id"),
        "{js}"
    );
    assert!(get("/data/nope.js").starts_with("HTTP/1.1 404"));
    assert!(!get("/../Cargo.toml").starts_with("HTTP/1.1 200"));
    // A page on another name (DNS rebinding) is refused; loopback names are not.
    let port = addr.rsplit(':').next().unwrap();
    let foreign = get_as("/", &format!("rebind.example:{port}"));
    assert!(foreign.starts_with("HTTP/1.1 421"), "{foreign}");
    assert!(get_as("/", &format!("localhost:{port}")).starts_with("HTTP/1.1 200"));
    // A symlink in the site that leads out of it is not followed.
    std::os::unix::fs::symlink("/etc", site.join("thumbs-out")).unwrap();
    std::fs::create_dir_all(site.join("inner")).unwrap();
    std::os::unix::fs::symlink(site.join("index.html"), site.join("inner/home.html")).unwrap();
    let out = get("/thumbs-out/passwd");
    assert!(
        out.starts_with("HTTP/1.1 404") && !out.contains("root:"),
        "{out}"
    );
    assert!(
        get("/inner/home.html").starts_with("HTTP/1.1 200"),
        "a link inside the site is served"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 19: the thresholds page's yield grid, counted from the filter units' aggregates,
/// equals SQL over every candidate's similarities (the `similarities` view) at every cell.
fn yield_equals_sql(root: &str, page: &Path) {
    let html = std::fs::read_to_string(page).unwrap();
    let attr = |name: &str| -> Vec<u64> {
        html.split(&format!("{name}=\""))
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let (pairs, images) = (attr("data-pairs"), attr("data-images"));
    let d = blindspot::report::ReportParams::default();
    assert_eq!(pairs.len(), d.clip_grid.len() * d.dino_grid.len());
    let values = |v: &[f64]| {
        v.iter()
            .map(|x| format!("({x:?})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let grid = format!(
        "WITH g AS (SELECT t.c, u.d FROM (VALUES {}) AS t(c) CROSS JOIN (VALUES {}) AS u(d)), \
         s AS (SELECT a, b, CAST(clip_sim AS DOUBLE) AS cs, CAST(dino_sim AS DOUBLE) AS ds FROM similarities) ",
        values(&d.clip_grid),
        values(&d.dino_grid)
    );
    let counted = |query: String| -> std::collections::HashMap<(String, String), u64> {
        sql_csv(root, &query)
            .iter()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                ((f[0].to_string(), f[1].to_string()), f[2].parse().unwrap())
            })
            .collect()
    };
    let want_pairs = counted(format!(
        "{grid}SELECT g.c, g.d, count(*) AS n FROM g JOIN s ON s.cs > g.c AND s.ds < g.d GROUP BY g.c, g.d"
    ));
    let want_images = counted(format!(
        "{grid}, k AS (SELECT a AS key, cs, ds FROM s UNION ALL SELECT b AS key, cs, ds FROM s) \
         SELECT g.c, g.d, count(DISTINCT k.key) AS n FROM g JOIN k ON k.cs > g.c AND k.ds < g.d GROUP BY g.c, g.d"
    ));
    let mut cell = 0;
    for c in &d.clip_grid {
        for dd in &d.dino_grid {
            let key = (c.to_string(), dd.to_string());
            assert_eq!(
                pairs[cell],
                want_pairs.get(&key).copied().unwrap_or(0),
                "pairs at clip > {c}, dino < {dd}"
            );
            assert_eq!(
                images[cell],
                want_images.get(&key).copied().unwrap_or(0),
                "images at clip > {c}, dino < {dd}"
            );
            cell += 1;
        }
    }
    assert!(pairs.iter().any(|p| *p > 0) && images.iter().any(|i| *i > 0));
}
