//! The files in `deploy/` stay consistent with this command line: every Kubernetes manifest
//! parses, names the one image `deploy/Dockerfile` builds for this version, and runs command
//! lines this binary's parser accepts; the indexed Job and the Slurm array run as many
//! workers as their `--worker i/N` says; variables the command lines use are defined; the
//! nightly spec parses. (Only tests live here.)

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use clap::Parser;
    use yaml_rust2::{Yaml, YamlLoader};

    use crate::cli::Cli;

    fn deploy() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
    }

    /// The image every manifest must use: `deploy/Dockerfile`'s documented tag.
    fn image() -> String {
        format!(
            "ghcr.io/blindspot-dev/blindspot:{}",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Values for the variables a command line may use, as the platform sets them.
    fn substitute(line: &str, defined: &[String]) -> String {
        let mut out = line.to_string();
        for (var, value) in [
            ("JOB_COMPLETION_INDEX", "3"),
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_JOB_ID", "4242"),
            ("POD_NAME", "blindspot-candidates-x7k2p"),
            ("POD_IP", "10.0.0.7"),
        ] {
            let platform = matches!(
                var,
                "JOB_COMPLETION_INDEX" | "SLURM_ARRAY_TASK_ID" | "SLURM_ARRAY_JOB_ID"
            );
            let used = out.contains(&format!("${{{var}}}"));
            assert!(
                !used || platform || defined.iter().any(|d| d == var),
                "{line}: uses ${{{var}}} but the container does not define it"
            );
            out = out.replace(&format!("${{{var}}}"), value);
        }
        assert!(!out.contains('$'), "an undefined variable is left in {out}");
        out
    }

    /// The argv of a container: `command` + `args`, or the script of `/bin/sh -c`.
    fn argv(container: &Yaml) -> Vec<String> {
        let strings = |y: &Yaml| -> Vec<String> {
            y.as_vec()
                .map(|v| {
                    v.iter()
                        .map(|s| s.as_str().expect("strings").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let command = strings(&container["command"]);
        let args = strings(&container["args"]);
        let defined: Vec<String> = container["env"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .filter_map(|e| e["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if command == ["/bin/sh", "-c"] {
            assert_eq!(args.len(), 1, "one script for /bin/sh -c");
            let script = substitute(&args[0], &defined);
            let script = script
                .trim()
                .strip_prefix("exec ")
                .expect("the script execs blindspot");
            script.split_whitespace().map(String::from).collect()
        } else {
            command
                .into_iter()
                .chain(args)
                .map(|a| substitute(&a, &defined))
                .collect()
        }
    }

    /// Every container of a document, with the path of kinds that leads to it.
    fn containers<'a>(y: &'a Yaml, out: &mut Vec<&'a Yaml>) {
        match y {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    if k.as_str() == Some("containers") {
                        out.extend(v.as_vec().expect("containers is a list"));
                    } else {
                        containers(v, out);
                    }
                }
            }
            Yaml::Array(a) => a.iter().for_each(|v| containers(v, out)),
            _ => {}
        }
    }

    fn parses(argv: &[String], file: &str) {
        assert_eq!(argv[0], "blindspot", "{file}: runs {argv:?}");
        if let Err(e) = Cli::try_parse_from(argv) {
            panic!(
                "{file}: `{}` is not a valid blindspot command line:\n{e}",
                argv.join(" ")
            );
        }
    }

    fn worker_n(argv: &[String]) -> Option<u32> {
        let i = argv.iter().position(|a| a == "--worker")?;
        argv[i + 1].split_once('/').map(|(_, n)| n.parse().unwrap())
    }

    fn k8s() -> BTreeMap<String, Vec<Yaml>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(deploy().join("k8s")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let docs = YamlLoader::load_from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    docs,
                );
            }
        }
        out
    }

    #[test]
    fn kubernetes_manifests_run_valid_commands_of_one_image() {
        let files = k8s();
        let mut kinds = Vec::new();
        for (file, docs) in &files {
            for doc in docs {
                let kind = doc["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: a document without kind"));
                kinds.push(kind.to_string());
                let mut cs = Vec::new();
                containers(doc, &mut cs);
                for c in cs {
                    assert_eq!(c["image"].as_str(), Some(image().as_str()), "{file}: image");
                    parses(&argv(c), file);
                }
            }
        }
        for kind in ["Job", "CronJob", "Deployment", "Service", "ConfigMap"] {
            assert!(kinds.iter().any(|k| k == kind), "deploy/k8s has no {kind}");
        }
        let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
        assert!(
            dockerfile.contains(&image()),
            "deploy/Dockerfile documents the tag {}",
            image()
        );
        assert!(
            dockerfile.contains("ENTRYPOINT [\"blindspot\"]")
                || dockerfile.contains("/usr/local/bin/blindspot")
        );
        // The images people run carry the binary and ONNX Runtime's libraries, no toolchain.
        let shipped = &dockerfile[dockerfile.find(" AS cpu").expect("a cpu stage")..];
        for tool in ["pip ", "cargo ", "python", "rustup"] {
            assert!(!shipped.contains(tool), "the shipped stages run {tool}");
        }
    }

    #[test]
    fn the_indexed_job_runs_as_many_pods_as_workers_and_claimers_claim() {
        let files = k8s();
        let job = &files["embed-indexed-job.yaml"][0];
        assert_eq!(job["spec"]["completionMode"].as_str(), Some("Indexed"));
        let completions = job["spec"]["completions"].as_i64().unwrap() as u32;
        let mut cs = Vec::new();
        containers(job, &mut cs);
        let line = argv(cs[0]);
        assert_eq!(line[1], "embed");
        assert_eq!(
            worker_n(&line),
            Some(completions),
            "--worker i/N with N = completions"
        );
        assert_eq!(
            job["spec"]["parallelism"].as_i64(),
            Some(completions as i64)
        );

        let claim = &files["candidates-claim-job.yaml"][0];
        assert!(
            claim["spec"]["completions"].is_badvalue(),
            "a work queue Job has no completions"
        );
        let mut cs = Vec::new();
        containers(claim, &mut cs);
        let line = argv(cs[0]);
        assert_eq!(line[1], "candidates");
        assert!(line.iter().any(|a| a == "--claim"));

        let executors = &files["ballista.yaml"];
        let mut cs = Vec::new();
        executors.iter().for_each(|d| containers(d, &mut cs));
        let lines: Vec<Vec<String>> = cs.iter().map(|c| argv(c)).collect();
        assert!(lines
            .iter()
            .any(|a| a[1..3] == ["cluster".to_string(), "scheduler".to_string()]));
        let exec = lines
            .iter()
            .find(|a| a[1..3] == ["cluster".to_string(), "executor".to_string()])
            .expect("an executor Deployment");
        let sched = exec[exec.iter().position(|a| a == "--scheduler").unwrap() + 1].clone();
        let service = executors
            .iter()
            .find(|d| d["kind"].as_str() == Some("Service"))
            .unwrap();
        let port = service["spec"]["ports"][0]["port"].as_i64().unwrap();
        assert_eq!(
            sched,
            format!("{}:{port}", service["metadata"]["name"].as_str().unwrap()),
            "executors find the scheduler by its Service"
        );
    }

    #[test]
    fn the_nightly_spec_parses_and_names_the_cluster_service() {
        let files = k8s();
        let docs = &files["nightly-cronjob.yaml"];
        let map = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("ConfigMap"))
            .unwrap();
        let text = map["data"]["nightly.toml"].as_str().unwrap();
        let spec = blindspot::spec::parse(Path::new("nightly.toml"), text).unwrap();
        // The same chain as the shipped nightly spec, ending with the report into a bucket.
        let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nightly.toml");
        let shipped_text = std::fs::read_to_string(&shipped_path).unwrap();
        let shipped = blindspot::spec::parse(&shipped_path, &shipped_text).unwrap();
        assert_eq!(spec.run.stages, shipped.run.stages);
        assert_eq!(spec.run.stages.last().map(String::as_str), Some("report"));
        assert!(spec
            .report
            .out
            .as_deref()
            .is_some_and(|o| o.starts_with("s3://")));
        let cluster = spec
            .filter
            .cluster
            .clone()
            .expect("the filter runs on the cluster");
        assert!(blindspot::cluster::scheduler_url(&cluster).is_ok());
        assert!(cluster.contains("blindspot-scheduler:50050"));
        let cron = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("CronJob"))
            .unwrap();
        assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
        let mut cs = Vec::new();
        containers(cron, &mut cs);
        let line = argv(cs[0]);
        assert_eq!(
            line[1..3],
            ["run".to_string(), "/etc/blindspot/nightly.toml".to_string()]
        );
    }

    /// The `srun blindspot ...` command of a batch script, continuation lines joined.
    fn srun(script: &str) -> Vec<String> {
        let joined = script.replace("\\\n", " ");
        let line = joined
            .lines()
            .find(|l| l.trim_start().starts_with("srun blindspot"))
            .expect("an srun blindspot line");
        substitute(line, &[])
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect()
    }

    fn array_size(script: &str) -> u32 {
        let spec = script
            .lines()
            .find_map(|l| l.strip_prefix("#SBATCH --array="))
            .expect("an array job");
        let (a, b) = spec.split_once('-').unwrap();
        b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1
    }

    #[test]
    fn slurm_scripts_run_valid_commands_and_the_array_matches_the_workers() {
        let dir = deploy().join("slurm");
        let embed = std::fs::read_to_string(dir.join("embed-array.sbatch")).unwrap();
        let argv = srun(&embed);
        parses(&argv, "embed-array.sbatch");
        assert_eq!(
            worker_n(&argv),
            Some(array_size(&embed)),
            "--worker N = array size"
        );
        let claim = std::fs::read_to_string(dir.join("candidates-claim.sbatch")).unwrap();
        let argv = srun(&claim);
        parses(&argv, "candidates-claim.sbatch");
        assert!(argv.iter().any(|a| a == "--claim"));
        assert!(array_size(&claim) > 1);
    }
}
