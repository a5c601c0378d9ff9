//! `streamcast run`: loads the model, starts the pipeline and the HTTP server, and waits for a
//! signal or a fatal error.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::bundle::{self, Bundle, BundleError};
use crate::config::{Config, FallbackKind};
use crate::http::{self, AppState, Readiness};
use crate::inference::breaker::{FallbackError, FallbackModel, Naive};
use crate::inference::{InferenceError, Model, SessionOptions};
use crate::pipeline::{PipelineError, Primary, Worker};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// Why the worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Fallback(#[from] FallbackError),
    #[error(transparent)]
    Otel(#[from] crate::otel::OtelError),
}

impl RunError {
    /// True for problems the operator fixes in config, files or topics (exit code 2), as opposed
    /// to runtime failures (exit code 1).
    pub fn is_setup_error(&self) -> bool {
        match self {
            RunError::Bundle(_) | RunError::Listen { .. } | RunError::Fallback(_) | RunError::Otel(_) => true,
            RunError::Inference(e) => {
                matches!(e, InferenceError::Bundle(_) | InferenceError::Cuda(_) | InferenceError::Runtime(_))
            }
            RunError::Pipeline(e) | RunError::Monitor(crate::monitor::MonitorError::Pipeline(e)) => {
                matches!(e, PipelineError::MissingTopics(_) | PipelineError::Client(_))
            }
            RunError::Monitor(_) => true,
        }
    }
}

/// Resolves, loads and validates the configured bundle, then warms its session up.
pub fn load_model(config: &Config) -> Result<Model, RunError> {
    let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
    let bundle = Bundle::load(&dir)?;
    let options =
        SessionOptions { provider: config.model.execution_provider, intra_threads: config.model.intra_threads };
    let mut model = Model::load(bundle, options)?;
    let warm = model.warm_up(config.batching.max_batch_size)?;
    let report = model.provider();
    tracing::info!(
        model = %model.model_ref().name,
        version = %model.model_ref().version,
        provider = report.provider.as_str(),
        fallback_reason = report.fallback_reason.as_deref().unwrap_or(""),
        warm_up_ms = warm.as_secs_f64() * 1e3,
        "Model loaded."
    );
    Ok(model)
}

/// Problems of the primary's own files (manifest, signature, golden cases, a failing warm-up),
/// which a configured fallback covers; not a missing directory, ONNX Runtime or CUDA.
fn is_model_problem(error: &RunError) -> bool {
    match error {
        RunError::Bundle(e) | RunError::Inference(InferenceError::Bundle(e)) => {
            matches!(e, BundleError::Manifest { .. } | BundleError::Invalid { .. } | BundleError::Golden { .. })
        }
        RunError::Inference(e) => {
            matches!(e, InferenceError::Run(_) | InferenceError::Shape(_) | InferenceError::NonFinite)
        }
        _ => false,
    }
}

/// What the worker needs to run on its fallback when the primary failed to load: the primary's
/// manifest when it is readable, else the fallback bundle's; with neither, the original error.
fn failed_primary(config: &Config, reason: String, error: RunError) -> Result<Primary, RunError> {
    let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
    let version = dir.file_name().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
    let model = crate::event::ModelRef { name: config.model.name.clone(), version };
    let bundle = match Bundle::load(&dir) {
        Ok(b) => b,
        Err(_) if config.fallback.kind == FallbackKind::Bundle => {
            let name = config.fallback.model.as_deref().unwrap_or(&config.model.name);
            Bundle::load(&bundle::resolve(&config.model.root, name, &config.fallback.version)?)?
        }
        Err(_) => return Err(error),
    };
    Ok(Primary::Failed { bundle: Arc::new(bundle), model, reason })
}

