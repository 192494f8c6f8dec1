//! Where a run root stands, for people and schedulers (`blindspot status`): per stage the
//! units committed, leased (by whom, since when, expired or not) and still pending, and the
//! rows of every table so far. Read-only: commits, leases and (for embed's pending shards) an
//! optional listing of the input.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{self, IngestParams};
use crate::lease::{self, Lease};
use crate::mine::cells::Layout;
use crate::stage::Stage;
use crate::storage::{now_unix, Location};
use crate::table::Catalog;

/// One lease as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseRow {
    /// The unit.
    pub unit: String,
    /// Who holds it.
    pub worker: String,
    /// The holder's host and process id.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// 1, plus one per takeover.
    pub epoch: u32,
    /// When the holder claimed it (Unix seconds).
    pub since_unix: u64,
    /// Seconds since its last renewal.
    pub renewed_ago_s: u64,
    /// True when the holder stopped renewing: the next claiming worker takes the unit.
    pub expired: bool,
}

impl LeaseRow {
    fn of(l: Lease, now: u64) -> LeaseRow {
        LeaseRow {
            expired: l.expired(now),
            renewed_ago_s: now.saturating_sub(l.renewed_unix),
            unit: l.unit,
            worker: l.worker,
            host: l.host,
            pid: l.pid,
            epoch: l.epoch,
            since_unix: l.claimed_unix,
        }
    }
}

/// One stage's units.
#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    /// The stage.
    pub stage: &'static str,
    /// Units committed.
    pub done: u64,
    /// Units under a live lease (being worked on now).
    pub leased: u64,
    /// Units whose lease expired without a commit (their worker stopped).
    pub expired: u64,
    /// Units neither committed nor leased, when the stage's units are known (embed needs
    /// `--input`; candidates needs a partitioned root).
    pub pending: Option<u64>,
    /// The leases, live and expired.
    pub leases: Vec<LeaseRow>,
}

/// A run root's status.
#[derive(Clone, Debug, Serialize)]
pub struct RootStatus {
    /// The run root.
    pub root: String,
    /// When this was read (Unix seconds).
    pub at_unix: u64,
    /// The stages with commits or leases, in pipeline order.
    pub stages: Vec<StageStatus>,
    /// Rows per table with committed data.
    pub rows: BTreeMap<String, u64>,
    /// Candidate pairs so far (`candidates` rows).
    pub candidates: u64,
    /// Mined pairs so far (`pairs` rows).
    pub pairs: u64,
}

/// Reads the status of `root`. With `input`, embed's pending shards are counted against the
/// input's listing.
pub async fn status(root: &Location, input: Option<&Location>) -> Result<RootStatus> {
    let catalog = Catalog::new(root);
    let now = now_unix();
    let mut stages = Vec::new();
    for (stage, set) in Stage::with_units() {
        let commits = catalog.commits_of(set).await?;
        // `dino` closes each run with a commit naming what it covered; not a unit of work.
        let done = commits
            .iter()
            .filter(|c| !(stage == Stage::Dino && crate::table::records::DinoCommit::is_closing(c)))
            .count() as u64;
        // A lease whose unit is committed is being deleted by its holder: the unit is done.
        let committed: std::collections::HashSet<&str> =
            commits.iter().map(|c| c.unit.as_str()).collect();
        let leases: Vec<LeaseRow> = lease::leases(root, stage.name())
            .await?
            .into_iter()
            .filter(|l| !committed.contains(l.unit.as_str()))
            .map(|l| LeaseRow::of(l, now))
            .collect();
        let total = match stage {
            Stage::Embed => match input {
                Some(input) => Some(
                    ingest::list_shards(input, &IngestParams::default())
                        .await?
                        .len() as u64,
                ),
                None => None,
            },
            Stage::Candidates => cell_units(&catalog).await?,
            _ => None,
        };
        if done == 0 && leases.is_empty() && total.is_none() {
            continue;
        }
        let expired = leases.iter().filter(|l| l.expired).count() as u64;
        let leased = leases.len() as u64 - expired;
        stages.push(StageStatus {
            stage: stage.name(),
            done,
            leased,
            expired,
            pending: total.map(|t| t.saturating_sub(done + leased + expired)),
            leases,
        });
    }
    let listed = catalog.list().await?;
    if stages.is_empty() && listed.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no commits and no leases: nothing has run there yet (or the path is wrong)",
            root.url
        )));
    }
    let rows: BTreeMap<String, u64> = listed
        .iter()
        .map(|t| (t.name.to_string(), t.rows))
        .collect();
    Ok(RootStatus {
        root: root.url.clone(),
        at_unix: now,
        candidates: rows.get("candidates").copied().unwrap_or(0),
        pairs: rows.get("pairs").copied().unwrap_or(0),
        stages,
        rows,
    })
}

/// Candidates' units on a partitioned root: the non-empty cells of every partition
/// generation.
async fn cell_units(catalog: &Catalog) -> Result<Option<u64>> {
    let Some(layout) = Layout::open(catalog).await? else {
        return Ok(None);
    };
    Ok(Some(
        layout
            .generations
            .iter()
            .map(|(_, record, _)| {
                record.cell_rows.iter().filter(|r| r[0] + r[1] > 0).count() as u64
            })
            .sum(),
    ))
}

/// The status as text: one line per stage, then the leases, then the rows.
pub fn text(s: &RootStatus) -> String {
    let mut out = format!("status of {}\n", s.root);
    out += &format!(
        "  {:<11} {:>9} {:>8} {:>8} {:>9}\n",
        "stage", "done", "leased", "expired", "pending"
    );
    for st in &s.stages {
        out += &format!(
            "  {:<11} {:>9} {:>8} {:>8} {:>9}\n",
            st.stage,
            st.done,
            st.leased,
            st.expired,
            st.pending
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    let leases: Vec<(&str, &LeaseRow)> = s
        .stages
        .iter()
        .flat_map(|st| st.leases.iter().map(move |l| (st.stage, l)))
        .collect();
    if !leases.is_empty() {
        out += "  leases:\n";
        for (stage, l) in leases {
            out += &format!(
                "    {stage} {} held by {} (pid {} on {}, epoch {}) since {}s ago, renewed {}s ago{}\n",
                l.unit,
                l.worker,
                l.pid,
                l.host,
                l.epoch,
                s.at_unix.saturating_sub(l.since_unix),
                l.renewed_ago_s,
                if l.expired { ", EXPIRED" } else { "" }
            );
        }
    }
    out += &format!(
        "  rows: {}\n  candidates {} pairs, mined {} pairs",
        s.rows
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.candidates,
        s.pairs
    );
    out
}
