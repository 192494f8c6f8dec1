//! Apache DataFusion Ballista inside the binary: `blindspot cluster scheduler` and
//! `blindspot cluster executor` are Ballista 55's scheduler and executor, started with
//! blindspot's functions (`cosine_sim`) and object stores (local files, S3, GCS, Azure with
//! credentials from the environment) on both sides, so the stock binaries, which know neither,
//! are not needed. `connect` gives a client session whose queries run on the cluster.
//!
//! What runs where: the client plans a query against the run root's tables (registered
//! exactly as in a local session, `sql::register_root`) and sends the logical plan to the
//! scheduler; the scheduler plans it again with [`session_state`] and splits it into stages;
//! executors decode each task with [`function_registry`] and read Parquet through
//! [`StoreRegistry`]. Every process must therefore reach the run root itself: a local path
//! must be on a shared file system (same path everywhere), and `memory://` roots, which live
//! in one process, cannot be queried on a cluster.
//!
//! Two things Ballista does that blindspot guards against:
//! - `SessionStateBuilder::with_scalar_functions` replaces (rather than adds to) a session's
//!   functions, and a state rebuilt for Ballista starts from the default function set: the
//!   UDFs are therefore registered on the built state, on every side, and [`connect`] checks
//!   that `cosine_sim` survived the upgrade of the client session.
//! - Float16 literals do not survive DataFusion's plan serialisation (a `Float16` scalar is
//!   written as a Float32 value and read back as Float32), and the scheduler plans again with
//!   the Float32 literal: `clip[1] * arrow_cast(3.3, 'Float16')` comes back as Float32
//!   0.222013 instead of Float16 0.2220459. [`check_no_float16_literals`]
//!   refuses such plans before they are sent, with the fix (cast the column to FLOAT).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ballista::prelude::SessionContextExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};
use crate::sql::{self, udfs};
use crate::storage::Location;

/// Object stores by scheme and bucket, opened on first use the way `storage::Location`
/// opens a run root (credentials from the environment).
#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .expect("store registry poisoned")
            .insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .expect("store registry poisoned")
            .remove(&store_key(url))
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "no object store registered for {}",
                    store_key(url)
                ))
            })
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        let mut stores = self.stores.lock().expect("store registry poisoned");
        if let Some(s) = stores.get(&key) {
            return Ok(s.clone());
        }
        let base = match url.scheme() {
            "file" => "file:///".to_string(),
            _ => format!("{key}/"),
        };
        let store = Location::open(&base)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            .store;
        stores.insert(key, store.clone());
        Ok(store)
    }
}

/// A runtime with blindspot's object stores; `temp_dir` for spills and shuffle files.
pub fn runtime_env(temp_dir: Option<&str>) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut b =
        RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(StoreRegistry::default()));
    if let Some(dir) = temp_dir {
        b = b.with_temp_file_path(dir);
    }
    Ok(Arc::new(b.build()?))
}

/// The session state the scheduler plans with: DataFusion's defaults, blindspot's UDFs and
/// object stores.
pub fn session_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime_env(None)?)
        .with_default_features()
        .build();
    // Registered on the built state: `with_scalar_functions` would replace the built-ins.
    for udf in udfs() {
        state.register_udf(udf)?;
    }
    Ok(state)
}

/// The function registry executors decode tasks with: DataFusion's built-ins and blindspot's
/// UDFs.
pub fn function_registry() -> Arc<BallistaFunctionRegistry> {
    let mut registry = BallistaFunctionRegistry::default();
    // Ballista's default registry lacks the nested functions (`array_element`, `clip[1]`)
    // that a default session plans with; take every function the scheduler's state knows.
    if let Ok(state) = session_state(SessionConfig::new()) {
        for (name, f) in state.scalar_functions() {
            registry
                .scalar_functions
                .entry(name.clone())
                .or_insert_with(|| f.clone());
        }
        for (name, f) in state.aggregate_functions() {
            registry
                .aggregate_functions
                .entry(name.clone())
                .or_insert_with(|| f.clone());
        }
        for (name, f) in state.window_functions() {
            registry
                .window_functions
                .entry(name.clone())
                .or_insert_with(|| f.clone());
        }
    }
    for udf in udfs() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), udf);
    }
    Arc::new(registry)
}

/// Where the scheduler listens and how others reach it.
#[derive(Clone, Debug)]
pub struct SchedulerParams {
    /// Address to bind (gRPC for clients and executors, and the REST API with `/api/executors`).
    pub bind: SocketAddr,
    /// The host name executors and clients use for this scheduler.
    pub external_host: String,
    /// Seconds without a heartbeat after which an executor is considered lost.
    pub executor_timeout_seconds: u64,
}

