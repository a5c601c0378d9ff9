//! The streaming worker: consumer thread → inference thread → producer, with offsets stored
//! only after the broker acknowledged each event's prediction or dead-letter record.
//!
//! - [`consumer`]: the poll loop, validation, windows, rebalance draining.
//! - [`offsets`]: in-order offset tracking per partition.
//! - [`dispatch`]: routes each scored row by origin: Kafka for the stream, a reply for HTTP.
//! - [`publish`]: predictions, shadow predictions, dead letters, delivery reports.
//! - [`rebuild`]: per-series windows rebuilt from a newly assigned partition's history.
//! - [`spares`]: a scored event's buffers, handed back for the consumer to decode into.
//!
//! Every queue on the data path is bounded: by `consumer.max_in_flight` events and
//! `consumer.max_in_flight_bytes` bytes for the stream, plus `/predict`'s `http.max_in_flight`.
//! Of the stream's events in flight, at most [`Unscored::limit`] wait for the model.

pub mod consumer;
pub mod dispatch;
pub mod offsets;
pub mod publish;
pub mod rebuild;
pub mod spares;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer as _;

use crate::alert::{Alert, AlertSink, AlertState, Details, FallbackDetails};
use crate::config::Config;
use crate::event::FeatureSchema;
use crate::event::Variant;
use crate::inference::breaker::{Breaker, BreakerOptions, BreakerReporter};
use crate::inference::{Batcher, BatchingOptions, Model, ModelSet, Scorer, VariantControl};
use crate::kafka::{group_consumer_config, producer_config, require_topics, ClusterError};
use crate::loader::{Primary, Variants};
use crate::shutdown::Shutdown;
use crate::telemetry::events::{InternalEvent, PrimaryLoadFailed};
use crate::telemetry::Metrics;
use crate::window::{EventTime, WindowStore};
use consumer::{ConsumerLoop, LoopState, WorkerContext};
use dispatch::{Dispatcher, StreamPublisher};
use publish::{DeliveryContext, InputOffset, Producer, Publisher};

/// Errors of the streaming pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Delivery(String),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// How many events librdkafka keeps fetched ahead for the worker (`queued.min.messages`, which
/// `[kafka]` may override): one [`Unscored::limit`], at most one in-flight cap. The consumer hands
/// the model at most that many events at once, so a deeper prefetch only holds fetch responses
/// and per-message bookkeeping longer: the in-flight cap (10 000) it was before cost 3–7 MiB more
/// peak RSS while draining a backlog, for no drain rate (`bench/FINDINGS.md`, Memory). With one
/// limit handed over and one prefetched, the model has about sixteen batches of work while a
/// refill is fetched. Passthrough has no model to wait for, so there the in-flight cap sets it.
fn prefetch_events(config: &Config) -> usize {
    if config.processing.passthrough {
        config.consumer.max_in_flight
    } else {
        stream_share(config)
    }
}

/// The stream's share of the inference queue: the events the consumer hands the model at once,
/// [`Unscored::limit`], or the in-flight cap when that is lower.
fn stream_share(config: &Config) -> usize {
    Unscored::limit_for(config.batching.max_batch_size).min(config.consumer.max_in_flight)
}

/// Stream events handed to the inference thread and not yet scored and published.
///
/// The consumer stops reading ahead once [`Unscored::limit`] of them wait, so a backlog waits
/// for a busy model in librdkafka's prefetch (about 240 bytes of bookkeeping per event, bounded
/// on its own) rather than as decoded jobs, each holding its value, its window and a queue slot.
/// `consumer.max_in_flight` then only has to cover the producer's wait for acknowledgements.
#[derive(Debug, Clone)]
pub struct Unscored(Arc<UnscoredInner>);

#[derive(Debug)]
struct UnscoredInner {
    /// See [`Unscored::limit`].
    limit: usize,
    count: AtomicUsize,
    /// The consumer thread, once it runs: woken when a scored batch frees room.
    consumer: OnceLock<Thread>,
    /// The consumer is parked (or about to park) on the limit.
    waiting: AtomicBool,
}

impl Unscored {
    pub fn new(max_batch_size: usize) -> Unscored {
        Unscored(Arc::new(UnscoredInner {
            limit: Unscored::limit_for(max_batch_size),
            count: AtomicUsize::new(0),
            consumer: OnceLock::new(),
            waiting: AtomicBool::new(false),
        }))
    }

