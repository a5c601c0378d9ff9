//! `streamcast run`: loads the models, starts the pipeline, the monitor, the registry watcher,
//! the decision follower and the HTTP server, and waits for a signal or a fatal error. Each
//! piece is started from its own config section; model loading lives in [`crate::loader`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::alert::{Alert, AlertSink, Details, ProviderFallbackDetails};
use crate::bundle::{self, Bundle, BundleError};
use crate::config::Config;
use crate::event::{FeatureSchema, ModelRef, Variant};
use crate::http::{self, AppState, Readiness};
use crate::inference::{InferenceError, Provider, ProviderReport};
use crate::kafka::ClusterError;
use crate::loader::{self, LoadError, Primary, Variants};
use crate::pipeline::{PipelineError, RequestGate, Worker};
use crate::served::{ServedModel, ServedModels, SharedServedModels, Signature, Slot, Status};
use crate::shutdown::Shutdown;
use crate::telemetry::events::{InternalEvent, ProviderSelected, StartupPagesNotReleased, StartupPagesReleased};
use crate::telemetry::Metrics;

/// Why the worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    /// `intervals.method = "cqr"` with a bundle that does not output the band it needs.
    #[error("intervals.method = \"cqr\" needs {0}")]
    Cqr(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Otel(#[from] crate::otel::OtelError),
    #[error(transparent)]
    ModelStore(#[from] crate::model_store::StoreError),
    #[error("the {0} thread stopped unexpectedly")]
    ThreadStopped(&'static str),
    #[error(
        "shutdown did not complete within {0:?} (processing.shutdown_timeout + {SHUTDOWN_MARGIN:?}); exiting anyway"
    )]
    ShutdownTimedOut(Duration),
}

/// How long start-up waits for the cluster's first answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest start-up is taken to last before its pages are handed back
/// (`processing.release_startup_pages`), for a worker that waits long for its first assignment.
const STARTUP_SETTLES: Duration = Duration::from_secs(60);

/// How long a shutdown may take beyond `processing.shutdown_timeout` (thread joins, the last
/// commit, leaving the group) before the process exits anyway, with an error.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

impl RunError {
    /// True for problems the operator fixes in config, files or topics (exit code 2), as opposed
    /// to runtime failures (exit code 1).
    pub fn is_setup_error(&self) -> bool {
        let cluster = |e: &ClusterError| {
            matches!(e, ClusterError::MissingTopics(_) | ClusterError::Client(_) | ClusterError::Refused { .. })
        };
        match self {
            RunError::Bundle(_) | RunError::Listen { .. } | RunError::Otel(_) | RunError::Cqr(_) => true,
            RunError::Load(LoadError::Bundle(_) | LoadError::Fallback(_)) => true,
            RunError::Load(LoadError::Inference(e)) => {
                matches!(e, InferenceError::Bundle(_) | InferenceError::Cuda(_) | InferenceError::Runtime(_))
            }
            RunError::Pipeline(PipelineError::Cluster(e)) => cluster(e),
            RunError::Monitor(crate::monitor::MonitorError::Cluster(e)) => cluster(e),
            RunError::Monitor(
                crate::monitor::MonitorError::NoFrequency(_) | crate::monitor::MonitorError::ActualsFromInput(_),
            ) => true,
            // A store that cannot be reached may come back; a bad URL or an empty prefix will not.
            RunError::ModelStore(e) => !matches!(e, crate::model_store::StoreError::Remote { .. }),
            RunError::Pipeline(_) | RunError::ThreadStopped(_) | RunError::ShutdownTimedOut(_) => false,
        }
    }
}

/// CQR builds intervals around the served bundle's quantiles (1 ∓ level)/2: refuses a bundle
/// without them before anything starts.
fn check_cqr(config: &Config, bundle: &Bundle) -> Result<(), RunError> {
    let i = &config.intervals;
    if !i.enabled || i.method != crate::config::IntervalMethod::Cqr {
        return Ok(());
    }
    let m = &bundle.manifest;
    match &m.quantiles {
        Some(levels) if crate::interval::cqr_band(levels, i.level).is_some() => Ok(()),
        levels => Err(RunError::Cqr(format!(
            "a quantile bundle with the levels {} and {} (intervals.level = {}); {} version {} has {}",
            // Rounded for the message: (1 - 0.9) / 2 prints as 0.04999999999999999.
            ((1.0 - i.level) / 2.0 * 1e9).round() / 1e9,
            ((1.0 + i.level) / 2.0 * 1e9).round() / 1e9,
            i.level,
            m.name,
            m.version,
            match levels {
                Some(l) => format!("{l:?}"),
                None => "no `quantiles`".into(),
            }
        ))),
    }
}

/// Runs blocking start-up work (model loading, client creation) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("start-up work does not panic")
}

