//! The streaming worker: consumer thread → inference thread → producer, with offsets stored
//! only after the broker acknowledged each event's prediction or dead-letter record.
//!
//! - [`consumer`]: the poll loop, validation, windows, rebalance draining.
//! - [`offsets`]: in-order offset tracking per partition.
//! - [`publish`]: predictions, dead letters, delivery reports.
//! - [`rebuild`]: per-series windows rebuilt from a newly assigned partition's history.
//!
//! Every queue on the data path is bounded by `consumer.max_in_flight`.

pub mod consumer;
pub mod offsets;
pub mod publish;
pub mod rebuild;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;

use crate::config::Config;
use crate::event::FeatureSchema;
use crate::inference::breaker::{Breaker, BreakerOptions};
use crate::inference::{Batcher, BatchingOptions, Model, VariantControl};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::window::WindowStore;
use consumer::{ConsumerLoop, LoopState, WorkerContext};
use publish::{AlertSink, DeliveryContext, KafkaSink, Producer, Publisher, Token};

/// Errors of the streaming pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("Kafka client setup failed: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot reach the Kafka cluster at {servers}: {error}")]
    Unreachable { servers: String, error: KafkaError },
    #[error("topics missing on the cluster: {}; create them with `streamcast topics create --config FILE` or start with `--create-topics`", .0.join(", "))]
    MissingTopics(Vec<String>),
    #[error("{0}")]
    Delivery(String),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// Models next to the primary: an A/B candidate with its share of series, a shadow, and the
/// fallback that serves while the circuit breaker is open.
#[derive(Default)]
pub struct Variants {
    pub candidate: Option<(Model, f64)>,
    pub shadow: Option<Model>,
    pub fallback: Option<crate::inference::breaker::FallbackModel>,
}

/// The primary model as start-up found it.
pub enum Primary {
    Loaded(Model),
    /// It failed to load and `[fallback]` serves until a valid version is hot-reloaded. `bundle`
    /// supplies features and window: the primary's own manifest when it was readable, else the
    /// fallback bundle's.
    Failed {
        bundle: Arc<crate::bundle::Bundle>,
        model: crate::event::ModelRef,
        reason: String,
    },
}

/// Where a job for the inference thread came from.
#[derive(Debug)]
pub enum Origin {
    /// An `input_data` record: its prediction goes to Kafka.
    Stream(StreamOrigin),
    /// An HTTP `/predict` request: the prediction goes back to the waiting handler.
    Request(RequestOrigin),
}

/// One scored window, as returned to an HTTP request.
#[derive(Debug, Clone)]
pub struct Scored {
    pub prediction: Vec<f32>,
    pub model: crate::event::ModelRef,
    pub produced_at: String,
    /// Served by the fallback rather than the selected model.
    pub fallback: bool,
}

/// A `/predict` event waiting for its prediction.
#[derive(Debug)]
pub struct RequestOrigin {
    pub reply: tokio::sync::oneshot::Sender<Result<Scored, String>>,
}

/// Hands HTTP requests to the inference thread, through the same queue as the stream.
///
/// The sender is dropped on shutdown, so the inference thread can finish once the stream's own
/// sender is gone too.
#[derive(Debug, Default)]
pub struct RequestGate {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<crate::inference::Job<Origin>>>>,
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// No inference thread (monitor-only process, or shutting down).
    Closed,
    /// The queue is at `consumer.max_in_flight`: the stream has priority.
    Full,
}

impl RequestGate {
    pub fn submit(&self, input: Vec<f32>) -> Result<tokio::sync::oneshot::Receiver<Result<Scored, String>>, GateError> {
        let guard = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(GateError::Closed)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        // HTTP requests are always scored by the primary: they carry no stable series routing.
        let job = crate::inference::Job { input, candidate: false, origin: Origin::Request(RequestOrigin { reply }) };
        match tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(std::sync::mpsc::TrySendError::Full(_)) => Err(GateError::Full),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(GateError::Closed),
        }
    }

    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Where a streamed event came from, and what its prediction must echo.
#[derive(Debug)]
pub struct StreamOrigin {
    pub token: Token,
    pub id: String,
    pub series_id: String,
    pub timestamp: String,
    pub warmup: bool,
    pub received: Instant,
    pub traceparent: Option<String>,
    /// The OpenTelemetry `process` span, when OTLP export is on.
    pub span: Option<crate::otel::EventSpan>,
    /// The original message value, kept so an inference failure can be dead-lettered unchanged.
    pub payload: Vec<u8>,
}

/// Builds a librdkafka client config: streamcast's defaults, then the user's `[kafka]` table.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.kafka_properties() {
        c.set(k, v);
    }
    c
}

