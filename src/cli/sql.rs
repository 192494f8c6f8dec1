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
    let (ctx, tables) = blindspot::sql::session(&root).await?;
    if a.format == OutputFormat::Parquet && a.output.is_none() {
        anyhow::bail!(blindspot::Error::Usage(
            "--format parquet needs --output FILE".into()
        ));
    }
    if let Some(q) = &a.query {
        return run_query(&ctx, &tables, q, a.format, a.output.as_deref()).await;
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "blindspot sql on {} (tables: {}); end queries with `;`, \\q to quit",
            root.url,
            tables.join(", ")
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
            if let Err(e) = run_query(
                &ctx,
                &tables,
                q.trim().trim_end_matches(';'),
                a.format,
                None,
            )
            .await
            {
                eprintln!("error: {e:#}");
            }
        }
    }
    if !pending.trim().is_empty() {
        run_query(
            &ctx,
            &tables,
            pending.trim().trim_end_matches(';'),
            a.format,
            None,
        )
        .await?;
    }
    Ok(())
}

async fn run_query(
    ctx: &datafusion::prelude::SessionContext,
    tables: &[String],
    q: &str,
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    let df = blindspot::sql::query(ctx, tables, q).await?;
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