/// The `/models` entries of a worker: the primary (or its failure), then the candidate, the
/// fallback and the shadow.
fn served_models(primary: &Primary, variants: &Variants, shadow_topic: &str) -> ServedModels {
    let mut doc = match primary {
        Primary::Loaded(model) => {
            let m = &model.bundle().manifest;
            let mut e = ServedModel::new(model.model_ref(), Slot::Primary, 1.0);
            e.signature = Some(Signature {
                features: m.features.clone(),
                window: m.window,
                horizon: m.horizon,
                layout: m.input.layout,
                execution_provider: model.provider().provider.as_str(),
                execution_provider_fallback_reason: model.provider().fallback_reason.clone(),
            });
            ServedModels::worker(e)
        }
        Primary::Failed { model, reason, .. } => {
            let mut e = ServedModel::new(model, Slot::Primary, 1.0);
            e.status = Some(Status::FailedToLoad);
            e.reason = Some(reason.clone());
            ServedModels::worker(e)
        }
    };
    if let Some((m, share)) = &variants.candidate {
        let mut e = ServedModel::new(m.model_ref(), Slot::Candidate, *share);
        e.routing = Some("sticky by series_id hash");
        doc.add(e);
    }
    if let Some(f) = &variants.fallback {
        let mut e = ServedModel::new(f.model_ref(), Slot::Fallback, 0.0);
        e.serves = Some("batches the primary fails, and all while the circuit breaker is open");
        doc.add(e);
    }
    if let Some(m) = &variants.shadow {
        let mut e = ServedModel::new(m.model_ref(), Slot::Shadow, 0.0);
        e.topic = Some(shadow_topic.to_string());
        doc.add(e);
    }
    doc
}

/// The inference side of a process, once started.
struct StartedWorker {
    worker: Worker,
    served: ServedModels,
    model: ModelRef,
    provider: ProviderReport,
    bundle: Arc<Bundle>,
    candidate: Option<ModelRef>,
    primary_failed: bool,
}

/// With an object-storage `model.root`, pulls every version start-up loads into `model.cache_dir`
/// and returns the config with the cache as its root, plus the store for the watcher and the
/// monitor; with a directory root, the config as it is.
async fn pull_models(config: &Config) -> Result<(Config, Option<Arc<crate::model_store::RemoteRoot>>), RunError> {
    use crate::model_store::{RemoteRoot, Select};
    if !crate::model_store::is_remote(&config.model.root) {
        return Ok((config.clone(), None));
    }
    let cfg = config.clone();
    let store = blocking(move || -> Result<RemoteRoot, RunError> {
        let url = cfg.model.root.to_string_lossy().into_owned();
        let store = RemoteRoot::open(&url, &cfg.model.cache_dir)?;
        fn select(version: &str) -> Select<'_> {
            if version == "latest" {
                Select::Highest
            } else {
                Select::Exactly(version)
            }
        }
        let name = cfg.model.name.as_str();
        let mut wanted = vec![(name, cfg.model.version.as_str())];
        wanted.extend(cfg.variants.candidate.as_ref().map(|c| (name, c.version.as_str())));
        wanted.extend(cfg.variants.shadow.as_ref().map(|c| (name, c.version.as_str())));
        if cfg.fallback.kind == crate::config::FallbackKind::Bundle {
            wanted.push((cfg.fallback.model.as_deref().unwrap_or(name), cfg.fallback.version.as_str()));
        }
        for (name, version) in wanted {
            let pulled = store.sync(name, select(version))?;
            tracing::info!(url = %url, name, version, ?pulled, cache = %store.cache_dir().display(), "Model root in object storage: cache ready.");
        }
        Ok(store)
    })
    .await?;
    let mut local = config.clone();
    local.model.root = store.cache_dir().to_path_buf();
    Ok((local, Some(Arc::new(store))))
}

