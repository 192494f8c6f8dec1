//! Beyond one machine, with real processes of the binary: a Ballista cluster (one scheduler,
//! two executors) on loopback ports runs the filter SQL and analyst queries with `cosine_sim`
//! over Float16 and Float32 vectors and gives the local results; claiming workers, one of them
//! SIGKILLed while it holds a lease, together write what one run writes; `status` reports
//! units done, leased and pending.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, copy_dir, run, run_ok};

/// A port `p` with `p` and `p + 1` free (an executor takes both).
fn free_ports() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A child process that is SIGTERMed (then killed) when dropped, so a failing test leaves
/// no cluster behind.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn start(name: &'static str, args: &[String], log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let child = bin()
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child, name }
    }

    /// SIGTERM and wait; returns whether it exited within `within`, with its status.
    fn stop(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("{} had to be killed", self.name);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: the body, if the server answered 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A mined run root of synthetic vectors stored as `dtype`, up to candidates.
fn mined_root(root: &Path, dtype: &str) {
    let r = root.to_str().unwrap();
    run_ok(&[
        "synth-vectors",
        "--out",
        r,
        "--n",
        "3000",
        "--dim",
        "64",
        "--dino-dim",
        "48",
        "--kind",
        "planted",
        "--dtype",
        dtype,
        "--shard-rows",
        "500",
    ]);
    run_ok(&["candidates", "--root", r, "--method", "exact"]);
}

fn csv(args: &[&str]) -> String {
    run_ok(&[&["sql", "--format", "csv"], args].concat())
}

#[test]
fn a_loopback_ballista_cluster_gives_the_local_results() {
    let dir = tempfile::tempdir().unwrap();
    let sched = free_ports();
    let scheduler = Proc::start(
        "scheduler",
        &[
            "cluster".into(),
            "scheduler".into(),
            "--bind".into(),
            format!("127.0.0.1:{sched}"),
            "--executor-timeout".into(),
            "10".into(),
        ],
        &dir.path().join("scheduler.log"),
    );
    let mut procs = vec![scheduler];
    for i in 0..2 {
        let port = free_ports();
        let work = dir.path().join(format!("work-{i}"));
        procs.push(Proc::start(
            "executor",
            &[
                "cluster".into(),
                "executor".into(),
                "--scheduler".into(),
                format!("127.0.0.1:{sched}"),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
                "--work-dir".into(),
                work.to_string_lossy().into_owned(),
                "--concurrency".into(),
                "2".into(),
                "--heartbeat".into(),
                "1".into(),
            ],
            &dir.path().join(format!("executor-{i}.log")),
        ));
    }
    // Meanwhile: two mined roots, vectors stored as Float32 and as Float16.
    let roots: Vec<_> = ["f32", "f16"]
        .iter()
        .map(|d| {
            let local = dir.path().join(format!("local-{d}"));
            mined_root(&local, d);
            let remote = dir.path().join(format!("cluster-{d}"));
            copy_dir(&local, &remote);
            (local, remote)
        })
        .collect();
    // Ready: the REST API lists both executors.
    let started = Instant::now();
    loop {
        let n = http_get(sched, "/api/executors")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
            .unwrap_or(0);
        if n == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{n} executors registered after 60 s\n{}",
            tail(&dir.path().join("scheduler.log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("df://127.0.0.1:{sched}");

    for (local, remote) in &roots {
        let (l, r) = (local.to_str().unwrap(), remote.to_str().unwrap());
        run_ok(&["filter", "--root", l]);
        let out = run(&["filter", "--root", r, "--cluster", &url, "--json"]);
        assert!(
            out.status.success(),
            "filter --cluster: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&dir.path().join("scheduler.log"))
        );
        let pairs = "SELECT a, b, a_uri, b_uri, clip_sim, dino_sim FROM pairs ORDER BY a, b";
        let (mine, theirs) = (csv(&["--root", l, pairs]), csv(&["--root", r, pairs]));
        assert!(mine.lines().count() > 10, "pairs were mined:\n{mine}");
        assert_eq!(
            mine, theirs,
            "pairs filtered on the cluster = pairs filtered here"
        );

        // An analyst's query: cosine_sim over both vector columns, a join and an aggregate.
        let q = "SELECT c.a, c.b, cosine_sim(ea.clip, eb.clip) AS clip, cosine_sim(ea.dino, eb.dino) AS dino, \
                 CAST(ea.clip[1] AS FLOAT) AS first \
                 FROM candidates c JOIN embeddings ea ON ea.key = c.a JOIN embeddings eb ON eb.key = c.b \
                 WHERE cosine_sim(ea.clip, eb.clip) > 0.96 ORDER BY c.a, c.b";
        let here = csv(&["--root", l, q]);
        let there = csv(&["--root", l, "--cluster", &url, q]);
        assert!(here.lines().count() > 10, "{here}");
        assert_eq!(here, there, "analyst query on {l}");
        let agg = "SELECT COUNT(*) AS n, ROUND(AVG(dino_sim), 4) AS d FROM pairs";
        assert_eq!(
            csv(&["--root", l, agg]),
            csv(&["--root", l, "--cluster", &url, agg])
        );
    }

    // Catalog statements are answered locally.
    let (l, _) = &roots[0];
    let l = l.to_str().unwrap();
    for q in ["SHOW TABLES", "DESCRIBE embeddings"] {
        assert_eq!(
            csv(&["--root", l, q]),
            csv(&["--root", l, "--cluster", &url, q])
        );
    }

    // A Float16 literal would be sent as Float32: refused with the fix, not answered wrongly.
    let (f16_root, _) = &roots[1];
    let q = "SELECT key FROM embeddings WHERE clip[1] > arrow_cast(0.1, 'Float16')";
    let out = run(&[
        "sql",
        "--root",
        f16_root.to_str().unwrap(),
        "--cluster",
        &url,
        q,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAST"));

    // Stopped cleanly: executors first, then the scheduler, each within 20 s of SIGTERM.
    for p in procs.iter_mut().rev() {
        let status = p.stop(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly: {status:?}",
            p.name
        );
    }
}

/// Finished `.json` files under `dir` (the local store stages a put beside its target).
fn json_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(json_files(&p));
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
    out
}

fn status(root: &str) -> serde_json::Value {
    serde_json::from_str(run_ok(&["status", "--root", root, "--json"]).trim()).unwrap()
}

fn stage<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == name)
        .unwrap_or_else(|| panic!("no {name} in {s}"))
}

#[test]
fn claiming_workers_one_sigkilled_write_what_one_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, root) = super::partitioned_vectors(dir.path(), 60, "claimed");
    let r = reference.to_str().unwrap();
    let k = root.to_str().unwrap();
    let one: serde_json::Value =
        serde_json::from_str(run_ok(&["candidates", "--root", r, "--json"]).trim()).unwrap();
    let total = one["cells"]["total"].as_u64().unwrap();
    assert_eq!(stage(&status(k), "partition")["done"], 1);
    assert_eq!(stage(&status(k), "candidates")["pending"], total);

    let worker = |id: &str| {
        bin()
            .args([
                "candidates",
                "--root",
                k,
                "--claim",
                "--lease-ttl",
                "3",
                "--worker-id",
                id,
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut doomed = worker("w0");
    let mut others = vec![worker("w1"), worker("w2")];
    let leases = root.join("_leases/candidates");
    let held_by_w0 = || -> Vec<String> {
        json_files(&leases)
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(&p).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|l| l["worker"] == "w0")
            .map(|l| l["unit"].as_str().unwrap().to_string())
            .collect()
    };
    let started = Instant::now();
    let held = loop {
        let held = held_by_w0();
        if !held.is_empty() {
            break held;
        }
        assert!(
            doomed.try_wait().unwrap().is_none(),
            "w0 ended before holding a lease"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    };
    // SIGKILL while it holds a lease: mid-cell.
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let commits = root.join("_commits/candidates");
    let by_w0 = json_files(&commits).len() as u64;
    // status sees the dead worker's lease as expired (its process is gone on this host).
    let s = status(k);
    let cand = stage(&s, "candidates");
    let w0: Vec<&serde_json::Value> = cand["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["worker"] == "w0")
        .collect();
    assert!(
        w0.iter().all(|l| l["expired"] == true),
        "a SIGKILLed worker's leases are expired: {cand}"
    );

    let mut done = 0;
    for child in others.drain(..) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        done += summary["cells"]["done"].as_u64().unwrap();
        assert_eq!(summary["cells"]["discarded"], 0, "{summary}");
    }
    let all = json_files(&commits).len() as u64;
    assert_eq!(all, total, "every cell committed");
    assert!(
        by_w0 + done >= total && done <= total,
        "no cell joined twice to completion: w0 {by_w0} before its death, w1 + w2 {done}, of {total}"
    );
    for unit in &held {
        assert!(
            commits.join(format!("{unit}.json")).exists(),
            "w0's cell {unit} was taken over and committed"
        );
    }
    let left: Vec<String> = json_files(&leases)
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect();
    assert!(left.is_empty(), "no lease is left: {left:#?}");

    let s = status(k);
    let cand = stage(&s, "candidates");
    assert_eq!(cand["done"], total);
    assert_eq!(cand["leased"], 0);
    assert_eq!(cand["pending"], 0);
    assert_eq!(s["candidates"], one["table_pairs"], "{s}");
    let text = run_ok(&["status", "--root", k]);
    assert!(
        text.contains("candidates") && text.contains(&total.to_string()),
        "{text}"
    );

    let pairs = "SELECT a, b, clip_sim FROM candidates ORDER BY a, b";
    assert_eq!(
        csv(&["--root", k, pairs]),
        csv(&["--root", r, pairs]),
        "claimed workers' table = one run's"
    );
    let dupes = "SELECT COUNT(*) - COUNT(DISTINCT a || '|' || b) AS d FROM candidates";
    assert_eq!(csv(&["--root", k, dupes]).trim(), "d\n0");

    // An empty root is an error that says so.
    let out = run(&[
        "status",
        "--root",
        dir.path().join("nothing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no commits"));
}

#[test]
fn claiming_embed_workers_share_shards_into_one_root() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    super::write_noise_corpus(&images, 96, 8);
    let input = images.to_str().unwrap();
    let reference = dir.path().join("reference");
    run_ok(&[
        "embed",
        input,
        "--out",
        reference.to_str().unwrap(),
        "--batch-size",
        "4",
    ]);
    let root = dir.path().join("claimed");
    let k = root.to_str().unwrap();
    let workers: Vec<Child> = (0..3)
        .map(|i| {
            bin()
                .args([
                    "embed",
                    input,
                    "--out",
                    k,
                    "--batch-size",
                    "4",
                    "--decode-threads",
                    "1",
                    "--claim",
                    "--lease-ttl",
                    "5",
                    "--worker-id",
                ])
                .arg(format!("e{i}"))
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut committed = 0;
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        committed += s["committed"].as_u64().unwrap() + s["discarded"].as_u64().unwrap();
    }
    assert_eq!(
        committed, 12,
        "each of the 12 shards embedded once to completion"
    );
    assert_eq!(super::rows_by_key(&root), super::rows_by_key(&reference));
    assert!(json_files(&root.join("_leases")).is_empty());
    let s = status(k);
    assert_eq!(stage(&s, "embed")["done"], 12);
    let with_input: serde_json::Value =
        serde_json::from_str(run_ok(&["status", "--root", k, "--input", input, "--json"]).trim())
            .unwrap();
    assert_eq!(stage(&with_input, "embed")["pending"], 0);
}