/// Loads the configured candidate, shadow and fallback; each bundle must keep the primary's
/// features, window and horizon, since they score the same windows.
fn load_variants(config: &Config, primary: &Bundle) -> Result<crate::pipeline::Variants, RunError> {
    let load = |name: &str, version: &str| -> Result<Model, RunError> {
        let dir = bundle::resolve(&config.model.root, name, version)?;
        let b = Bundle::load(&dir)?;
        let (p, m) = (&primary.manifest, &b.manifest);
        if m.features != p.features || m.window != p.window || m.horizon != p.horizon {
            return Err(RunError::Bundle(BundleError::Invalid {
                dir,
                message: format!(
                    "a variant must keep the primary's features {:?}, window {} and horizon {}",
                    p.features, p.window, p.horizon
                ),
            }));
        }
        let options =
            SessionOptions { provider: config.model.execution_provider, intra_threads: config.model.intra_threads };
        let mut model = Model::load(b, options)?;
        model.warm_up(config.batching.max_batch_size)?;
        Ok(model)
    };
    let v = &config.variants;
    let name = config.model.name.as_str();
    let f = &config.fallback;
    let fallback = match f.kind {
        FallbackKind::None => None,
        FallbackKind::LastValue | FallbackKind::SeasonalNaive => {
            Some(FallbackModel::Naive(Naive::for_manifest(&primary.manifest, f.kind, f.season)?))
        }
        FallbackKind::Bundle => Some(FallbackModel::Bundle(load(f.model.as_deref().unwrap_or(name), &f.version)?)),
    };
    if let Some(fb) = &fallback {
        tracing::info!(fallback = %fb.model_ref().version, model = %fb.model_ref().name, "Fallback ready.");
    }
    Ok(crate::pipeline::Variants {
        candidate: v.candidate.as_ref().map(|c| load(name, &c.version).map(|m| (m, c.share))).transpose()?,
        shadow: v.shadow.as_ref().map(|c| load(name, &c.version)).transpose()?,
        fallback,
    })
}

/// The `/models` document.
pub fn models_document(model: &Model) -> serde_json::Value {
    let m = &model.bundle().manifest;
    serde_json::json!({
        "models": [{
            "name": m.name,
            "version": m.version,
            "variant": "primary",
            "traffic_share": 1.0,
            "features": m.features,
            "window": m.window,
            "horizon": m.horizon,
            "layout": m.input.layout,
            "execution_provider": model.provider().provider.as_str(),
            "execution_provider_fallback_reason": model.provider().fallback_reason,
        }]
    })
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
    pub registry: Option<std::thread::JoinHandle<()>>,
    /// Follows rollback/promotion decisions when a candidate is configured.
    pub decisions: Option<std::thread::JoinHandle<()>>,
    pub monitor: Option<std::thread::JoinHandle<()>>,
    pub model: crate::event::ModelRef,
    pub provider: crate::inference::ProviderReport,
    pub http_addr: Option<std::net::SocketAddr>,
    pub readiness: Arc<Readiness>,
}

