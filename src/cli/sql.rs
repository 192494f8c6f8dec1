//! `blindspot sql`: one query, or an interactive prompt, over a run root's tables.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use blindspot::storage::Location;
use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// Run root whose tables are registered.
    #[arg(long)]
    pub root: String,
    /// The query; without it, an interactive prompt reads queries ending in `;`.
    pub query: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout (required for parquet).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Run the query on a Ballista cluster (`blindspot cluster scheduler`) at df://HOST:PORT;
    /// every executor must reach the run root.
    #[arg(long, value_name = "df://HOST:PORT", env = "BLINDSPOT_CLUSTER")]
    pub cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

pub async fn sql_cmd(a: SqlArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    let (ctx, tables) = match &a.cluster {
        None => blindspot::sql::session(&root).await?,
        Some(url) => blindspot::cluster::session(&root, url).await?,
    };
    // Catalog statements (SHOW TABLES, DESCRIBE) are answered here even with --cluster.
    let (ctx, local) = match a.cluster.is_some() {
        true => (ctx, Some(blindspot::sql::session(&root).await?.0)),
        false => (ctx, None),
    };
    let on_cluster = a.cluster.is_some();
    if a.format == OutputFormat::Parquet && a.output.is_none() {
        anyhow::bail!(blindspot::Error::Usage(
            "--format parquet needs --output FILE".into()
        ));
    }
    if let Some(q) = &a.query {
        return run_query(
            pick(&ctx, &local, q),
            &tables,
            q,
            a.format,
            a.output.as_deref(),
            on_cluster,
        )
        .await;
    }
    let session = Session {
        ctx: &ctx,
        local: &local,
        tables: &tables,
        format: a.format,
        on_cluster,
    };
    session.repl(&root).await?;
    Ok(())
}

/// A session's queries read from standard input, one per `;`.
struct Session<'a> {
    ctx: &'a datafusion::prelude::SessionContext,
    local: &'a Option<datafusion::prelude::SessionContext>,
    tables: &'a [String],
    format: OutputFormat,
    on_cluster: bool,
}

impl Session<'_> {
    async fn run(&self, q: &str) -> Result<()> {
        let ctx = pick(self.ctx, self.local, q);
        run_query(ctx, self.tables, q, self.format, None, self.on_cluster).await
    }

    /// Reads queries until end of input or `\q`, printing each result (and each error, without
    /// stopping); a prompt on a terminal.
    async fn repl(&self, root: &Location) -> Result<()> {
        let interactive = std::io::stdin().is_terminal();
        if interactive {
            eprintln!(
                "blindspot sql on {} (tables: {}); end queries with `;`, \\q to quit",
                root.url,
                self.tables.join(", ")
            );
        }
        let mut pending = String::new();
        let mut line = String::new();
        loop {
            if interactive {
                eprint!(
                    "{}",
                    if pending.is_empty() {
                        "blindspot> "
                    } else {
                        "      ...> "
                    }
                );
            }
            line.clear();
            if std::io::stdin().read_line(&mut line)? == 0 {
                break;
            }
            let trimmed = line.trim();
            if pending.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit") {
                break;
            }
            pending.push_str(&line);
            if trimmed.ends_with(';') {
                let q = std::mem::take(&mut pending);
                let q = q.trim().trim_end_matches(';');
                if let Err(e) = self.run(q).await {
                    eprintln!("error: {e:#}");
                }
            }
        }
        if !pending.trim().is_empty() {
            let q = pending.trim().trim_end_matches(';');
            self.run(q).await?;
        }
        Ok(())
    }
}

/// The session for `q`: the local one for catalog statements when a cluster runs the rest.
fn pick<'a>(
    ctx: &'a datafusion::prelude::SessionContext,
    local: &'a Option<datafusion::prelude::SessionContext>,
    q: &str,
) -> &'a datafusion::prelude::SessionContext {
    match local {
        Some(l) if blindspot::sql::is_catalog_query(q) => l,
        _ => ctx,
    }
}