    /// Eight batches: one being scored and the next ones full, with room for the consumer to be
    /// descheduled for a few milliseconds without the model running dry (four cost co2-mlp
    /// about a tenth of its drain rate on two busy cores). At least 256 events, so a small
    /// `max_batch_size` does not cost a consumer wake-up per few events.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// [`Unscored::limit`] for a `batching.max_batch_size`.
    fn limit_for(max_batch_size: usize) -> usize {
        max_batch_size.saturating_mul(8).max(256)
    }

    /// Called before the job is queued, so that the count never goes below zero.
    pub fn add(&self) {
        // Relaxed: only `scored` and `wait_for_room` must see each other (see there).
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` jobs were scored and published; wakes the consumer if it waits on the limit.
    pub fn scored(&self, n: usize) {
        // SeqCst here and in `wait_for_room` (a store-load pair on each side): either this thread
        // sees `waiting` and unparks, or the consumer sees the lower count and does not park.
        self.0.count.fetch_sub(n, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) {
            if let Some(consumer) = self.0.consumer.get() {
                consumer.unpark();
            }
        }
    }

    pub fn get(&self) -> usize {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Registers the calling thread as the one `wait_for_room` parks.
    pub fn register_consumer(&self) {
        let _ = self.0.consumer.set(std::thread::current());
    }

    /// Parks the (registered) consumer until a scored batch brings the count below the limit,
    /// or `timeout`: a delivery report need not come first, as it does for the in-flight caps.
    pub fn wait_for_room(&self, timeout: Duration) {
        self.0.waiting.store(true, Ordering::SeqCst);
        if self.0.count.load(Ordering::SeqCst) >= self.0.limit {
            // A wake-up that came first is kept by the thread's park token.
            std::thread::park_timeout(timeout);
        }
        self.0.waiting.store(false, Ordering::SeqCst);
    }
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
    /// The calibrated interval, when intervals are on.
    pub interval: Option<crate::event::IntervalIn>,
}

/// A `/predict` event waiting for its prediction. It holds one of the gate's permits until
/// it is answered (or dropped).
#[derive(Debug)]
pub struct RequestOrigin {
    pub reply: tokio::sync::oneshot::Sender<Result<Scored, String>>,
    _permit: Permit,
}

/// One unit of `/predict`'s share of the inference queue; released on drop.
#[derive(Debug)]
struct Permit(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Hands HTTP requests to the inference thread, through the same queue as the stream but
/// within a share of its own (`http.max_in_flight`): the queue holds the stream's share (see
/// [`Unscored::limit`]) plus that share, so an admitted request always fits and never takes the
/// stream's room.
///
/// The sender is dropped on shutdown, so the inference thread can finish once the stream's own
/// sender is gone too.
#[derive(Debug)]
pub struct RequestGate {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<crate::inference::Job<Origin>>>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: usize,
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// No inference thread (monitor-only process, or shutting down).
    Closed,
    /// `/predict`'s share is taken: nothing of the request was queued.
    Full,
}

/// Receives one `/predict` event's prediction.
pub type Reply = tokio::sync::oneshot::Receiver<Result<Scored, String>>;

impl RequestGate {
    fn new(jobs: std::sync::mpsc::SyncSender<crate::inference::Job<Origin>>, max_in_flight: usize) -> RequestGate {
        RequestGate {
            jobs: std::sync::Mutex::new(Some(jobs)),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_in_flight,
        }
    }

    /// Queues every input of one request, or none: `Full` when they do not all fit the share.
    pub fn submit_all(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Reply>, GateError> {
        use std::sync::atomic::Ordering;
        let n = inputs.len();
        let taken = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            (used + n <= self.max_in_flight).then_some(used + n)
        });
        if taken.is_err() {
            return Err(GateError::Full);
        }
        let permits: Vec<Permit> = (0..n).map(|_| Permit(self.in_flight.clone())).collect();
        let guard = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let tx = guard.as_ref().ok_or(GateError::Closed)?;
        let mut replies = Vec::with_capacity(n);
        for (input, permit) in inputs.into_iter().zip(permits) {
            let (reply, rx) = tokio::sync::oneshot::channel();
            // HTTP requests are always scored by the primary: they carry no stable series routing.
            let origin = Origin::Request(RequestOrigin { reply, _permit: permit });
            let job = crate::inference::Job { input, candidate: false, origin };
            // The queue has room for the whole share, so only a closed queue refuses.
            match tx.try_send(job) {
                Ok(()) => replies.push(rx),
                Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(GateError::Full),
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(GateError::Closed),
            }
        }
        Ok(replies)
    }

    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Where a streamed event came from, and what its prediction must echo.
#[derive(Debug)]
pub struct StreamOrigin {
    pub token: InputOffset,
    pub text: EventText,
    pub warmup: bool,
    /// Steps of the event-time window the gap policy filled in.
    pub gap_filled: u32,
    pub received: Instant,
    pub traceparent: Option<String>,
    /// The OpenTelemetry `process` span, when OTLP export is on.
    pub span: Option<crate::otel::EventSpan>,
}

/// A streamed event's original message value, kept so that an inference failure can be
/// dead-lettered unchanged, and the strings its prediction echoes, in one allocation, which
/// goes back to the consumer thread once the prediction is published ([`spares`]).
#[derive(Debug)]
pub struct EventText {
    bytes: Vec<u8>,
    /// Where the value, `id`, `series_id` and `timestamp` end in `bytes`.
    ends: [usize; 4],
}

impl EventText {
    /// In `bytes`' allocation (a spare, see [`spares`]).
    pub fn new_in(mut bytes: Vec<u8>, payload: &[u8], id: &str, series_id: &str, timestamp: &str) -> EventText {
        bytes.clear();
        bytes.reserve_exact(payload.len() + id.len() + series_id.len() + timestamp.len());
        let mut ends = [0; 4];
        for (end, part) in ends.iter_mut().zip([payload, id.as_bytes(), series_id.as_bytes(), timestamp.as_bytes()]) {
            bytes.extend_from_slice(part);
            *end = bytes.len();
        }
        EventText { bytes, ends }
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[..self.ends[0]]
    }

    /// `(id, series_id, timestamp)`.
    pub fn strings(&self) -> (&str, &str, &str) {
        // Copied from `&str`s in `new`, so this never fails; checking the three at once costs a
        // few nanoseconds on strings this short and keeps the module free of `unsafe`.
        let [value, id, series_id, end] = self.ends;
        let all = std::str::from_utf8(&self.bytes[value..]).unwrap_or_default();
        let part = |from: usize, to: usize| all.get(from - value..to - value).unwrap_or_default();
        (part(value, id), part(id, series_id), part(series_id, end))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The inference thread's scorer: the primary (or the fallback standing in for it), the
/// variants, the cache, and the breaker with its alerts.
fn build_scorer(
    config: &Config,
    primary: Primary,
    variants: Variants,
    alerts: &Arc<AlertSink>,
    metrics: &Arc<Metrics>,
) -> Scorer {
    let fallback_ref = variants.fallback.as_ref().map(|f| f.model_ref().clone());
    let failed = matches!(primary, Primary::Failed { .. });
    let primary = match primary {
        Primary::Loaded(model) => Some(model),
        Primary::Failed { model, reason, .. } => {
            let fallback = fallback_ref.clone().expect("a failed primary is served only with a fallback");
            PrimaryLoadFailed { model: &model, reason: &reason, fallback: &fallback }.emit(metrics);
            let details = FallbackDetails {
                state: AlertState::Firing,
                primary: model.clone(),
                fallback: Some(fallback),
                reason: Some("primary_load_failed".into()),
                failed_batches: None,
                batches: None,
                last_error: Some(reason),
            };
            alerts.send(&Alert::new(model, Some(Variant::Primary), Details::FallbackActive(details)));
            None
        }
    };
    let models = ModelSet::new(primary).with_variants(variants.candidate.map(|(m, _)| m), variants.shadow);
    let mut scorer = Scorer::new(models);
    if config.cache.enabled {
        scorer = scorer.with_cache(config.cache.max_entries);
    }
    if let Some(fallback) = variants.fallback {
        let reporter = BreakerReporter::new(
            alerts.clone(),
            metrics.clone(),
            &config.model.name,
            fallback_ref,
            config.monitor.alert_cooldown,
            failed,
        );
        scorer = scorer.with_fallback(fallback, Breaker::new(BreakerOptions::from(&config.fallback)), Some(reporter));
    }
    scorer
}

/// A running worker: its two threads and the producer they share.
pub struct Worker {
    consumer_thread: JoinHandle<Result<(), PipelineError>>,
    inference_thread: JoinHandle<()>,
    producer: Arc<Producer>,
    flush_timeout: Duration,
    /// Partitions held and broker liveness, for `/readyz`.
    pub health: Arc<consumer::ConsumerHealth>,
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
        variants: Variants,
        alerts: Arc<AlertSink>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Result<Worker, PipelineError> {
        let bundle = primary.bundle();
        let manifest = &bundle.manifest;
        let schema = FeatureSchema::for_config(manifest, &config.validation);
        let time = EventTime::for_bundle(manifest, config.windows.policy());
        if let Some(t) = &time {
            tracing::info!(step_ms = t.step_ms, tolerance_ms = t.tolerance_ms, duplicates = ?t.duplicates, gaps = ?t.gaps, "Series windows follow event time.");
        }
        let windows = WindowStore::new(manifest.window, manifest.features.len(), config.windows.max_series, time);
        let max_in_flight = config.consumer.max_in_flight;

        // Each in-flight event yields one record and so one report: this capacity never fills.
        // With a shadow, each event yields a second (shadow) record and report.
        let reports_per_event = if variants.shadow.is_some() { 2 } else { 1 };
        let (completions_tx, completions_rx) = sync_channel(max_in_flight * reports_per_event + 1);
        let health = Arc::new(consumer::ConsumerHealth::default());
        let producer: Arc<Producer> = Arc::new(
            producer_config(config)
                .create_with_context(DeliveryContext::new(completions_tx.clone(), metrics.clone(), health.clone()))
                .map_err(ClusterError::Client)?,
        );
        let rebuilder = rebuild::WindowRebuilder::new(config, schema.clone()).map_err(ClusterError::Client)?;
        let context = WorkerContext::new(
            LoopState::new(windows, completions_rx, rebuilder),
            &config.topics.input,
            config.processing.shutdown_timeout,
            metrics.clone(),
            health.clone(),
            config.processing.unproducible,
        );
        let consumer: BaseConsumer<WorkerContext> = group_consumer_config(config, prefetch_events(config))
            .create_with_context(context)
            .map_err(ClusterError::Client)?;
        let mut wanted = config.topics.worker_topics().to_vec();
        if variants.shadow.is_some() {
            wanted.push(&config.topics.shadow);
        }
        // The monitor's calibration arrives in its snapshots.
        if config.intervals.enabled {
            wanted.push(&config.topics.metrics);
        }
        require_topics(&consumer, &wanted, config)?;
        // The cluster just answered; statistics keep this current from here on.
        health.mark_up();
        consumer.subscribe(&[&config.topics.input]).map_err(ClusterError::Client)?;

        let publisher = Publisher::new(
            producer.clone(),
            completions_tx,
            &config.topics.input,
            &config.topics.predictions,
            &config.topics.dlq,
            &config.topics.shadow,
            metrics.clone(),
            crate::kafka::max_record_bytes(config),
        );
        // The stream's share, /predict's share, and a batch of slack for the few records a
        // consumer at a cap is still handed.
        let unscored = Unscored::new(config.batching.max_batch_size);
        let (jobs_tx, jobs_rx) =
            sync_channel(stream_share(config) + config.http.max_in_flight + config.batching.max_batch_size);
        let requests = Arc::new(RequestGate::new(jobs_tx.clone(), config.http.max_in_flight));
        let candidate_share = variants.candidate.as_ref().map(|(_, share)| *share);
        let (reloads, reloads_rx) = sync_channel(1);
        let (controls, controls_rx) = sync_channel(8);
        let scorer = build_scorer(config, primary, variants, &alerts, &metrics)
            .map_models(|m| m.with_reloads(reloads_rx).with_controls(controls_rx));
        let batcher = Batcher::new(scorer, BatchingOptions::from(&config.batching));
        let intervals = if config.intervals.enabled {
            let shared = crate::interval::SharedCalibration::default();
            // Ends with the shutdown signal; nothing waits for it (it only reads).
            crate::interval::spawn_follower(config, shared.clone(), shutdown.clone()).map_err(ClusterError::Client)?;
            let cqr = match (config.intervals.method, &manifest.quantiles) {
                (crate::config::IntervalMethod::Cqr, Some(levels)) => {
                    crate::interval::cqr_band(levels, config.intervals.level).map(|(lo, hi)| (lo, hi, levels.len()))
                }
                _ => None,
            };
            Some(dispatch::Intervals::new(shared, config.intervals.level, cqr))
        } else {
            None
        };
        let stream = StreamPublisher::new(publisher.clone(), metrics.clone(), intervals);
        let (spares_back, spare_stock) = spares::spares(config.batching.max_batch_size);
        let mut sink = Dispatcher::new(stream, metrics.clone(), unscored.clone(), spares_back);
        let inference_thread = std::thread::Builder::new()
            .name("streamcast-inference".into())
            .spawn(move || batcher.run(jobs_rx, &mut sink))
            .expect("spawning a thread only fails when the OS is out of resources");
        let consumer_loop = ConsumerLoop {
            jobs: consumer::JobQueue::new(jobs_tx, unscored),
            spares: spare_stock,
            publisher,
            schema,
            max_in_flight,
            max_in_flight_bytes: config.consumer.max_in_flight_bytes,
            commit_interval: Duration::from_millis(config.consumer.commit_interval_ms),
            shutdown,
            metrics,
            passthrough: config.processing.passthrough,
            candidate_share,
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
            health,
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
        // The consumer drains for at most `shutdown_timeout`; the flushes share what is left of
        // it, so the whole join stays within about one `shutdown_timeout`.
        let deadline = std::time::Instant::now() + self.flush_timeout;
        let left = || deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(100));
        self.requests.close();
        let consumer = self.consumer_thread.join().map_err(|_| PipelineError::Panicked("consumer"))?;
        let inference = self.inference_thread.join().map_err(|_| PipelineError::Panicked("inference"));
        if let Err(error) = self.producer.flush(left()) {
            tracing::warn!(%error, "Producer flush at shutdown failed.");
        }
        if let Err(error) = self.alerts.flush(left()) {
            tracing::warn!(%error, "Alert producer flush failed.");
        }
        consumer.and(inference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_queued_whole_or_not_at_all_within_its_share() {
        let (tx, rx) = sync_channel(16);
        let gate = RequestGate::new(tx, 3);
        let first = gate.submit_all(vec![vec![1.0], vec![2.0]]).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(gate.submit_all(vec![vec![3.0], vec![4.0]]).unwrap_err(), GateError::Full);
        assert_eq!(rx.try_iter().count(), 2, "the refused request queued nothing");
        // Scored (here: dropped) jobs give their permits back.
        assert_eq!(gate.submit_all(vec![vec![5.0], vec![6.0], vec![7.0]]).map(|r| r.len()), Ok(3));
        gate.close();
        drop(rx);
        assert_eq!(gate.submit_all(vec![vec![8.0]]).unwrap_err(), GateError::Closed);
    }

    #[test]
    fn the_prefetch_is_one_unscored_limit_within_the_in_flight_cap() {
        let config = |extra: &str| {
            let toml = format!(
                "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9092\"\n[consumer]\ngroup_id = \"g\"\n{extra}\n\
                 [model]\nname = \"co2-mlp\"\n"
            );
            Config::from_table(toml.parse().unwrap()).unwrap()
        };
        assert_eq!(prefetch_events(&config("")), 2048);
        assert_eq!(prefetch_events(&config("max_in_flight = 1500")), 1500);
        assert_eq!(prefetch_events(&config("[batching]\nmax_batch_size = 1024")), 8192);
        assert_eq!(prefetch_events(&config("[processing]\npassthrough = true")), 10_000);
    }

    #[test]
    fn a_scored_batch_wakes_the_consumer_waiting_on_the_unscored_limit() {
        assert_eq!(Unscored::new(256).limit(), 2048);
        let unscored = Unscored::new(8);
        assert_eq!(unscored.limit(), 256);
        for _ in 0..300 {
            unscored.add();
        }
        let waiter = {
            let unscored = unscored.clone();
            std::thread::spawn(move || {
                unscored.register_consumer();
                let start = Instant::now();
                // Spurious wake-ups are allowed: wait as the consumer loop does, until below.
                while unscored.get() >= 256 && start.elapsed() < Duration::from_secs(20) {
                    unscored.wait_for_room(Duration::from_secs(10));
                }
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(unscored.get(), 300);
        unscored.scored(100);
        let waited = waiter.join().unwrap();
        assert_eq!(unscored.get(), 200);
        // Woken by `scored`, not by the 10 s timeout.
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
        // Below the limit, nothing parks.
        let start = Instant::now();
        unscored.wait_for_room(Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