/// Loads every model and starts the consumer and inference threads.
async fn start_worker(
    config: &Config,
    alerts: &Arc<AlertSink>,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<StartedWorker, RunError> {
    let cfg = config.clone();
    let primary = blocking(move || loader::load_primary(&cfg)).await?;
    let bundle = primary.bundle();
    check_cqr(config, &bundle)?;
    let (cfg, b) = (config.clone(), bundle.clone());
    let variants = blocking(move || loader::load_variants(&cfg, &b)).await?;
    let served = served_models(&primary, &variants, &config.topics.shadow);
    let provider = match &primary {
        Primary::Loaded(m) => m.provider().clone(),
        Primary::Failed { .. } => ProviderReport { provider: Provider::Cpu, fallback_reason: None },
    };
    if let Primary::Loaded(_) = primary {
        let fell_back = provider.fallback_reason.is_some();
        ProviderSelected { provider: provider.provider.as_str(), fell_back }.emit(metrics);
    }
    let model = primary.model_ref();
    let candidate = variants.candidate.as_ref().map(|(m, _)| m.model_ref().clone());
    let primary_failed = matches!(primary, Primary::Failed { .. });
    probe(config).await?;
    let mut outputs = vec![config.topics.predictions.as_str(), config.topics.dlq.as_str()];
    if variants.shadow.is_some() {
        outputs.push(&config.topics.shadow);
    }
    let fitted = match crate::kafka::smallest_topic_limit(config, &outputs, Duration::from_secs(10)).await {
        Some((topic, limit)) => crate::kafka::fit_producer_to(config, limit).inspect(|_| {
            tracing::info!(
                topic,
                limit,
                "An output topic's max.message.bytes is below the producer's limits; the producer's message.max.bytes and batch.size are lowered to it, so its batches fit, and dead letters are cut to fit."
            );
        }),
        None => None,
    };
    let config = fitted.as_ref().unwrap_or(config);
    let worker = Worker::start(config, primary, variants, alerts.clone(), metrics.clone(), shutdown.clone())?;
    if let (false, Some(reason)) = (primary_failed, &provider.fallback_reason) {
        // The WARN was logged when the session was built; this only enqueues.
        let details = ProviderFallbackDetails { requested: "auto".into(), using: "cpu".into(), reason: reason.clone() };
        alerts.send(&Alert::new(model.clone(), Some(Variant::Primary), Details::ExecutionProviderFallback(details)));
    }
    Ok(StartedWorker { worker, served, model, provider, bundle, candidate, primary_failed })
}

/// Checks that the cluster takes this client, after the models loaded (their problems come
/// first) and before anything talks to Kafka: TLS, authentication and protocol mismatches stop
/// start-up here, named, instead of as an endless series of reconnect warnings later.
async fn probe(config: &Config) -> Result<(), RunError> {
    let cfg = config.clone();
    blocking(move || crate::kafka::probe(&cfg, PROBE_TIMEOUT)).await.map_err(|e| PipelineError::Cluster(e).into())
}

/// Starts the thread that follows rollback/promotion decisions about `candidate`.
async fn start_decisions(
    config: &Config,
    worker: &Worker,
    primary: ModelRef,
    candidate: ModelRef,
    served: SharedServedModels,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<JoinHandle<()>, RunError> {
    let (config, controls, metrics, shutdown) =
        (config.clone(), worker.controls.clone(), metrics.clone(), shutdown.clone());
    // On failure the process exits; the threads already started end with it.
    blocking(move || crate::decisions::spawn_follower(&config, primary, candidate, controls, served, metrics, shutdown))
        .await
        .map_err(|e| RunError::Pipeline(PipelineError::Cluster(ClusterError::Client(e))))
}

/// Serves `/healthz`, `/readyz`, `/metrics`, `/models` and `/predict` on `addr`.
async fn start_http(
    config: &Config,
    addr: SocketAddr,
    bundle: &Bundle,
    state: (Arc<Metrics>, Arc<Readiness>, SharedServedModels, Option<Arc<RequestGate>>),
    shutdown: Shutdown,
) -> Result<SocketAddr, RunError> {
    let (metrics, readiness, models, requests) = state;
    let schema = FeatureSchema::for_config(&bundle.manifest, &config.validation);
    let state = AppState {
        metrics,
        readiness,
        models,
        requests,
        schema: Arc::new(schema),
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: config.http.request_timeout,
    };
    let bound = http::serve(addr, state, shutdown)
        .await
        .map_err(|source| RunError::Listen { addr: config.http.listen.clone(), source })?;
    tracing::info!(addr = %bound, "HTTP server listening.");
    Ok(bound)
}

/// Which parts of `streamcast run` this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The inference worker, plus the monitor when `monitor.enabled`.
    All,
    /// Only the inference worker.
    Worker,
    /// Only the monitor side task (needs the bundle for its reference sample, not ONNX Runtime).
    Monitor,
}

/// A started worker and/or monitor with its HTTP server.
pub struct Running {
    pub worker: Option<Worker>,
    pub registry: Option<JoinHandle<()>>,
    /// Follows rollback/promotion decisions when a candidate is configured.
    pub decisions: Option<JoinHandle<()>>,
    pub monitor: Option<JoinHandle<()>>,
    pub model: ModelRef,
    pub provider: ProviderReport,
    pub http_addr: Option<SocketAddr>,
    pub readiness: Arc<Readiness>,
}

impl Running {
    /// The first side thread (monitor, registry watcher, decision follower) that has ended.
    /// Before a shutdown, none of them ends on its own: one that did died.
    fn stopped_thread(&self) -> Option<&'static str> {
        [("monitor", &self.monitor), ("registry", &self.registry), ("decisions", &self.decisions)]
            .into_iter()
            .find(|(_, h)| h.as_ref().is_some_and(JoinHandle::is_finished))
            .map(|(name, _)| name)
    }

    /// True while every started thread runs.
    fn alive(&self) -> bool {
        self.worker.as_ref().is_none_or(Worker::is_running) && self.stopped_thread().is_none()
    }

    /// Waits for every thread (after shutdown was triggered) and flushes the producers. Blocking.
    /// The worker goes first: the side threads' sends give up once it is gone.
    pub fn join(self) -> Result<(), RunError> {
        let mut result = self.worker.map_or(Ok(()), Worker::join).map_err(RunError::from);
        for (name, handle) in [("registry", self.registry), ("decisions", self.decisions), ("monitor", self.monitor)] {
            if handle.is_some_and(|h| h.join().is_err()) {
                tracing::error!(thread = name, "A thread panicked.");
                if result.is_ok() {
                    result = Err(RunError::Pipeline(PipelineError::Panicked(name)));
                }
            }
        }
        result
    }
}