async fn run_query(
    ctx: &datafusion::prelude::SessionContext,
    tables: &[String],
    q: &str,
    format: OutputFormat,
    output: Option<&Path>,
    on_cluster: bool,
) -> Result<()> {
    let df = blindspot::sql::query(ctx, tables, q).await?;
    if on_cluster && !blindspot::sql::is_catalog_query(q) {
        let plan = df
            .clone()
            .into_optimized_plan()
            .map_err(|e| blindspot::Error::Usage(e.to_string()))?;
        blindspot::cluster::check_no_float16_literals(&plan)?;
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = blindspot::sql::collect(df).await?;
    let mut out: Box<dyn std::io::Write + Send> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    match format {
        OutputFormat::Table => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(&batches)?
        )?,
        OutputFormat::Csv => {
            let mut w = arrow::csv::Writer::new(out);
            for b in &batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
            for b in &batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Run root to report on.
    #[arg(long)]
    pub root: String,
    /// The embed input, to count the shards not embedded yet.
    #[arg(long)]
    pub input: Option<String>,
    /// Also read every committed object and check its bytes against the BLAKE3 hash recorded
    /// when it was written (exit 1, naming them, when any differ).
    #[arg(long)]
    pub verify: bool,
    /// Print the status as JSON on stdout (for schedulers).
    #[arg(long)]
    pub json: bool,
}

/// `blindspot status`.
pub async fn status_cmd(a: StatusArgs) -> Result<()> {
    let root = Location::open(&a.root)?;
    if a.verify {
        let v = blindspot::table::Catalog::new(&root).verify().await?;
        super::report(a.json, &v, || {
            let mut t = format!(
                "verify: {} objects checked ({:.1} MiB read), {} written before hashes were recorded, {} damaged",
                v.checked,
                v.bytes as f64 / (1 << 20) as f64,
                v.unchecked,
                v.damaged.len()
            );
            for (uri, why) in &v.damaged {
                t += &format!("\n  {uri}: {why}");
            }
            t
        });
        if !v.damaged.is_empty() {
            anyhow::bail!(blindspot::Error::table(
                "verify",
                format!(
                    "{} damaged objects in {} (first: {})",
                    v.damaged.len(),
                    root.url,
                    v.damaged[0].0
                )
            ));
        }
        return Ok(());
    }
    let input = a.input.as_deref().map(Location::open).transpose()?;
    let s = blindspot::status::status(&root, input.as_ref()).await?;
    super::report(a.json, &s, || blindspot::status::text(&s));
    Ok(())
}

/// `blindspot cluster ...`: Ballista's scheduler and executor with blindspot's functions and
/// object stores.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Run a scheduler (clients connect with --cluster df://HOST:PORT; REST API and
    /// /healthz on the same port).
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:50050")]
        bind: std::net::SocketAddr,
        /// Host name executors and clients use for this scheduler.
        #[arg(long, default_value = "localhost")]
        external_host: String,
        /// Seconds without a heartbeat after which an executor is dropped.
        #[arg(long, default_value_t = 60)]
        executor_timeout: u64,
    },
    /// Run an executor that registers with a scheduler (Arrow Flight on --bind, gRPC on the
    /// next port).
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long)]
        scheduler: String,
        /// Address of this executor's Arrow Flight service; gRPC takes the next port.
        #[arg(long, default_value = "0.0.0.0:50051")]
        bind: std::net::SocketAddr,
        /// Host name the scheduler and other executors use to reach this one (default: the
        /// bind address; set it to the pod IP or host name on a cluster).
        #[arg(long)]
        external_host: Option<String>,
        /// Directory for shuffle files and spills.
        #[arg(long)]
        work_dir: Option<String>,
        /// Tasks run at once (default: the cores).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, default_value_t = 5)]
        heartbeat: u64,
    },
}

pub async fn cluster_cmd(c: ClusterCommand) -> Result<()> {
    match c {
        ClusterCommand::Scheduler {
            bind,
            external_host,
            executor_timeout,
        } => {
            eprintln!("blindspot cluster scheduler listening on {bind} (clients: --cluster df://{external_host}:{})", bind.port());
            blindspot::cluster::scheduler(blindspot::cluster::SchedulerParams {
                bind,
                external_host,
                executor_timeout_seconds: executor_timeout,
            })
            .await?;
        }
        ClusterCommand::Executor {
            scheduler,
            bind,
            external_host,
            work_dir,
            concurrency,
            heartbeat,
        } => {
            let (host, port) = scheduler.rsplit_once(':').ok_or_else(|| {
                blindspot::Error::Usage(format!("--scheduler {scheduler}: use HOST:PORT"))
            })?;
            let port: u16 = port.parse().map_err(|_| {
                blindspot::Error::Usage(format!("--scheduler {scheduler}: {port} is not a port"))
            })?;
            let concurrency = concurrency.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            eprintln!("blindspot cluster executor on {bind} for scheduler {host}:{port}, {concurrency} tasks at once");
            blindspot::cluster::executor(blindspot::cluster::ExecutorParams {
                scheduler_host: host.to_string(),
                scheduler_port: port,
                bind,
                external_host,
                work_dir,
                concurrency,
                heartbeat_seconds: heartbeat,
            })
            .await?;
        }
    }
    Ok(())
}
