//! The unit-of-work runner that every stage with units uses (embed, dino, candidates, filter):
//! how a run takes the run lock or shares the root with other workers, which units are its,
//! how each is leased, committed once and released, and what a run counts. A stage says what
//! its units are and what doing one makes; the protocol is written here once.
//!
//! - [`Sharing`]: the whole root (`All`, under the stage's run lock), every n-th unit
//!   (`Worker(i, n)`, `--worker i/N`) or leased units (`Claim`, `--claim`), checked once.
//! - [`exclusive`]: runs a stage's body under its run lock unless workers share the root.
//! - [`Runner::drive`]: does units (a few at once, or leased one at a time) and commits each;
//!   [`Runner::queue`] hands units out one by one for stages whose commits happen elsewhere
//!   (embed's pipeline); [`Runner::finish`] gives back leases and sweeps those left behind.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lease::{self, ClaimParams, Claimable, Claims};
use crate::progress::Progress;
use crate::stage::Stage;
use crate::storage::{Location, RunLock};
use crate::table::{Catalog, Commit, CommitSet};

/// How a run shares a stage's units with other runs on the same root.
#[derive(Clone, Debug, Default)]
pub enum Sharing {
    /// Every unit; the run holds the stage's run lock.
    #[default]
    All,
    /// Worker `i` of `n`: every unit whose number is `i` modulo `n` (no lock).
    Worker(u32, u32),
    /// Units leased one at a time from any number of workers (no lock).
    Claim(ClaimParams),
}

impl Sharing {
    /// The sharing of the command line's `--worker i/N` and `--claim` (one at most).
    pub fn new(worker: Option<(u32, u32)>, claim: Option<&ClaimParams>) -> Result<Sharing> {
        match (worker, claim) {
            (Some(_), Some(_)) => Err(Error::Usage(
                "--worker and --claim are two ways to share units; pass one".into(),
            )),
            (Some((i, n)), None) if n == 0 || i >= n => {
                Err(Error::Usage(format!("worker {i}/{n}: need 0 <= i < n")))
            }
            (Some((i, n)), None) => Ok(Sharing::Worker(i, n)),
            (None, Some(c)) => Ok(Sharing::Claim(c.clone())),
            (None, None) => Ok(Sharing::All),
        }
    }

    /// Whether unit number `index` is this run's.
    pub fn takes(&self, index: u64) -> bool {
        match self {
            Sharing::Worker(i, n) => index % *n as u64 == *i as u64,
            _ => true,
        }
    }

    /// Whether the unit named `name` is this run's (units without a stable number: a hash of
    /// the name decides).
    pub fn takes_name(&self, name: &str) -> bool {
        let h = blake3::hash(name.as_bytes());
        self.takes(u64::from_le_bytes(
            h.as_bytes()[..8].try_into().expect("8 bytes"),
        ))
    }

    /// True when other runs may work on the root at the same time (no run lock).
    pub fn shared(&self) -> bool {
        !matches!(self, Sharing::All)
    }

    /// True when units are leased.
    pub fn claiming(&self) -> bool {
        matches!(self, Sharing::Claim(_))
    }
}

/// Runs `body` for `stage` on `root`: under the stage's run lock when the run has the root to
/// itself, released whatever `body` returns; without it when workers share the root (they
/// commit unit by unit).
pub async fn exclusive<T>(
    root: &Location,
    stage: Stage,
    sharing: &Sharing,
    body: impl Future<Output = Result<T>>,
) -> Result<T> {
    match sharing.shared() {
        true => body.await,
        false => locked(root, stage, body).await,
    }
}

/// Runs `body` under `stage`'s run lock on `root` (one run of a stage at a time), released
/// whatever `body` returns.
pub async fn locked<T>(
    root: &Location,
    stage: Stage,
    body: impl Future<Output = Result<T>>,
) -> Result<T> {
    let lock = RunLock::acquire(root, stage.name()).await?;
    let result = body.await;
    lock.release().await;
    result
}

/// What became of a unit [`Runner::drive`] was given.
pub enum Outcome<U, R> {
    /// This run did it and its commit is visible.
    Committed(R),
    /// This run did it, but another worker committed it first (after a lease expired under
    /// this one); this run's objects were deleted.
    Discarded(R),
    /// Another worker committed it while this run waited.
    ByOthers(U),
}