/// Loads the model and starts everything. Must be called inside a Tokio runtime.
pub async fn start(
    config: &Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    role: Role,
) -> Result<Running, RunError> {
    let (local, store) = pull_models(config).await?;
    let config = &local;
    let client = crate::kafka::producer_side_config(config);
    let alerts = AlertSink::new(&client, &config.topics.alerts).map_err(|e| PipelineError::Cluster(e.into()))?;
    let alerts = Arc::new(alerts);
    let (worker, served, model, provider, bundle) = if role == Role::Monitor {
        let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
        let bundle = Arc::new(Bundle::load(&dir)?);
        check_cqr(config, &bundle)?;
        let m = &bundle.manifest;
        let model = ModelRef { name: m.name.clone(), version: m.version.clone() };
        let cpu = ProviderReport { provider: Provider::Cpu, fallback_reason: None };
        probe(config).await?;
        (None, ServedModels::monitor(&model), model, cpu, bundle)
    } else {
        let w = start_worker(config, &alerts, &metrics, &shutdown).await?;
        let extra = (w.candidate, w.primary_failed);
        (Some((w.worker, extra)), w.served, w.model, w.provider, w.bundle)
    };
    let served = served.shared();
    let primary_failed = worker.as_ref().is_some_and(|(_, (_, failed))| *failed);
    let model_loaded = Arc::new(AtomicBool::new(!primary_failed));
    // A monitor-only process has no inference consumer: it is ready once running.
    let readiness = Arc::new(Readiness {
        model_loaded: model_loaded.clone(),
        consumer: worker.as_ref().map(|(w, _)| w.health.clone()),
    });
    let monitor = if role == Role::Monitor || (role == Role::All && config.monitor.enabled) {
        let (cfg, b, registry, a, s) =
            (config.clone(), bundle.clone(), metrics.registry.clone(), alerts.clone(), shutdown.clone());
        let st = store.clone();
        Some(blocking(move || crate::monitor::spawn(&cfg, b, &registry, a, s, st)).await?)
    } else {
        None
    };
    let (mut registry, mut decisions) = (None, None);
    if let Some((w, (candidate, primary_failed))) = &worker {
        let watched = crate::registry::Served {
            model: model.clone(),
            bundle: bundle.clone(),
            failed: *primary_failed,
            loaded: model_loaded.clone(),
            store: store.clone(),
        };
        registry = crate::registry::spawn(
            config,
            watched,
            w.reloads.clone(),
            served.clone(),
            metrics.clone(),
            alerts.clone(),
            shutdown.clone(),
        );
        if let Some(candidate) = candidate.clone() {
            let primary = model.clone();
            decisions =
                Some(start_decisions(config, w, primary, candidate, served.clone(), &metrics, &shutdown).await?);
        }
    }
    let worker = worker.map(|(w, _)| w);
    let http_addr = match config.http.listen_addr() {
        None => None,
        Some(addr) => {
            let requests = worker.as_ref().map(|w| w.requests.clone());
            let state = (metrics, readiness.clone(), served, requests);
            Some(start_http(config, addr, &bundle, state, shutdown).await?)
        }
    };
    Ok(Running { worker, registry, decisions, monitor, model, provider, http_addr, readiness })
}