/// Runs a Ballista scheduler until the process is stopped.
pub async fn scheduler(p: SchedulerParams) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        bind_host: p.bind.ip().to_string(),
        bind_port: p.bind.port(),
        external_host: p.external_host,
        executor_timeout_seconds: p.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (p.executor_timeout_seconds / 4).max(1),
        override_session_builder: Some(Arc::new(session_state)),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Internal(format!("scheduler: {e}")))?;
    let server =
        ballista_scheduler::scheduler_process::start_server(cluster, p.bind, Arc::new(config));
    // Ballista's scheduler runs until killed; blindspot's stops on SIGTERM or Ctrl-C and exits 0.
    tokio::select! {
        r = server => r.map_err(|e| Error::Internal(format!("scheduler on {}: {e}", p.bind))),
        _ = stop_signal() => {
            tracing::info!("scheduler stopping on a signal");
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes, Slurm, `kill`) or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// An executor's settings.
#[derive(Clone, Debug)]
pub struct ExecutorParams {
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's port.
    pub scheduler_port: u16,
    /// Address of the Arrow Flight service (results and shuffle data); the gRPC service
    /// takes the next port.
    pub bind: SocketAddr,
    /// The host name others use to reach this executor (default: the bind address).
    pub external_host: Option<String>,
    /// Shuffle files and spills.
    pub work_dir: Option<String>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_seconds: u64,
}

/// Runs a Ballista executor until the process is stopped.
pub async fn executor(p: ExecutorParams) -> Result<()> {
    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
    if p.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1".into()));
    }
    let grpc_port = p.bind.port().checked_add(1).ok_or_else(|| {
        Error::Usage(format!(
            "--bind {}: the gRPC service takes the next port, so the port must be below 65535",
            p.bind
        ))
    })?;
    if let Some(dir) = &p.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::Usage(format!("--work-dir {dir}: {e}")))?;
    }
    let work_dir = p.work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: p.bind.ip().to_string(),
        external_host: p.external_host.clone(),
        port: p.bind.port(),
        grpc_port,
        scheduler_host: p.scheduler_host.clone(),
        scheduler_port: p.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: p.concurrency,
        work_dir: p.work_dir.clone(),
        executor_heartbeat_interval_seconds: p.heartbeat_seconds.max(1),
        override_function_registry: Some(function_registry()),
        override_runtime_producer: Some(Arc::new(move |_| runtime_env(work_dir.as_deref()))),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Internal(format!("executor: {e}")))
}

/// Parses `df://HOST:PORT` (the form Ballista's clients use) into a scheduler URL.
pub fn scheduler_url(url: &str) -> Result<String> {
    let parsed =
        Url::parse(url).map_err(|e| Error::Usage(format!("{url}: {e}; use df://HOST:PORT")))?;
    if parsed.scheme() != "df" || parsed.host_str().is_none() {
        return Err(Error::Usage(format!(
            "{url}: use df://HOST:PORT (the scheduler's address)"
        )));
    }
    Ok(url.to_string())
}

/// A client session whose queries run on the cluster at `url` (`df://HOST:PORT`), with
/// blindspot's UDFs and stores. No table is registered yet.
pub async fn connect(url: &str) -> Result<SessionContext> {
    let url = scheduler_url(url)?;
    let config = SessionConfig::new().with_information_schema(true);
    let state = session_state(config).map_err(|e| Error::Internal(e.to_string()))?;
    let ctx = SessionContext::remote_with_state(&url, state)
        .await
        .map_err(|e| Error::Usage(format!("cluster {url}: {e}")))?;
    // Ballista rebuilds the state for remote planning; make sure the functions came along.
    for udf in udfs() {
        if ctx.udf(udf.name()).is_err() {
            ctx.register_udf(udf.as_ref().clone());
        }
    }
    Ok(ctx)
}

/// A cluster client session over `root`'s tables, as `sql::session` makes a local one.
pub async fn session(root: &Location, url: &str) -> Result<(SessionContext, Vec<String>)> {
    if root.url.starts_with("memory:") {
        return Err(Error::Usage(format!(
            "{} lives in this process only; a cluster's executors cannot read it. Use a local path on a shared file system or an object store",
            root.url
        )));
    }
    let ctx = connect(url).await?;
    let names = sql::register_root(&ctx, root).await?;
    Ok((ctx, names))
}

/// Refuses a plan holding a Float16 literal, which a cluster would silently turn into a
/// Float32 one, changing result types and values (see the module notes).
pub fn check_no_float16_literals(plan: &LogicalPlan) -> Result<()> {
    let mut found = None;
    let _ = plan.apply(|node| {
        for e in node.expressions() {
            let _ = e.apply(|x| {
                if let Expr::Literal(ScalarValue::Float16(Some(v)), _) = x {
                    found = Some(v.to_f32());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(match found {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    });
    match found {
        Some(v) => Err(Error::Usage(format!(
            "the query has the Float16 literal {v} (written, or made by comparing a Float16 value with a number); a Ballista cluster sends Float16 literals as Float32, so result types and values would differ from a local run. Cast the Float16 side to FLOAT (e.g. CAST(clip[1] AS FLOAT) > {v}) and run it again"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_side_knows_cosine_sim_and_the_built_ins() {
        let state = session_state(SessionConfig::new()).unwrap();
        assert!(state.udf("cosine_sim").is_ok());
        assert!(state.udf("abs").is_ok(), "the built-ins survive");
        let registry = function_registry();
        assert!(registry.udf("cosine_sim").is_ok());
        assert!(registry.udf("sqrt").is_ok());
        assert!(
            registry.udf("array_element").is_ok(),
            "nested functions too"
        );
    }

    #[test]
    fn the_registry_opens_stores_by_scheme_and_bucket() {
        let r = StoreRegistry::default();
        let a = r.get_store(&Url::parse("file:///tmp/x").unwrap()).unwrap();
        let b = r.get_store(&Url::parse("file:///other").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one local store");
        let m = r
            .get_store(&Url::parse("memory://cluster-reg/t").unwrap())
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &m));
        assert!(r.get_store(&Url::parse("ftp://host/x").unwrap()).is_err());
    }

    #[test]
    fn cluster_urls_are_checked() {
        assert!(scheduler_url("df://localhost:50050").is_ok());
        assert!(scheduler_url("http://localhost:50050").is_err());
        assert!(scheduler_url("localhost:50050").is_err());
    }
}
