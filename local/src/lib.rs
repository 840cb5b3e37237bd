//! `streamgate-local`: every function in one process on the embedded adapters. Storage events and queue
//! messages are dispatched in process, as the cloud would deliver them, by workers that run at most
//! `STREAMGATE_WORKERS` handlers at once; queued work lives in SQLite and survives a killed process.
#![forbid(unsafe_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::adapters::local::{LocalQueue, blob_routes};
use common::config::{Backend, Config};
use common::events::{Event, EventHandler};
use common::platform::{LocalParts, Ports, names};
use common::queue::Queue;
use common::runtime::{FunctionInfo, MetricsRoute, QueueWorker, Retry, http_app, serve};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the local server runs on the embedded backend only; unset STREAMGATE_BACKEND")]
    NotLocal,
    #[error("another streamgate-local is using {0}; stop it or choose another STREAMGATE_DATA_DIR")]
    DataDirInUse(String),
    #[error("{0}")]
    Setup(String),
}

/// A started local server: its address, and the tasks to wait for.
pub struct LocalServer {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    _lock: File,
}

impl LocalServer {
    /// Opens the data dir, binds `config.addr` and starts serving and dispatching.
    pub async fn start(info: FunctionInfo, mut config: Config) -> Result<Self, LocalError> {
        if config.backend != Backend::Local {
            return Err(LocalError::NotLocal);
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| LocalError::Setup(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let lock = lock_data_dir(&config)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| LocalError::Setup(format!("cannot listen on {}: {e}", config.addr)))?;
        let addr = listener.local_addr().map_err(|e| LocalError::Setup(e.to_string()))?;
        config.public_url = Some(config.public_url_for(addr));
        let ports = Ports::from_config(&config)
            .await
            .map_err(|e| LocalError::Setup(e.to_string()))?;
        let local = ports.local.clone().ok_or(LocalError::NotLocal)?;
        // This process holds the data dir's lock, so every write passes through it: reads may be cached.
        local.db.cache_reads();

        // Deliveries in flight belonged to a process that is gone: hand them out again now.
        for queue in [&local.storage_events, &local.jobs, &local.finalize] {
            let released = queue
                .release_in_flight()
                .await
                .map_err(|e| LocalError::Setup(e.to_string()))?;
            if released > 0 {
                tracing::info!(
                    queue = queue.name(),
                    released,
                    "resuming deliveries interrupted by the last stop"
                );
            }
        }

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let routes = routes(&config, &ports, &local, config.domain_for(addr)).map_err(LocalError::Setup)?;
        let app = http_app(info, routes, MetricsRoute::Prometheus(common::telemetry::prometheus()))
            .limited(common::runtime::address_limit(&config));
        let mut http_stopped = stopped.clone();
        tasks.spawn(async move {
            let stopping = async move {
                drop(http_stopped.wait_for(|stop| *stop).await);
            };
            serve(listener, app, stopping).await;
        });
        spawn_workers(&mut tasks, &config, &ports, &local, &stopped);
        spawn_schedules(&mut tasks, &config, &ports, &stopped);
        spawn_housekeeping(&mut tasks, &local, &stopped);
        tracing::info!(%addr, data_dir = %config.data_dir.display(), workers = config.workers, "streamgate-local is serving");
        Ok(Self {
            addr,
            tasks,
            stop,
            _lock: lock,
        })
    }

    /// Stops taking requests and messages, and waits for the work under way.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn lock_data_dir(config: &Config) -> Result<File, LocalError> {
    let path = config.data_dir.join("streamgate.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LocalError::Setup(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(LocalError::DataDirInUse(config.data_dir.display().to_string())),
    }
}

/// Every function's routes, which never overlap, and the routes serving the buckets' signed URLs.
fn routes(config: &Config, ports: &Ports, local: &LocalParts, domain: String) -> Result<Router, String> {
    Ok(Router::new()
        .merge(api_auth::router(api_auth::AppState::new(config, ports, domain)?))
        .merge(api_upload::router(api_upload::AppState::new(config, ports)?))
        .merge(api_videos::router(api_videos::AppState::new(config, ports)?))
        .merge(api_playback::router(api_playback::AppState::new(config, ports)?))
        .merge(api_chains::router(api_chains::AppState::new(config, ports)?))
        .merge(blob_routes([local.sources.clone(), local.media.clone()])))
}

/// A worker's name, the queue it takes messages from and the handler it gives them to.
type Dispatch = (&'static str, Arc<dyn Queue>, Arc<dyn EventHandler>);

fn spawn_workers(
    tasks: &mut JoinSet<()>,
    config: &Config,
    ports: &Ports,
    local: &LocalParts,
    stopped: &watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.workers));
    let mut workers: Vec<Dispatch> = vec![
        (
            "on-upload",
            Arc::new(local.storage_events.clone()),
            Arc::new(on_upload::Handler::new(config, ports)),
        ),
        (
            "transcode",
            Arc::new(local.jobs.clone()),
            Arc::new(transcode::Handler::new(config, ports)),
        ),
        (
            "finalize",
            Arc::new(local.finalize.clone()),
            Arc::new(finalize::Handler::new(config, ports)),
        ),
    ];
    // What the others gave up on fails its video.
    let dead_letters: Arc<dyn EventHandler> = Arc::new(dead_letters::Handler::new(ports));
    for queue in [names::STORAGE_EVENTS_QUEUE, names::JOBS_QUEUE, names::FINALIZE_QUEUE] {
        let dead = LocalQueue::new(local.db.clone(), names::dead_letter_queue(queue));
        workers.push(("dead-letters", Arc::new(dead), dead_letters.clone()));
    }
    for (name, queue, handler) in workers {
        let worker = Arc::new(QueueWorker {
            name: name.to_owned(),
            queue,
            handler,
            visibility: config.visibility_timeout,
            retry: Retry::default(),
        });
        tasks.spawn(worker.run(permits.clone(), stopped.clone()));
    }
}

