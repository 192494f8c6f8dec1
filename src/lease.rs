//! Leases: how any number of workers share one stage's units (input shards, mining cells)
//! with no coordinator but the run root itself.
//!
//! A worker claims a unit by creating `_leases/<stage>/<unit>/e<epoch>.json` with a
//! conditional put (`PutMode::Create`, which S3, GCS, Azure, local files and memory all
//! honour), so exactly one of any number of racing workers gets epoch 1. While it works it
//! renews the lease (rewrites its own epoch object) every third of the lease's time to live. A
//! lease not renewed within that time, or left by a dead process on this host, has expired: the
//! next worker takes the unit by creating epoch + 1, which again only one can do. A holder that
//! sees a higher epoch has lost the unit and stops renewing it.
//!
//! A lease only shares out work; what makes a unit done exactly once is its commit, which
//! claiming workers write with [`Catalog::commit_once`]: if a slow holder whose lease expired
//! finishes anyway, its commit finds the other's and its objects are deleted. The commit is
//! the done marker; the lease objects are deleted after it.
//!
//! Clocks: expiry compares the lease's renewal time with this machine's clock, so workers'
//! clocks must agree to well within the time to live (NTP does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{hostname, now_unix, pid_alive, Location};
use crate::table::{Catalog, Commit, CommitSet};

/// Where leases live under a run root.
pub const LEASES: &str = "_leases";

/// The default time to live of a lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// One lease object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// The unit leased.
    pub unit: String,
    /// 1 for the first claim, one more for each takeover.
    pub epoch: u32,
    /// The holder's worker id.
    pub worker: String,
    /// The holder's host and process.
    pub host: String,
    /// The holder's process id on `host`.
    pub pid: u32,
    /// When this epoch was claimed (Unix seconds).
    pub claimed_unix: u64,
    /// When it was last renewed (Unix seconds).
    pub renewed_unix: u64,
    /// Seconds after the last renewal at which the lease expires.
    pub ttl_seconds: u64,
}

impl Lease {
    /// True when another worker may take the unit at Unix time `now`.
    pub fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.renewed_unix) > self.ttl_seconds
            || (self.host == hostname() && !pid_alive(self.pid))
    }
}

/// How a worker claims.
#[derive(Clone, Debug)]
pub struct ClaimParams {
    /// The worker's id in lease objects and `blindspot status`; default `<host>-<pid>`.
    pub worker: Option<String>,
    /// Time to live of a lease after each renewal.
    pub ttl: Duration,
}

impl Default for ClaimParams {
    fn default() -> Self {
        ClaimParams {
            worker: None,
            ttl: DEFAULT_TTL,
        }
    }
}

/// What a claiming worker may do with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimable {
    /// Leased to this worker now: do it, then commit with [`commit_claimed`].
    Mine,
    /// Committed already.
    Done,
    /// Leased to another live worker.
    Held,
}