/// What [`Queue::next`] hands out.
pub enum Turn<U> {
    /// Do this unit (leased to this run when claiming).
    Do(U),
    /// Another worker committed it.
    ByOthers(U),
}

/// Counts of a run's units, for its summary.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// Units this run committed.
    pub committed: usize,
    /// Claiming: units committed by other workers while this one ran.
    pub by_others: usize,
    /// Claiming: units this run did but another committed first (objects deleted).
    pub discarded: usize,
}

/// Runs a stage's units on one root.
#[derive(Clone)]
pub struct Runner {
    catalog: Catalog,
    stage: Stage,
    set: CommitSet,
    claims: Option<Arc<Claims>>,
}

impl Runner {
    /// A runner of `stage`'s units, shared as `sharing` says.
    pub fn new(catalog: &Catalog, stage: Stage, sharing: &Sharing) -> Result<Runner> {
        let set = stage
            .commits()
            .ok_or_else(|| Error::Internal(format!("{stage} has no units")))?;
        let claims = match sharing {
            Sharing::Claim(params) => {
                let dir = stage
                    .leases()
                    .ok_or_else(|| Error::Usage(format!("{stage} cannot claim units")))?;
                Some(Arc::new(Claims::new(catalog.root(), dir, params)?))
            }
            _ => None,
        };
        Ok(Runner {
            catalog: catalog.clone(),
            stage,
            set,
            claims,
        })
    }

    /// True when units are leased.
    pub fn claiming(&self) -> bool {
        self.claims.is_some()
    }

    /// The run root's catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// What the names of a unit's objects end with: a claiming run writes objects of its own
    /// (two may do one unit after a lease expired), so it adds its generation.
    pub fn suffix(&self, generation: u64) -> String {
        match self.claiming() {
            true => format!("-g{generation}"),
            false => String::new(),
        }
    }

    /// Starts the run's progress: `what` units, counted when not claiming.
    pub fn start(&self, progress: &dyn Progress, what: &str, total: Option<u64>) {
        let (how, total) = match self.claiming() {
            true => ("claimed", None),
            false => ("", total),
        };
        let label = match (what.is_empty(), how.is_empty()) {
            (true, _) => self.stage.to_string(),
            (false, true) => format!("{} ({what})", self.stage),
            (false, false) => format!("{} ({what}, {how})", self.stage),
        };
        progress.start(&label, total);
    }

    /// The units, handed out one by one: when claiming, each is leased first, units other
    /// workers committed are reported, and units others hold come back until they are
    /// committed or their leases expire.
    pub fn queue<U>(
        &self,
        units: Vec<U>,
        name: impl Fn(&U) -> String,
    ) -> Queue<U, impl Fn(&U) -> String> {
        Queue {
            runner: self.clone(),
            left: units.into(),
            held: Vec::new(),
            name,
        }
    }

    /// Makes a unit's commit visible: when claiming, only if no other worker committed the
    /// unit first (then its objects are deleted and this returns false), and the lease ends.
    pub async fn commit(&self, commit: &Commit) -> Result<bool> {
        match &self.claims {
            Some(claims) => lease::commit_claimed(claims, &self.catalog, self.set, commit).await,
            None => self.catalog.commit(self.set, commit).await.map(|()| true),
        }
    }

    /// Does every unit: `work` writes a unit's objects and returns its record and the commit
    /// naming them; the runner commits it and tells `done` what became of the unit. Up to
    /// `at_once` units are in flight (leased units: one at a time).
    pub async fn drive<U, R, F, Fut>(
        &self,
        units: Vec<U>,
        name: impl Fn(&U) -> String,
        at_once: usize,
        mut work: F,
        mut done: impl FnMut(Outcome<U, R>),
    ) -> Result<Tally>
    where
        F: FnMut(U) -> Fut,
        Fut: Future<Output = Result<(R, Commit)>>,
    {
        let mut tally = Tally::default();
        if !self.claiming() {
            let mut runs = futures::stream::iter(units.into_iter().map(&mut work))
                .buffer_unordered(at_once.max(1));
            while let Some(run) = runs.next().await {
                let (record, commit) = run?;
                self.catalog.commit(self.set, &commit).await?;
                tally.committed += 1;
                done(Outcome::Committed(record));
            }
            return Ok(tally);
        }
        let mut queue = self.queue(units, name);
        while let Some(turn) = queue.next().await? {
            match turn {
                Turn::Do(unit) => {
                    let (record, commit) = work(unit).await?;
                    match self.commit(&commit).await? {
                        true => {
                            tally.committed += 1;
                            done(Outcome::Committed(record));
                        }
                        false => {
                            tally.discarded += 1;
                            done(Outcome::Discarded(record));
                        }
                    }
                }
                Turn::ByOthers(unit) => {
                    tally.by_others += 1;
                    done(Outcome::ByOthers(unit));
                }
            }
        }
        Ok(tally)
    }