/// Loads the model and starts everything. Must be called inside a Tokio runtime.
pub async fn start(
    config: &Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    role: Role,
) -> Result<Running, RunError> {
    let mut primary_failed = false;
    let (worker, models, model_ref, provider, bundle, candidate_ref) = if role == Role::Monitor {
        let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
        let bundle = Arc::new(Bundle::load(&dir)?);
        let m = &bundle.manifest;
        let model_ref = crate::event::ModelRef { name: m.name.clone(), version: m.version.clone() };
        let doc = serde_json::json!({"models": [{"name": m.name, "version": m.version, "role": "monitor"}]});
        let report =
            crate::inference::ProviderReport { provider: crate::inference::Provider::Cpu, fallback_reason: None };
        (None, doc, model_ref, report, bundle, None)
    } else {
        let config_for_load = config.clone();
        let loaded = tokio::task::spawn_blocking(move || load_model(&config_for_load))
            .await
            .expect("model loading does not panic");
        let primary = match loaded {
            Ok(model) => Primary::Loaded(model),
            Err(error) if config.fallback.kind != FallbackKind::None && is_model_problem(&error) => {
                let cfg = config.clone();
                let reason = error.to_string();
                tokio::task::spawn_blocking(move || failed_primary(&cfg, reason, error))
                    .await
                    .expect("model loading does not panic")?
            }
            Err(error) => return Err(error),
        };
        let (mut doc, model_ref, provider, bundle) = match &primary {
            Primary::Loaded(model) => {
                metrics.execution_provider.with_label_values(&[model.provider().provider.as_str()]).set(1);
                if model.provider().fallback_reason.is_some() {
                    metrics.execution_provider_fallback.set(1);
                }
                (models_document(model), model.model_ref().clone(), model.provider().clone(), model.bundle().clone())
            }
            Primary::Failed { bundle, model, reason } => {
                let doc = serde_json::json!({"models": [{
                    "name": model.name, "version": model.version, "variant": "primary", "traffic_share": 1.0,
                    "status": "failed_to_load", "reason": reason,
                }]});
                let report = crate::inference::ProviderReport {
                    provider: crate::inference::Provider::Cpu,
                    fallback_reason: None,
                };
                (doc, model.clone(), report, bundle.clone())
            }
        };
        let config_for_variants = config.clone();
        let manifest_source = bundle.clone();
        let variants = tokio::task::spawn_blocking(move || load_variants(&config_for_variants, &manifest_source))
            .await
            .expect("model loading does not panic")?;
        if let Some((m, share)) = &variants.candidate {
            doc["models"][0]["traffic_share"] = (1.0 - share).into();
            doc["models"].as_array_mut().expect("models is an array").push(serde_json::json!({
                "name": m.model_ref().name, "version": m.model_ref().version, "variant": "candidate",
                "traffic_share": share, "routing": "sticky by series_id hash",
            }));
        }
        if let Some(f) = &variants.fallback {
            doc["models"].as_array_mut().expect("models is an array").push(serde_json::json!({
                "name": f.model_ref().name, "version": f.model_ref().version, "variant": "fallback",
                "traffic_share": 0.0, "serves": "batches the primary fails, and all while the circuit breaker is open",
            }));
        }
        if let Some(m) = &variants.shadow {
            doc["models"].as_array_mut().expect("models is an array").push(serde_json::json!({
                "name": m.model_ref().name, "version": m.model_ref().version, "variant": "shadow",
                "traffic_share": 0.0, "topic": config.topics.shadow,
            }));
        }
        let candidate_ref = variants.candidate.as_ref().map(|(m, _)| m.model_ref().clone());
        primary_failed = matches!(primary, Primary::Failed { .. });
        let provider_fallback = match &primary {
            Primary::Loaded(m) => m.provider().fallback_reason.clone().map(|r| (m.model_ref().clone(), r)),
            Primary::Failed { .. } => None,
        };
        let worker = Worker::start(config, primary, variants, metrics.clone(), shutdown.clone())?;
        if let Some((model, reason)) = provider_fallback {
            // The WARN was logged when the session was built; this only enqueues.
            worker.alerts.send(&crate::monitor::alerts::Alert {
                kind: "execution_provider_fallback",
                model,
                variant: Some("primary"),
                at: crate::event::now_rfc3339(),
                details: serde_json::json!({"requested": "auto", "using": "cpu", "reason": reason}),
            });
        }
        (Some(worker), doc, model_ref, provider, bundle, candidate_ref)
    };
    // A monitor-only process has no inference assignment to wait for; it is ready once running.
    let assigned = worker.as_ref().map_or_else(|| Arc::new(AtomicBool::new(true)), |w| w.assigned.clone());
    let readiness = Arc::new(Readiness {
        assigned,
        model_loaded: true.into(),
        // The topic check at start-up succeeded, so the cluster answered.
        producer_connected: true.into(),
    });
    let monitor = if role == Role::Monitor || (role == Role::All && config.monitor.enabled) {
        Some(crate::monitor::spawn(config, bundle.clone(), &metrics.registry, shutdown.clone())?)
    } else {
        None
    };
    let models = Arc::new(std::sync::RwLock::new(models));
    let registry = worker.as_ref().and_then(|w| {
        let m = &bundle.manifest;
        let served = crate::registry::Served {
            model: model_ref.clone(),
            features: m.features.clone(),
            window: m.window,
            horizon: m.horizon,
            failed: primary_failed,
        };
        crate::registry::spawn(
            config,
            served,
            w.reloads.clone(),
            models.clone(),
            metrics.clone(),
            w.alerts.clone(),
            shutdown.clone(),
        )
    });
    let decisions = match (worker.as_ref(), candidate_ref) {
        (Some(w), Some(candidate)) => {
            // Creating the consumer and reading metadata block: off the async threads.
            let (config, primary, controls, models, metrics, shutdown) = (
                config.clone(),
                model_ref.clone(),
                w.controls.clone(),
                models.clone(),
                metrics.clone(),
                shutdown.clone(),
            );
            let follower = tokio::task::spawn_blocking(move || {
                crate::decisions::spawn_follower(&config, primary, candidate, controls, models, metrics, shutdown)
            })
            .await
            .expect("starting the decision follower does not panic");
            // On failure the process exits; the threads already started end with it.
            Some(follower.map_err(|e| RunError::Pipeline(PipelineError::Client(e)))?)
        }
        _ => None,
    };
    let http_addr = if config.http.listen.is_empty() {
        None
    } else {
        let addr = config.http.listen.parse().expect("validated in Config::validate");
        let m = &bundle.manifest;
        let schema = crate::event::FeatureSchema::for_bundle(
            m,
            config.validation.max_message_bytes,
            config.validation.reject_unknown_features,
        );
        let state = AppState {
            metrics,
            readiness: readiness.clone(),
            models,
            requests: worker.as_ref().map(|w| w.requests.clone()),
            schema: Arc::new(schema),
            max_body_bytes: config.http.max_body_bytes,
        };
        let bound = http::serve(addr, state, shutdown)
            .await
            .map_err(|source| RunError::Listen { addr: config.http.listen.clone(), source })?;
        tracing::info!(addr = %bound, "HTTP server listening.");
        Some(bound)
    };
    Ok(Running { worker, registry, decisions, monitor, model: model_ref, provider, http_addr, readiness })
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
    let running = start(config, metrics, shutdown.clone(), role).await?;
    tracing::info!(group = %config.consumer.group_id, topic = %config.topics.input, ?role, "Worker started.");
    let alive = |r: &Running| {
        r.worker.as_ref().is_none_or(Worker::is_running) && r.monitor.as_ref().is_none_or(|m| !m.is_finished())
    };
    let mut ticks = 0u32;
    while !shutdown.is_triggered() && alive(&running) {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        ticks = ticks.wrapping_add(1);
        // Label-vector families appear with their first sample: bridge newcomers every 5 s.
        if let Some(o) = otel.as_ref().filter(|_| ticks.is_multiple_of(25)) {
            o.bridge(&registry);
        }
    }
    shutdown.trigger();
    let Running { worker, monitor, registry, decisions, .. } = running;
    tokio::task::spawn_blocking(move || {
        if let Some(r) = registry {
            let _ = r.join();
        }
        if let Some(d) = decisions {
            let _ = d.join();
        }
        if let Some(m) = monitor {
            if m.join().is_err() {
                tracing::error!("The monitor thread panicked.");
            }
        }
        worker.map_or(Ok(()), Worker::join)
    })
    .await
    .expect("join does not panic")?;
    if let Some(o) = otel {
        tokio::task::spawn_blocking(move || o.shutdown()).await.expect("exporter shutdown does not panic");
    }
    tracing::info!("Worker stopped.");
    Ok(())
}