/// When to hand start-up's pages back (`processing.release_startup_pages`): once start-up is
/// over, and again after each model version the registry builds a session for, since building
/// one runs much of the same code.
struct PageRelease {
    enabled: bool,
    /// Until the first release: when it happens even without an assignment.
    first_by: Option<Instant>,
    /// Registry loads and refusals seen: most refusals come after a session was built too (a
    /// golden case that does not match), and a needless release costs a few minor faults.
    sessions: u64,
}

impl PageRelease {
    fn new(enabled: bool, metrics: &Metrics) -> PageRelease {
        PageRelease { enabled, first_by: Some(Instant::now() + STARTUP_SETTLES), sessions: Self::sessions(metrics) }
    }

    fn sessions(metrics: &Metrics) -> u64 {
        ["loaded", "rejected"].iter().map(|r| metrics.model_reloads.with_label_values(&[r]).get()).sum()
    }

    fn due(&mut self, readiness: &Readiness, metrics: &Metrics) -> bool {
        if !self.enabled {
            return false;
        }
        if let Some(by) = self.first_by {
            // Start-up ends with the consumer's first assignment (the group join is start-up
            // code too); a worker kept waiting for one still releases within STARTUP_SETTLES.
            let assigned = readiness.consumer.as_ref().is_none_or(|c| c.assigned_once.load(Ordering::SeqCst));
            if assigned || Instant::now() >= by {
                self.first_by = None;
                self.sessions = Self::sessions(metrics);
                return true;
            }
            return false;
        }
        let sessions = Self::sessions(metrics);
        std::mem::replace(&mut self.sessions, sessions) != sessions
    }
}