/// Prefixes of librdkafka properties that only producers (or only consumers) understand. The
/// `[kafka]` table is shared, and librdkafka warns about every property of the other side.
const PRODUCER_ONLY: [&str; 10] = [
    "linger.ms",
    "acks",
    "request.required.acks",
    "batch.",
    "compression.",
    "compression.codec",
    "message.timeout.ms",
    "queue.buffering.",
    "enable.idempotence",
    "transactional.id",
];
const CONSUMER_ONLY: [&str; 12] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "auto.commit.interval.ms",
    "max.poll.interval.ms",
    "fetch.",
    "group.",
    "partition.assignment.strategy",
    "isolation.level",
    "auto.offset.reset",
    "check.crcs",
    "queued.",
    "enable.partition.eof",
];

fn is_for(key: &str, other_side: &[&str]) -> bool {
    !other_side.iter().any(|p| key.starts_with(p))
}

fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("auto.offset.reset", &config.consumer.auto_offset_reset).set("statistics.interval.ms", "5000");
    for (k, v) in config.kafka_properties().filter(|(k, _)| is_for(k, &PRODUCER_ONLY)) {
        c.set(k, v);
    }
    // Not overridable (config validation refuses them): at-least-once depends on them.
    c.set("group.id", &config.consumer.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5").set("acks", "all").set("statistics.interval.ms", "5000");
    for (k, v) in config.kafka_properties().filter(|(k, _)| is_for(k, &CONSUMER_ONLY)) {
        c.set(k, v);
    }
    c
}

/// Which required topics do not exist on the cluster.
pub fn missing_topics<C: rdkafka::consumer::ConsumerContext, T: Consumer<C>>(
    consumer: &T,
    wanted: &[&str],
    servers: &str,
) -> Result<Vec<String>, PipelineError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|error| PipelineError::Unreachable { servers: servers.to_string(), error })?;
    Ok(wanted
        .iter()
        .filter(|t| {
            !metadata.topics().iter().any(|m| m.name() == **t && m.error().is_none() && !m.partitions().is_empty())
        })
        .map(|t| t.to_string())
        .collect())
}

/// A running worker: its two threads and the producer they share.
pub struct Worker {
    consumer_thread: JoinHandle<Result<(), PipelineError>>,
    inference_thread: JoinHandle<()>,
    producer: Arc<Producer>,
    flush_timeout: Duration,
    /// Set once the group assigned partitions to this member.
    pub assigned: Arc<AtomicBool>,
    /// `/predict`'s way into the inference thread.
    pub requests: Arc<RequestGate>,
    /// The registry watcher's way to hand the inference thread a new model.
    pub reloads: std::sync::mpsc::SyncSender<Model>,
    /// Rollback and promotion decisions for the inference thread.
    pub controls: std::sync::mpsc::SyncSender<VariantControl>,
    /// The worker's alert producer, shared with the registry watcher and start-up.
    pub alerts: Arc<AlertSink>,
}