/// This worker's leases on one stage of a run root, renewed in the background while held.
pub struct Claims {
    root: Location,
    stage: String,
    worker: String,
    ttl: Duration,
    held: Arc<Mutex<HashMap<String, Lease>>>,
    lost: Arc<Mutex<HashSet<String>>>,
    /// Held while a renewal writes or `done` deletes, so a renewal never re-creates the lease
    /// of a unit just committed.
    writing: Arc<tokio::sync::Mutex<()>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn dir_of(stage: &str, unit: &str) -> String {
    format!("{LEASES}/{stage}/{unit}")
}

fn epoch_path(stage: &str, unit: &str, epoch: u32) -> String {
    format!("{}/e{epoch:06}.json", dir_of(stage, unit))
}

fn epoch_of(rel: &str) -> Option<u32> {
    rel.rsplit('/')
        .next()?
        .strip_prefix('e')?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn encode(lease: &Lease) -> PutPayload {
    PutPayload::from(serde_json::to_vec_pretty(lease).unwrap_or_default())
}

impl Claims {
    /// Starts claiming units of `stage` on `root`.
    pub fn new(root: &Location, stage: &str, params: &ClaimParams) -> Result<Claims> {
        if params.ttl < Duration::from_secs(2) {
            return Err(Error::Usage(format!(
                "--lease-ttl {}s is too short to renew in time; use at least 2 seconds",
                params.ttl.as_secs_f64()
            )));
        }
        let worker = params
            .worker
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        if worker.is_empty() || worker.contains('/') {
            return Err(Error::Usage(format!(
                "worker id {worker:?} must be non-empty and without '/'"
            )));
        }
        let held: Arc<Mutex<HashMap<String, Lease>>> = Default::default();
        let lost: Arc<Mutex<HashSet<String>>> = Default::default();
        let writing: Arc<tokio::sync::Mutex<()>> = Default::default();
        let renewer = tokio::spawn(renew(
            root.clone(),
            stage.to_string(),
            params.ttl,
            held.clone(),
            lost.clone(),
            writing.clone(),
        ));
        Ok(Claims {
            root: root.clone(),
            stage: stage.to_string(),
            worker,
            ttl: params.ttl,
            held,
            lost,
            writing,
            renewer,
        })
    }

    fn holds(&self, unit: &str) -> bool {
        self.held
            .lock()
            .expect("lease map poisoned")
            .contains_key(unit)
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn lease(&self, unit: &str, epoch: u32) -> Lease {
        let now = now_unix();
        Lease {
            unit: unit.to_string(),
            epoch,
            worker: self.worker.clone(),
            host: hostname(),
            pid: std::process::id(),
            claimed_unix: now,
            renewed_unix: now,
            ttl_seconds: self.ttl.as_secs().max(1),
        }
    }

    /// Tries to lease `unit`; true when this worker now holds it. False when a live lease of
    /// another worker holds it, or when it was done meanwhile (its lease objects are gone).
    pub async fn claim(&self, unit: &str) -> Result<bool> {
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let mut epoch = 1;
        for _ in 0..4 {
            let lease = self.lease(unit, epoch);
            let path = self.root.path(&epoch_path(&self.stage, unit, epoch));
            match self
                .root
                .store
                .put_opts(&path, encode(&lease), create.clone())
                .await
            {
                Ok(_) => {
                    self.held
                        .lock()
                        .expect("lease map poisoned")
                        .insert(unit.to_string(), lease);
                    return Ok(true);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    match current(&self.root, &self.stage, unit).await? {
                        // Every epoch deleted between our put and the listing: done meanwhile.
                        None => return Ok(false),
                        // Expired, or left by an earlier process with this worker id (a
                        // restarted pod keeps its name, and often its pid).
                        Some(l)
                            if l.epoch >= epoch
                                && (l.expired(now_unix())
                                    || (l.worker == self.worker && !self.holds(unit))) =>
                        {
                            tracing::info!(unit, holder = %l.worker, epoch = l.epoch, "taking over an expired lease");
                            epoch = l.epoch + 1;
                        }
                        Some(l) if l.epoch >= epoch => return Ok(false),
                        // A listing that lags the put we lost: look again.
                        Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    return Err(Error::Usage(format!(
                        "{} does not support conditional puts, which --claim needs; use --worker i/N instead",
                        self.root.url
                    )))
                }
                Err(e) => return Err(Error::storage(self.root.uri_of(&path), e)),
            }
        }
        Ok(false)
    }

    /// Claims `unit` if it is not committed in `set` yet: true when this worker holds it and
    /// should do it.
    pub async fn claim_pending(
        &self,
        catalog: &Catalog,
        set: CommitSet,
        unit: &str,
    ) -> Result<bool> {
        if !self.claim(unit).await? {
            return Ok(false);
        }
        if catalog.commit_of(set, unit).await?.is_some() {
            self.done(unit).await;
            return Ok(false);
        }
        Ok(true)
    }

    /// What this worker may do with `unit` of `set`: claim it and do it, skip it (done), or
    /// come back later (a live lease of another worker holds it).
    pub async fn try_unit(
        &self,
        catalog: &Catalog,
        set: CommitSet,
        unit: &str,
    ) -> Result<Claimable> {
        if self.claim_pending(catalog, set, unit).await? {
            return Ok(Claimable::Mine);
        }
        Ok(match catalog.commit_of(set, unit).await? {
            Some(_) => Claimable::Done,
            None => Claimable::Held,
        })
    }

    /// How long to wait before looking again at units leased by others.
    pub fn poll_every(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(10))
    }

    /// True when another worker took `unit` over after this one's lease expired.
    pub fn lost(&self, unit: &str) -> bool {
        self.lost.lock().expect("lease map poisoned").contains(unit)
    }

    /// The unit is committed (by this worker or, after a takeover, another): stops renewing
    /// and deletes its lease objects.
    pub async fn done(&self, unit: &str) {
        let _writing = self.writing.lock().await;
        self.held.lock().expect("lease map poisoned").remove(unit);
        self.lost.lock().expect("lease map poisoned").remove(unit);
        let objects = match self.root.list(&dir_of(&self.stage, unit)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(unit, error = %e, "could not list the unit's lease objects");
                return;
            }
        };
        for o in objects {
            match self.root.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(unit, error = %e, "could not delete a lease object"),
            }
        }
    }

    /// Deletes the expired leases of committed units. They are left when a worker dies
    /// between claiming a unit that another had just committed and noticing the commit, and
    /// nothing would come back for them. Called when a claiming run ends.
    pub async fn sweep(&self, catalog: &Catalog, set: CommitSet) -> Result<usize> {
        let now = now_unix();
        let mut swept = 0;
        for l in leases(&self.root, &self.stage).await? {
            if l.expired(now) && catalog.commit_of(set, &l.unit).await?.is_some() {
                self.done(&l.unit).await;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Gives back every unit still held (a worker stopping early), so that others need not
    /// wait for the leases to expire.
    pub async fn release_all(&self) {
        let units: Vec<String> = self
            .held
            .lock()
            .expect("lease map poisoned")
            .keys()
            .cloned()
            .collect();
        for unit in units {
            let epoch = self.held.lock().expect("lease map poisoned").remove(&unit);
            if let Some(l) = epoch {
                let path = self.root.path(&epoch_path(&self.stage, &unit, l.epoch));
                let _ = self.root.store.delete(&path).await;
            }
        }
    }
}

/// Commits a claimed unit: writes the commit only if no other worker committed the unit first
/// (a takeover race), then ends the lease. Returns false, after deleting `commit`'s objects,
/// when the other commit won.
pub async fn commit_claimed(
    claims: &Claims,
    catalog: &Catalog,
    set: CommitSet,
    commit: &Commit,
) -> Result<bool> {
    let won = catalog.commit_once(set, commit).await?;
    if !won {
        tracing::warn!(unit = %commit.unit, "another worker committed this unit first; this copy is discarded");
        catalog.discard(commit).await;
    }
    claims.done(&commit.unit).await;
    Ok(won)
}

/// The latest lease of `unit`, if it has any.
async fn current(root: &Location, stage: &str, unit: &str) -> Result<Option<Lease>> {
    let objects = root.list(&dir_of(stage, unit)).await?;
    let Some(top) = objects
        .iter()
        .filter_map(|o| epoch_of(o.location.as_ref()).map(|e| (e, o)))
        .max_by_key(|(e, _)| *e)
    else {
        return Ok(None);
    };
    read(root, &top.1.location).await
}

async fn read(root: &Location, path: &object_store::path::Path) -> Result<Option<Lease>> {
    match root.get_bytes(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("lease {} is not valid: {e}", root.uri_of(path)))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(root.uri_of(path), e)),
    }
}

/// Every unit of `stage` with a lease: its latest epoch.
pub async fn leases(root: &Location, stage: &str) -> Result<Vec<Lease>> {
    let mut top: BTreeMap<String, (u32, object_store::path::Path)> = BTreeMap::new();
    for o in root.list(&format!("{LEASES}/{stage}")).await? {
        let rel = root.relative(&o.location);
        let Some(epoch) = epoch_of(&rel) else {
            continue;
        };
        let Some((unit, _)) = rel
            .strip_prefix(&format!("{LEASES}/{stage}/"))
            .and_then(|r| r.rsplit_once('/'))
        else {
            continue;
        };
        let entry = top
            .entry(unit.to_string())
            .or_insert((0, o.location.clone()));
        if epoch >= entry.0 {
            *entry = (epoch, o.location.clone());
        }
    }
    let mut out = Vec::new();
    for (_, (_, path)) in top {
        if let Some(l) = read(root, &path).await? {
            out.push(l);
        }
    }
    Ok(out)
}

async fn renew(
    root: Location,
    stage: String,
    ttl: Duration,
    held: Arc<Mutex<HashMap<String, Lease>>>,
    lost: Arc<Mutex<HashSet<String>>>,
    writing: Arc<tokio::sync::Mutex<()>>,
) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let leases: Vec<Lease> = held
            .lock()
            .expect("lease map poisoned")
            .values()
            .cloned()
            .collect();
        for mut lease in leases {
            match current(&root, &stage, &lease.unit).await {
                Ok(Some(c)) if c.epoch > lease.epoch => {
                    tracing::warn!(unit = %lease.unit, by = %c.worker, "lease taken over by another worker; this worker's copy will not be committed if theirs is first");
                    held.lock().expect("lease map poisoned").remove(&lease.unit);
                    lost.lock()
                        .expect("lease map poisoned")
                        .insert(lease.unit.clone());
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(unit = %lease.unit, error = %e, "could not check a lease");
                    continue;
                }
            }
            lease.renewed_unix = now_unix();
            let _writing = writing.lock().await;
            let still_held = held
                .lock()
                .expect("lease map poisoned")
                .contains_key(&lease.unit);
            if !still_held {
                continue;
            }
            let path = root.path(&epoch_path(&stage, &lease.unit, lease.epoch));
            if let Err(e) = root.store.put(&path, encode(&lease)).await {
                tracing::warn!(unit = %lease.unit, error = %e, "could not renew a lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(worker: &str, ttl: u64) -> ClaimParams {
        ClaimParams {
            worker: Some(worker.into()),
            ttl: Duration::from_secs(ttl),
        }
    }

    #[tokio::test]
    async fn one_of_racing_workers_gets_a_unit() {
        let root = Location::open("memory://lease-race/root").unwrap();
        let workers: Vec<Claims> = (0..5)
            .map(|i| Claims::new(&root, "embed", &params(&format!("w{i}"), 60)).unwrap())
            .collect();
        let won = futures::future::join_all(workers.iter().map(|w| w.claim("u1"))).await;
        let winners = won.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(winners, 1);
        let listed = leases(&root, "embed").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].epoch, 1);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_once_and_the_holder_learns_it() {
        let root = Location::open("memory://lease-expiry/root").unwrap();
        let a = Claims::new(&root, "candidates", &params("a", 2)).unwrap();
        assert!(a.claim("c1").await.unwrap());
        let b = Claims::new(&root, "candidates", &params("b", 2)).unwrap();
        let c = Claims::new(&root, "candidates", &params("c", 2)).unwrap();
        // Live (renewed): nobody else gets it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!b.claim("c1").await.unwrap());
        // The holder stops renewing (as a killed process would).
        a.renewer.abort();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let (rb, rc) = tokio::join!(b.claim("c1"), c.claim("c1"));
        assert_eq!([rb.unwrap(), rc.unwrap()].iter().filter(|x| **x).count(), 1);
        let now = leases(&root, "candidates").await.unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].epoch, 2);
        assert_ne!(now[0].worker, "a");
    }

    #[tokio::test]
    async fn done_deletes_the_lease_and_a_short_ttl_is_refused() {
        let root = Location::open("memory://lease-done/root").unwrap();
        let a = Claims::new(&root, "embed", &params("a", 60)).unwrap();
        assert!(a.claim("u").await.unwrap());
        assert!(
            !a.claim("u").await.unwrap(),
            "a held lease is not claimed twice"
        );
        a.done("u").await;
        assert!(leases(&root, "embed").await.unwrap().is_empty());
        assert!(Claims::new(&root, "embed", &params("a", 1)).is_err());
        assert!(Claims::new(&root, "embed", &params("a/b", 60)).is_err());
    }
}
