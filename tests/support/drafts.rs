//! Issue 22: drafted questions for mined pairs, against the scripted loopback server: good,
//! malformed, same-answer, disputed and blind-answerable drafts; retries with the reason;
//! failures recorded; verification with one image at a time and with none; the cache (no
//! request on a rerun); the sheet filled and a benchmark that `eval mllm` reads.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;

use super::openai::{Reply, Server};
use super::{mine, mllm_args, run, run_json, run_ok};

/// The data URL the client sends for an image file.
fn data_url(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/jpeg",
    };
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The sheet's image `index`.
fn image(sheet: &Path, index: usize) -> std::path::PathBuf {
    std::fs::read_dir(sheet.join("MMVP Images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_stem().unwrap().to_str().unwrap() == index.to_string())
        .unwrap()
}

/// Which pair and side (`A` or `B`) each of the sheet's first `pairs` pairs' images is, by the
/// data URL the client sends for it (pair k is images 2k+1 and 2k+2).
fn sides_by_url(sheet: &Path, pairs: usize) -> HashMap<String, (usize, char)> {
    (0..pairs)
        .flat_map(|k| {
            [
                (data_url(&image(sheet, 2 * k + 1)), (k, 'A')),
                (data_url(&image(sheet, 2 * k + 2)), (k, 'B')),
            ]
        })
        .collect()
}

fn draft_json(q: &str, answers: (&str, &str)) -> String {
    format!(
        r#"{{"difference": "the foot points the other way", "pattern": "Orientation and Direction", "question": "{q}", "options": ["left", "right"], "answer_a": "{}", "answer_b": "{}"}}"#,
        answers.0, answers.1
    )
}

#[test]
fn drafts_are_retried_verified_cached_and_become_a_benchmark() {
    let (dir, _corpus, root) = mine("folder");
    let sheet = dir.path().join("sheet");
    let s = sheet.to_str().unwrap();
    run_ok(&[
        "annotate",
        "--root",
        root.to_str().unwrap(),
        "--out",
        s,
        "--limit",
        "4",
    ]);
    let pair_of = sides_by_url(&sheet, 4);
    let script = move |req: &super::openai::Logged, _seen: usize| -> Reply {
        let p = &req.prompt;
        if p.contains("You are shown two images") {
            let (k, _) = pair_of[&req.images[0]];
            let retry = p.contains("could not be used");
            return Reply::Text(match (k, retry) {
                (0, _) => draft_json("Q0?", ("a", "b")),
                // Pair 1 answers prose first, then the JSON when told why.
                (1, false) => "They look the same to me.".into(),
                (1, true) => format!("```json\n{}\n```", draft_json("Q1?", ("(b)", "(a)"))),
                // Pair 2 never tells its images apart.
                (2, _) => draft_json("Q2?", ("a", "a")),
                _ => draft_json("Q3?", ("a", "b")),
            });
        }
        if p.contains("You are not shown any image") {
            assert!(req.images.is_empty(), "the text-only check sends no image");
            // Q1 can be answered from the words alone.
            return Reply::Text(match p.contains("Q1?") {
                true => "(a)".into(),
                false => "(c) cannot tell".into(),
            });
        }
        assert_eq!(req.images.len(), 1, "verification shows one image: {p}");
        let (k, side) = pair_of[&req.images[0]];
        Reply::Text(
            match (k, side) {
                (0, 'A') | (1, 'B') => "(a) left",
                (0, 'B') | (1, 'A') => "The answer is (b).",
                // Pair 3's verifier sees left in both.
                _ => "(a)",
            }
            .into(),
        )
    };
    let server = Server::start(script);
    let bench = dir.path().join("bench");
    let args = [
        "draft",
        s,
        "--base-url",
        &server.url,
        "--model",
        "drafter",
        "--verify-model",
        "checker",
        "--concurrency",
        "2",
        "--benchmark",
        bench.to_str().unwrap(),
        "--json",
    ];
    let summary = run_json(&args);
    assert_eq!(summary["pairs"], 4, "{summary}");
    assert_eq!(summary["drafted"], 3, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["verified"], 2, "{summary}");
    assert_eq!(summary["disputed"], 1, "{summary}");
    assert_eq!(summary["blind_answerable"], 1, "{summary}");
    assert_eq!(summary["in_sheet"], 1, "{summary}");
    // Drafts: 1 + 2 + 3 (the attempts) + 1; verification: 3 for each of 3 drafts.
    let first = server.requests();
    assert_eq!(first.len(), 16);
    assert_eq!(summary["requests"], 16, "{summary}");
    let drafts = first.iter().filter(|r| r.model == "drafter").count();
    assert_eq!(drafts, 7, "the verifier is the other model");
    assert!(first
        .iter()
        .filter(|r| r.model == "drafter")
        .all(|r| r.images.len() == 2));

    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sheet.join("drafts.json")).unwrap()).unwrap();
    let pairs = file["pairs"].as_array().unwrap();
    assert_eq!(pairs[1]["attempts"], 2);
    assert_eq!(pairs[1]["draft"]["answer_a"], "b");
    assert_eq!(pairs[1]["verification"]["status"], "verified");
    assert_eq!(pairs[1]["verification"]["blind_answerable"], true);
    assert_eq!(pairs[2]["status"], "failed");
    assert_eq!(pairs[2]["attempts"], 3);
    assert!(pairs[2]["reason"]
        .as_str()
        .unwrap()
        .contains("does not tell them apart"));
    assert_eq!(pairs[3]["verification"]["status"], "disputed");
    assert_eq!(pairs[3]["verification"]["answer_b"], "a");
    assert_eq!(pairs[0]["in_sheet"], true);
    assert_eq!(pairs[1]["in_sheet"], false, "blind-answerable stays out");

    // The sheet: pair 0 filled, with opposite answers; the others left for people.
    let mut sheet_rows = csv::Reader::from_path(sheet.join("Questions.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = sheet_rows.records().map(|r| r.unwrap()).collect();
    assert_eq!(&rows[0][1], "Q0?");
    assert_eq!(&rows[0][2], "(a) left (b) right");
    assert_eq!((&rows[0][3], &rows[1][3]), ("(a)", "(b)"));
    assert_eq!(&rows[0][4], "Orientation");
    assert!(rows[2..].iter().all(|r| r[1].is_empty()));

    // A person writes pair 2's question by hand: reruns leave it as written.
    let text = std::fs::read_to_string(sheet.join("Questions.csv")).unwrap();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut r = csv::Reader::from_reader(text.as_bytes());
    w.write_record(r.headers().unwrap()).unwrap();
    for (i, rec) in r.records().enumerate() {
        let mut rec: Vec<String> = rec.unwrap().iter().map(str::to_string).collect();
        if i == 4 || i == 5 {
            rec[1] = "Is it drawn by hand?".into();
        }
        w.write_record(&rec).unwrap();
    }
    std::fs::write(sheet.join("Questions.csv"), w.into_inner().unwrap()).unwrap();

    // A rerun pays for nothing twice.
    let again = run_json(&args);
    assert_eq!(server.requests().len(), 16, "no request on the rerun");
    assert_eq!(again["requests"], 0, "{again}");
    // Every reply from the cache, less the 3 drafts of the pair now written by hand.
    assert_eq!(again["cached"], 13, "{again}");
    assert_eq!(again["in_sheet"], 1);
    assert_eq!(
        again["failed"], 0,
        "the hand-written pair is kept, not drafted: {again}"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sheet.join("drafts.json")).unwrap()).unwrap();
    assert_eq!(file["pairs"][2]["status"], "kept");
    assert_eq!(
        file["pairs"][0]["in_sheet"], true,
        "its own fill is recognised"
    );
    let mut r = csv::Reader::from_path(sheet.join("Questions.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(&rows[4][1], "Is it drawn by hand?");
    assert_eq!(&rows[0][1], "Q0?");

    // The benchmark: one pair, MMVP's format, which eval mllm reads.
    let text = std::fs::read_to_string(bench.join("Questions.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Index,Question,Options,Correct Answer,Pattern");
    assert_eq!(lines[1], "1,Q0?,(a) left (b) right,(a),Orientation");
    assert_eq!(lines[2], "2,Q0?,(a) left (b) right,(b),Orientation");
    assert_eq!(
        std::fs::read_dir(bench.join("MMVP Images"))
            .unwrap()
            .count(),
        2
    );
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bench.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(provenance["drafting"]["model"], "drafter");
    // annotate's record of where the pairs came from travels with them.
    assert_eq!(
        provenance["mining"]["root"].as_str().unwrap(),
        format!("file://{}", root.display())
    );
    assert_eq!(provenance["mining"]["clip_min"], 0.95);
    assert_eq!(provenance["mining"]["dino_max"], 0.6);
    assert_eq!(provenance["mining"]["pairs_exported"], 4);
    assert_eq!(
        provenance["mining"]["filter_runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(provenance["verification"]["model"], "checker");
    assert_eq!(provenance["items"], 2);
    let answers = Server::start(|req, _| {
        Reply::Text(match req.prompt.contains("Q0?") {
            true => "(a)".into(),
            false => "?".into(),
        })
    });
    let eval = dir.path().join("eval");
    let out = run(&mllm_args(&bench, &answers.url, "m", &eval, &["--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scored: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(scored["questions"], 2, "{scored}");
    assert_eq!(answers.requests().len(), 2);

    // A sheet nobody can draft: an error that says where the reasons are.
    let refuse = Server::start(|_, _| Reply::Text("no".into()));
    let out = run(&[
        "draft",
        s,
        "--base-url",
        &refuse.url,
        "--model",
        "other",
        "--attempts",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("drafts.json"));

    // No sheet at all: exit 2, saying how to write one.
    let nowhere = dir.path().join("no-sheet");
    let out = run(&[
        "draft",
        nowhere.to_str().unwrap(),
        "--base-url",
        &refuse.url,
        "--model",
        "other",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no annotation sheet") && err.contains("blindspot annotate"),
        "{err}"
    );
}

/// Issue 22: NaturalBench's Q-Acc, I-Acc and G-Acc on pairs that ask two questions of two
/// images (a `Pair` column groups the rows), checked against values counted by hand.
#[test]
fn two_questions_of_two_images_get_naturalbench_scores() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("nb");
    std::fs::create_dir_all(bench.join("MMVP Images")).unwrap();
    // Pair p: image X (red, small) and image Y (blue, large); questions "red?" and "large?".
    let colour = |p: u32, x: bool| -> [u8; 3] {
        match x {
            true => [200, 10 * p as u8, 0],
            false => [0, 10 * p as u8, 200],
        }
    };
    let mut sheet = String::from("Index,Question,Options,Correct Answer,Pattern,Pair\n");
    let mut index = 0;
    for (p, pattern) in [(1u32, "Color"), (2, "Orientation")] {
        for (question, x_yes) in [
            ("Is the square red?", true),
            ("Is the square large?", false),
        ] {
            for x in [true, false] {
                index += 1;
                let img = image::RgbImage::from_pixel(8, 8, image::Rgb(colour(p, x)));
                img.save(bench.join(format!("MMVP Images/{index}.png")))
                    .unwrap();
                let yes = x == x_yes;
                sheet.push_str(&format!(
                    "{index},{question},(a) Yes (b) No,{},{pattern},{p}\n",
                    if yes { "(a)" } else { "(b)" }
                ));
            }
        }
    }
    std::fs::write(bench.join("Questions.csv"), sheet).unwrap();
    let url_of: HashMap<String, (u32, bool)> = (1..=8)
        .map(|i| {
            let (p, x) = ((i - 1) / 4 + 1, (i - 1) % 2 == 0);
            (
                data_url(&bench.join(format!("MMVP Images/{i}.png"))),
                (p, x),
            )
        })
        .collect();
    // Right everywhere except pair 2's image Y asked "large?".
    let server = Server::start(move |req, _| {
        let (p, x) = url_of[&req.images[0]];
        let red_q = req.prompt.contains("red?");
        let yes = if red_q { x } else { !x };
        let wrong = p == 2 && !x && !red_q;
        Reply::Text(if yes != wrong { "(a)" } else { "(b)" }.into())
    });
    let root = dir.path().join("run");
    let s = run_json(&mllm_args(&bench, &server.url, "m", &root, &["--json"]));
    // By hand: pair 1 all right; pair 2 wrong on (Y, large?).
    assert_eq!(s["pair_accuracy"], 50.0, "{s}");
    assert_eq!(s["natural"]["groups"], 2, "{s}");
    assert_eq!(s["natural"]["q_acc"], 75.0, "{s}");
    assert_eq!(s["natural"]["i_acc"], 75.0, "{s}");
    assert_eq!(s["natural"]["g_acc"], 50.0, "{s}");
    let csv = super::sql_csv(
        root.to_str().unwrap(),
        "SELECT pattern, q_acc, i_acc, g_acc FROM scores ORDER BY pattern",
    );
    assert_eq!(
        csv,
        [
            "pattern,q_acc,i_acc,g_acc",
            "Color,100.0,100.0,100.0",
            "Orientation,50.0,50.0,0.0",
            "all,75.0,75.0,50.0"
        ]
    );
    // Their bootstrap intervals resample whole groups: with these two groups, every resample
    // is both, one or the other, so the 95% intervals reach the extremes.
    assert_eq!(s["natural"]["intervals"][2][0], 0.0, "{s}");
    assert_eq!(s["natural"]["intervals"][2][1], 100.0, "{s}");
    assert_eq!(s["natural"]["intervals"][0][0], 50.0, "{s}");
    assert_eq!(s["natural"]["intervals"][0][1], 100.0, "{s}");
    let csv = super::sql_csv(
        root.to_str().unwrap(),
        "SELECT g_acc_low, g_acc_high FROM scores WHERE pattern = 'all'",
    );
    assert_eq!(csv, ["g_acc_low,g_acc_high", "0.0,100.0"]);
    // The report's evaluation page shows them beside the accuracies.
    let site = dir.path().join("site");
    run_ok(&[
        "report",
        "--root",
        root.to_str().unwrap(),
        "--out",
        site.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(site.join("evaluation.html")).unwrap();
    assert!(page.contains("Q/I/G 75/75/50"), "{page}");
    assert!(page.contains("(a) 50%"), "{page}");
}

/// Issue 22: drafts reviewed in the report, in headless chromium: a question edited with the
/// keyboard and its answers swapped, a draft approved, a question written where drafting
/// failed; all kept across a reload, exported, imported into another build of the report, and
/// carried by `draft --review` (no request paid twice) into a benchmark that `eval mllm` reads.
#[test]
fn drafts_reviewed_in_chromium_carry_their_edits_into_the_benchmark() {
    let (dir, _corpus, root) = mine("folder");
    let r = root.to_str().unwrap();
    let sheet = dir.path().join("sheet");
    let s = sheet.to_str().unwrap();
    run_ok(&["annotate", "--root", r, "--out", s, "--limit", "4"]);
    let urls = sides_by_url(&sheet, 4);
    // Pair 0 verified; 1 disputed; 2 never tells its images apart (failed); 3 verified but
    // answerable without the image.
    let server = Server::start(move |req, _| {
        let p = &req.prompt;
        if p.contains("You are shown two images") {
            let (k, _) = urls[&req.images[0]];
            let answers = if k == 2 { ("a", "a") } else { ("a", "b") };
            return Reply::Text(draft_json(&format!("Q{k}?"), answers));
        }
        if p.contains("You are not shown any image") {
            return Reply::Text(if p.contains("Q3?") { "(a)" } else { "(c)" }.into());
        }
        let (k, side) = urls[&req.images[0]];
        Reply::Text(if side == 'A' || k == 1 { "(a)" } else { "(b)" }.into())
    });
    let drafting = ["--base-url", &server.url, "--model", "drafter", "--json"];
    let first = run_json(&[&["draft", s][..], &drafting[..]].concat());
    assert_eq!(
        (&first["drafted"], &first["failed"]),
        (&3.into(), &1.into()),
        "{first}"
    );
    let paid = server.requests().len();

    let drafts = sheet.join("drafts.json");
    let site = dir.path().join("site");
    let report = |out: &Path| {
        run_json(&[
            "report",
            "--root",
            r,
            "--out",
            out.to_str().unwrap(),
            "--drafts",
            drafts.to_str().unwrap(),
            "--json",
        ])
    };
    let built = report(&site);
    assert_eq!(built["drafts"]["pairs"], 4, "{built}");
    assert_eq!(
        built["drafts"]["shown"], 4,
        "every drafted pair is a card: {built}"
    );

    let art = super::report::artefacts().join("drafts");
    let seen = super::report::browse(&site, &art, &["--drafts"]);
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["draft_cards"], 4, "{seen}");
    assert_eq!(seen["draft_filter_failed"], 1, "{seen}");
    assert_eq!(seen["draft_filter_drafted"], 3, "{seen}");
    assert_eq!(seen["draft_filter_verified"], 2, "{seen}");
    assert_eq!(seen["draft_filter_blind"], 1, "{seen}");
    assert_eq!(seen["draft_filter_reviewed"], 3, "{seen}");
    assert_eq!(
        seen["focused_after_typing"], true,
        "Enter gives the keys back to the card"
    );
    let reviewed = seen["drafts_reviewed"].as_array().unwrap();
    assert_eq!(reviewed.len(), 3, "{seen}");
    let edited_q = "Does the foot of the letter point left, as edited?";
    let edited = reviewed
        .iter()
        .find(|d| d["question"] == edited_q)
        .expect("the edit");
    let before = &seen["draft_before"];
    assert_eq!(edited["a"], before["a"]);
    assert_ne!(
        edited["answer_a"], before["answer_a"],
        "s swapped the answers"
    );
    assert_ne!(edited["answer_a"], edited["answer_b"]);
    assert!(edited["tags"].to_string().contains("edited"), "{edited}");
    let approved: Vec<_> = reviewed
        .iter()
        .filter(|d| d["tags"].to_string().contains("approved"))
        .collect();
    assert_eq!(approved.len(), 1, "{seen}");
    let written = reviewed
        .iter()
        .find(|d| d["question"] == "Is there a letter in the image?")
        .expect("the written question");
    assert_eq!(
        (&written["option_a"], &written["option_b"]),
        (&"yes".into(), &"no".into())
    );
    assert_eq!(written["pattern"], "Presence");
    assert_eq!(
        seen["drafts_after_reload"], seen["drafts_reviewed"],
        "kept across a reload"
    );
    assert!(
        seen["decided_text"]
            .as_str()
            .unwrap()
            .contains("3 drafts reviewed"),
        "{seen}"
    );

    // Another build of the report, a fresh browser: the exported CSV brings the edits back.
    let site2 = dir.path().join("site2");
    report(&site2);
    let csv = art.join("decisions.csv");
    let back = super::report::browse(
        &site2,
        &art.join("import"),
        &["--import", csv.to_str().unwrap()],
    );
    assert_eq!(back["imported_drafts"], seen["drafts_reviewed"], "{back}");

    // The review into the sheet and a benchmark, every reply from the cache.
    let bench = dir.path().join("bench");
    let review = art.join("decisions.json");
    let args = [
        &["draft", s, "--review", review.to_str().unwrap()][..],
        &["--benchmark", bench.to_str().unwrap()][..],
        &drafting[..],
    ]
    .concat();
    let applied = run_json(&args);
    assert_eq!(server.requests().len(), paid, "no request paid twice");
    let counts = &applied["review"];
    assert_eq!(
        (&counts["approved"], &counts["edited"], &counts["written"]),
        (&1.into(), &1.into(), &1.into()),
        "{applied}"
    );
    assert_eq!(
        counts["fields_edited"], 2,
        "question and answers: {applied}"
    );
    // The edited, approved and written pairs, and pair 0 (verified) if it was none of them.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&drafts).unwrap()).unwrap();
    let pairs = file["pairs"].as_array().unwrap();
    let reviewed_or_verified = pairs
        .iter()
        .filter(|p| p["review"]["vouched"] == true || (p["index"] == 1 && p["review"].is_null()))
        .count();
    assert_eq!(applied["in_sheet"], reviewed_or_verified, "{applied}");
    let mine_edit = pairs
        .iter()
        .find(|p| p["review"]["draft"]["question"] == edited_q)
        .unwrap();
    let drafted_a = mine_edit["draft"]["answer_a"].as_str().unwrap();
    let swapped = if drafted_a == "a" { "(b)" } else { "(a)" };
    let text = std::fs::read_to_string(bench.join("Questions.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    let at = rows
        .iter()
        .position(|r| &r[1] == edited_q)
        .expect("the edit in the benchmark");
    assert_eq!(&rows[at][3], swapped, "{text}");
    assert_ne!(&rows[at + 1][3], swapped, "{text}");
    assert!(
        text.contains("Is there a letter in the image?,(a) yes (b) no"),
        "{text}"
    );
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bench.join("provenance.json")).unwrap())
            .unwrap();
    assert_eq!(provenance["review"]["edited"], 1, "{provenance}");
    assert_eq!(provenance["review"]["written"], 1, "{provenance}");

    // A rerun without --review keeps the review.
    let again = run_json(&[&["draft", s][..], &drafting[..]].concat());
    assert_eq!(again["in_sheet"], applied["in_sheet"], "{again}");

    // eval mllm reads the benchmark.
    let answers = Server::start(|_, _| Reply::Text("(a)".into()));
    let scored = run_json(&mllm_args(
        &bench,
        &answers.url,
        "m",
        &dir.path().join("eval"),
        &["--json"],
    ));
    assert_eq!(scored["questions"], rows.len(), "{scored}");
}

/// Issue 22: `draft --questions 2` asks for a second question about the same two images (again
/// when it repeats the first), verifies it, and writes NaturalBench's shape: four rows per pair
/// under a `Pair` column, which `eval mllm` scores with Q-Acc, I-Acc and G-Acc.
#[test]
fn a_second_question_makes_naturalbench_pairs() {
    let (dir, _corpus, root) = mine("folder");
    let sheet = dir.path().join("sheet");
    let s = sheet.to_str().unwrap();
    run_ok(&[
        "annotate",
        "--root",
        root.to_str().unwrap(),
        "--out",
        s,
        "--limit",
        "2",
    ]);
    let urls = sides_by_url(&sheet, 2);
    let server = Server::start(move |req, _| {
        let p = &req.prompt;
        if p.contains("You are shown two images") {
            let (k, _) = urls[&req.images[0]];
            let second = p.contains("A first question was already written");
            let retry = p.contains("could not be used");
            // The second question repeats the first until told so.
            let q = match (second, retry) {
                (true, true) => format!("R{k}?"),
                _ => format!("Q{k}?"),
            };
            return Reply::Text(draft_json(&q, ("a", "b")));
        }
        if p.contains("You are not shown any image") {
            return Reply::Text("(c) cannot tell".into());
        }
        let (k, side) = urls[&req.images[0]];
        // Pair 1's second question is disputed: (a) for both images.
        let disputed = k == 1 && p.contains("R1?");
        Reply::Text(
            if side == 'A' || disputed {
                "(a)"
            } else {
                "(b)"
            }
            .into(),
        )
    });
    let bench = dir.path().join("bench");
    let args = [
        "draft",
        s,
        "--base-url",
        &server.url,
        "--model",
        "m",
        "--questions",
        "2",
        "--benchmark",
        bench.to_str().unwrap(),
        "--json",
    ];
    let summary = run_json(&args);
    assert_eq!(summary["in_sheet"], 2, "{summary}");
    assert_eq!(summary["second_questions"], 1, "{summary}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sheet.join("drafts.json")).unwrap()).unwrap();
    let second = &file["pairs"][0]["second"];
    assert_eq!(second["attempts"], 2, "{second}");
    assert_eq!(second["draft"]["question"], "R0?");
    assert_eq!(second["in_benchmark"], true);
    let disputed = &file["pairs"][1]["second"];
    assert_eq!(disputed["verification"]["status"], "disputed", "{disputed}");
    assert_eq!(disputed["in_benchmark"], false);
    let text = std::fs::read_to_string(bench.join("Questions.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Index,Question,Options,Correct Answer,Pattern,Pair"
    );
    assert_eq!(lines.len(), 7, "{text}");
    assert_eq!(lines[3], "3,R0?,(a) left (b) right,(a),Orientation,1");
    assert_eq!(lines[6], "6,Q1?,(a) left (b) right,(b),Orientation,2");
    // Right on everything but R0 about image B of pair 1 (by hand: pair accuracy 50%; the one
    // NaturalBench group has Q-Acc 1/2, I-Acc 1/2, G-Acc 0).
    let side: HashMap<String, char> = (1..=6)
        .map(|i| {
            let url = data_url(&bench.join(format!("MMVP Images/{i}.png")));
            (url, if i % 2 == 1 { 'A' } else { 'B' })
        })
        .collect();
    let answers = Server::start(move |req, _| {
        let b = side[&req.images[0]] == 'B';
        let right = if b { "(b)" } else { "(a)" };
        Reply::Text(
            if b && req.prompt.contains("R0?") {
                "(a)"
            } else {
                right
            }
            .into(),
        )
    });
    let eval = dir.path().join("eval");
    let scored = run_json(&mllm_args(&bench, &answers.url, "m", &eval, &["--json"]));
    assert_eq!(scored["pair_accuracy"], 50.0, "{scored}");
    let n = &scored["natural"];
    assert_eq!(n["groups"], 1, "{scored}");
    assert_eq!(
        (&n["q_acc"], &n["i_acc"], &n["g_acc"]),
        (&50.0.into(), &50.0.into(), &0.0.into())
    );
}