/// Hands the pages only start-up used back to the kernel (`processing.release_startup_pages`).
fn release_startup_pages(metrics: &Metrics) {
    // With the executable, the file most of start-up's code comes from; loaded for good.
    let ort: Vec<std::path::PathBuf> =
        crate::inference::runtime::loaded_library().map(Into::into).into_iter().collect();
    match crate::startup_pages::release(&ort) {
        Ok(released) => StartupPagesReleased(released).emit(metrics),
        Err(error) => StartupPagesNotReleased { error: &error }.emit(metrics),
    }
}

/// Runs until SIGTERM/SIGINT (or a fatal error), then shuts down cleanly.
pub async fn run(config: &Config, role: Role) -> Result<(), RunError> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let metrics = Metrics::new();
    let otel = if crate::otel::enabled(&config.telemetry) {
        // The exporters build blocking HTTP clients: keep them off the async threads.
        let (t, group, topic, registry) = (
            config.telemetry.clone(),
            config.consumer.group_id.clone(),
            config.topics.predictions.clone(),
            metrics.registry.clone(),
        );
        Some(
            tokio::task::spawn_blocking(move || crate::otel::start(&t, &group, &topic, &registry))
                .await
                .expect("exporter setup does not panic")?,
        )
    } else {
        None
    };
    let registry = metrics.registry.clone();
    let running = start(config, metrics.clone(), shutdown.clone(), role).await?;
    tracing::info!(group = %config.consumer.group_id, topic = %config.topics.input, ?role, "Worker started.");
    let mut ticks = 0u32;
    let mut release_pages = PageRelease::new(config.processing.release_startup_pages, &metrics);
    while !shutdown.is_triggered() && running.alive() && crate::kafka::runtime_refusal().is_none() {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        ticks = ticks.wrapping_add(1);
        if release_pages.due(&running.readiness, &metrics) {
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || release_startup_pages(&metrics));
        }
        // Label-vector families appear with their first sample: bridge newcomers every 5 s.
        if let Some(o) = otel.as_ref().filter(|_| ticks.is_multiple_of(25)) {
            o.bridge(&registry);
        }
    }
    // A side thread that ended before any shutdown died: say so and exit non-zero, after the
    // same orderly shutdown as for a signal.
    let stopped = (!shutdown.is_triggered()).then(|| running.stopped_thread()).flatten();
    let refused = (!shutdown.is_triggered()).then(crate::kafka::runtime_refusal).flatten();
    shutdown.trigger();
    let limit = config.processing.shutdown_timeout + SHUTDOWN_MARGIN;
    match tokio::time::timeout(limit, blocking(move || running.join())).await {
        Ok(result) => result?,
        Err(_) => return Err(RunError::ShutdownTimedOut(limit)),
    }
    if let Some(r) = refused {
        let servers = config.kafka.get("bootstrap.servers").map(|v| v.to_string()).unwrap_or_default();
        let (cause, keys, detail) = (r.cause, r.keys, r.detail);
        return Err(RunError::Pipeline(PipelineError::Cluster(ClusterError::Refused { servers, cause, keys, detail })));
    }
    if let Some(name) = stopped {
        return Err(RunError::ThreadStopped(name));
    }
    if let Some(o) = otel {
        tokio::task::spawn_blocking(move || o.shutdown()).await.expect("exporter shutdown does not panic");
    }
    tracing::info!("Worker stopped.");
    Ok(())
}