    /// Ends the run whatever `result` is: gives back the leases still held (a run stopping
    /// early), then, when it succeeded, deletes the expired leases of committed units.
    pub async fn finish<T>(&self, result: Result<T>) -> Result<T> {
        let Some(claims) = &self.claims else {
            return result;
        };
        claims.release_all().await;
        let value = result?;
        claims.sweep(&self.catalog, self.set).await?;
        Ok(value)
    }
}

/// Units handed out one by one ([`Runner::queue`]).
pub struct Queue<U, N> {
    runner: Runner,
    left: VecDeque<U>,
    held: Vec<U>,
    name: N,
}

impl<U, N: Fn(&U) -> String> Queue<U, N> {
    /// The next unit, or None when every unit was handed out (claiming: done by someone).
    pub async fn next(&mut self) -> Result<Option<Turn<U>>> {
        let Some(claims) = self.runner.claims.clone() else {
            return Ok(self.left.pop_front().map(Turn::Do));
        };
        loop {
            let Some(unit) = self.left.pop_front() else {
                if self.held.is_empty() {
                    return Ok(None);
                }
                // Units leased by live workers: wait for their commits or for the leases to
                // expire, then look again.
                tokio::time::sleep(claims.poll_every()).await;
                self.left = std::mem::take(&mut self.held).into();
                continue;
            };
            let name = (self.name)(&unit);
            match claims
                .try_unit(&self.runner.catalog, self.runner.set, &name)
                .await?
            {
                Claimable::Mine => return Ok(Some(Turn::Do(unit))),
                Claimable::Done => return Ok(Some(Turn::ByOthers(unit))),
                Claimable::Held => self.held.push(unit),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_is_checked_once_and_splits_units_evenly() {
        assert!(Sharing::new(Some((2, 2)), None).is_err());
        assert!(Sharing::new(Some((0, 0)), None).is_err());
        assert!(Sharing::new(Some((0, 2)), Some(&ClaimParams::default())).is_err());
        assert!(!Sharing::new(None, None).unwrap().shared());
        let w = Sharing::new(Some((1, 3)), None).unwrap();
        assert!(w.shared() && !w.claiming());
        assert_eq!(
            (0..9).filter(|i| w.takes(*i)).collect::<Vec<_>>(),
            [1, 4, 7]
        );
        // Every unit is some worker's, and only one's.
        let workers: Vec<Sharing> = (0..3).map(|i| Sharing::Worker(i, 3)).collect();
        for name in ["a", "part-00001", "shard/7"] {
            assert_eq!(workers.iter().filter(|w| w.takes_name(name)).count(), 1);
        }
    }

    #[tokio::test]
    async fn drive_commits_every_unit_and_reports_it() {
        let root = Location::open("memory://units").unwrap();
        let catalog = Catalog::new(&root);
        let runner = Runner::new(&catalog, Stage::Filter, &Sharing::All).unwrap();
        let mut seen = Vec::new();
        let tally = runner
            .drive(
                vec![1u32, 2, 3],
                |u| u.to_string(),
                2,
                |u| async move {
                    let commit = Commit::new(&format!("u{u}"), 1, &serde_json::json!({}))?;
                    Ok((u * 10, commit))
                },
                |o| {
                    if let Outcome::Committed(r) = o {
                        seen.push(r)
                    }
                },
            )
            .await
            .unwrap();
        seen.sort();
        assert_eq!(seen, [10, 20, 30]);
        assert_eq!(tally.committed, 3);
        assert_eq!(
            catalog.commits_of(CommitSet::FILTER).await.unwrap().len(),
            3
        );
    }
}