fn spawn_schedules(tasks: &mut JoinSet<()>, config: &Config, ports: &Ports, stopped: &watch::Receiver<bool>) {
    let scheduled: [(&str, Arc<dyn EventHandler>); 4] = [
        ("on-upload", Arc::new(on_upload::Handler::new(config, ports))),
        ("chain-indexer", Arc::new(chain_indexer::Handler::new(ports))),
        ("gas-monitor", Arc::new(gas_monitor::Handler::new(config, ports))),
        ("tx-tracker", Arc::new(tx_tracker::Handler::new(config, ports))),
    ];
    for (name, handler) in scheduled {
        let mut stopped = stopped.clone();
        let every = config.schedule_interval;
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                if let Err(err) = handler
                    .handle(Event::Schedule {
                        time: chrono::Utc::now(),
                    })
                    .await
                {
                    tracing::warn!(function = name, error = %err, "scheduled run failed");
                }
            }
        });
    }
}

fn spawn_housekeeping(tasks: &mut JoinSet<()>, local: &LocalParts, stopped: &watch::Receiver<bool>) {
    let store = common::adapters::local::LocalStore::new(local.db.clone());
    let queues = [local.storage_events.clone(), local.jobs.clone(), local.finalize.clone()];
    let mut stopped = stopped.clone();
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.wait_for(|stop| *stop) => break,
            }
            for queue in &queues {
                if let Ok(depth) = queue.depth().await {
                    metrics::gauge!("streamgate_queue_depth", "queue" => queue.name().to_owned()).set(depth as f64);
                }
            }
            rounds += 1;
            if rounds.is_multiple_of(12)
                && let Err(err) = store.purge_expired().await
            {
                tracing::warn!(error = %err, "purging expired items failed");
            }
        }
    });
}