impl Worker {
    /// Connects, checks the topics, and starts the consumer and inference threads.
    pub fn start(
        config: &Config,
        primary: Primary,
        mut variants: Variants,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Result<Worker, PipelineError> {
        let servers = config.kafka.get("bootstrap.servers").map(|v| v.to_string()).unwrap_or_default();
        let bundle = match &primary {
            Primary::Loaded(m) => m.bundle().clone(),
            Primary::Failed { bundle, .. } => bundle.clone(),
        };
        let manifest = &bundle.manifest;
        let schema = FeatureSchema::for_bundle(
            manifest,
            config.validation.max_message_bytes,
            config.validation.reject_unknown_features,
        );
        let windows = WindowStore::new(manifest.window, manifest.features.len(), config.windows.max_series);
        let max_in_flight = config.consumer.max_in_flight;

        // Each in-flight event yields one record and so one report: this capacity never fills.
        // With a shadow, each event yields a second (shadow) record and report.
        let reports_per_event = if variants.shadow.is_some() { 2 } else { 1 };
        let (completions_tx, completions_rx) = sync_channel(max_in_flight * reports_per_event + 1);
        let producer: Arc<Producer> = Arc::new(
            producer_config(config)
                .create_with_context(DeliveryContext::new(completions_tx.clone(), metrics.clone()))
                .map_err(PipelineError::Client)?,
        );
        let assigned = Arc::new(AtomicBool::new(false));
        let rebuilder = rebuild::WindowRebuilder::new(config, schema.clone()).map_err(PipelineError::Client)?;
        let context = WorkerContext::new(
            LoopState::new(windows, completions_rx, rebuilder),
            &config.topics.input,
            config.processing.shutdown_timeout,
            metrics.clone(),
            assigned.clone(),
        );
        let consumer: BaseConsumer<WorkerContext> =
            consumer_config(config).create_with_context(context).map_err(PipelineError::Client)?;
        let mut wanted = config.topics.worker_topics().to_vec();
        if variants.shadow.is_some() {
            wanted.push(&config.topics.shadow);
        }
        let missing = missing_topics(&consumer, &wanted, &servers)?;
        if !missing.is_empty() {
            return Err(PipelineError::MissingTopics(missing));
        }
        consumer.subscribe(&[&config.topics.input]).map_err(PipelineError::Client)?;

        let publisher = Publisher::new(
            producer.clone(),
            completions_tx,
            &config.topics.input,
            &config.topics.predictions,
            &config.topics.dlq,
            &config.topics.shadow,
            metrics.clone(),
        );
        let (jobs_tx, jobs_rx) = sync_channel(max_in_flight);
        let requests = Arc::new(RequestGate { jobs: std::sync::Mutex::new(Some(jobs_tx.clone())) });
        let batching = BatchingOptions {
            max_batch_size: config.batching.max_batch_size,
            max_wait: Duration::from_millis(config.batching.max_wait_ms),
        };
        let alerts = Arc::new(AlertSink::new(config).map_err(PipelineError::Client)?);
        let fallback_ref = variants.fallback.as_ref().map(|f| f.model_ref().clone());
        let mut sink = KafkaSink::new(publisher.clone(), metrics.clone()).with_alerts(
            alerts.clone(),
            &config.model.name,
            fallback_ref.clone(),
            config.monitor.alert_cooldown,
            matches!(primary, Primary::Failed { .. }),
        );
        let (reloads, reloads_rx) = sync_channel(1);
        let (controls, controls_rx) = sync_channel(8);
        let candidate_share = variants.candidate.as_ref().map(|(_, share)| *share);
        let has_candidate = variants.candidate.is_some();
        let breaker = || Breaker::new(BreakerOptions::from_config(&config.fallback));
        let batcher = match primary {
            Primary::Loaded(model) => Batcher::new(model, batching),
            Primary::Failed { model, reason, .. } => {
                let fallback = variants.fallback.take().expect("a failed primary is served only with a fallback");
                tracing::error!(
                    model = %model.name,
                    version = %model.version,
                    %reason,
                    fallback = %fallback.model_ref().version,
                    "The primary failed to load; the fallback serves until a valid version is loaded."
                );
                metrics.fallback_active.set(1);
                alerts.send(&crate::monitor::alerts::Alert {
                    kind: "fallback_active",
                    model: model.clone(),
                    variant: Some("primary"),
                    at: crate::event::now_rfc3339(),
                    details: serde_json::json!({
                        "state": "firing", "reason": "primary_load_failed", "last_error": reason,
                        "primary": model, "fallback": fallback_ref,
                    }),
                });
                Batcher::without_primary(fallback, breaker(), batching)
            }
        };
        let mut batcher = batcher
            .with_reloads(reloads_rx)
            .with_variants(variants.candidate.map(|(m, _)| m), variants.shadow)
            .with_controls(controls_rx);
        if config.cache.enabled {
            batcher = batcher.with_cache(config.cache.max_entries);
        }
        if let Some(fallback) = variants.fallback {
            batcher = batcher.with_fallback(fallback, breaker());
        }
        let inference_thread = std::thread::Builder::new()
            .name("streamcast-inference".into())
            .spawn(move || batcher.run(jobs_rx, &mut sink))
            .expect("spawning a thread only fails when the OS is out of resources");
        let consumer_loop = ConsumerLoop {
            jobs: jobs_tx,
            publisher,
            schema,
            max_in_flight,
            shutdown,
            metrics,
            passthrough: config.processing.passthrough,
            candidate_share: candidate_share.filter(|_| has_candidate),
        };
        let consumer_thread = std::thread::Builder::new()
            .name("streamcast-consumer".into())
            .spawn(move || consumer_loop.run(consumer))
            .expect("spawning a thread only fails when the OS is out of resources");
        Ok(Worker {
            consumer_thread,
            inference_thread,
            producer,
            flush_timeout: config.processing.shutdown_timeout,
            assigned,
            requests,
            reloads,
            controls,
            alerts,
        })
    }

    /// True while both threads are running.
    pub fn is_running(&self) -> bool {
        !self.consumer_thread.is_finished() && !self.inference_thread.is_finished()
    }

    /// Waits for the threads to finish (after shutdown was triggered, or a fatal error) and
    /// flushes the producer.
    pub fn join(self) -> Result<(), PipelineError> {
        self.requests.close();
        let consumer = self.consumer_thread.join().map_err(|_| PipelineError::Panicked("consumer"))?;
        let inference = self.inference_thread.join().map_err(|_| PipelineError::Panicked("inference"));
        if let Err(error) = self.producer.flush(self.flush_timeout) {
            tracing::warn!(%error, "Producer flush at shutdown failed.");
        }
        self.alerts.flush(self.flush_timeout);
        consumer.and(inference)
    }
}
