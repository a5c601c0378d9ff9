//! Logging and Prometheus metrics, and the typed events that feed them ([`events`]).
//!
//! Metric labels come from small fixed sets (reject kind, variant, provider), never from ids,
//! keys or error text.

pub mod events;

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{LogFormat, TelemetryConfig};
use crate::event::RejectKind;

/// Installs the global `tracing` subscriber. `RUST_LOG` wins over the configured level.
pub fn init_logging(config: &TelemetryConfig) {
    use tracing_subscriber::EnvFilter;
    // ONNX Runtime logs every graph transform at INFO; keep it at WARN unless RUST_LOG asks.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{},ort=warn", config.log_level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests, the demo) is harmless; keep the first.
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}

/// Every metric the worker exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounter,
    pub events_acknowledged: IntCounter,
    pub predictions: IntCounterVec,
    pub rejected: IntCounterVec,
    pub extra_features: IntCounter,
    pub delivery_failures: IntCounter,
    /// Records the broker refused for good and that were skipped (`processing.unproducible`).
    pub unproducible_records: IntCounter,
    pub end_to_end_latency: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub in_flight: IntGauge,
    /// Of those, decoded and waiting for the model or being scored.
    pub unscored: IntGauge,
    pub series_windows: IntGauge,
    pub series_evicted: IntCounter,
    /// Event-time windows: observations by how they were placed (`out_of_order`, `duplicate`,
    /// `late`, `off_grid`), gaps reset (`gap_reset`) and steps filled in (`gap_filled_step`).
    pub window_cases: IntCounterVec,
    /// Series windows rebuilt from a newly assigned partition's history.
    pub series_rebuilt: IntCounter,
    pub execution_provider: IntGaugeVec,
    /// Per input partition (a small, fixed set): messages between the consumer's position and
    /// the high watermark, from librdkafka's statistics.
    pub consumer_lag_messages: IntGaugeVec,
    /// Per input partition: how far behind the newest event the consumer is, in seconds (age of
    /// the last consumed event while lag is positive, 0 when caught up).
    pub consumer_lag_seconds: prometheus::GaugeVec,
    /// Messages waiting in the producer's queues (librdkafka `msg_cnt`).
    pub producer_queue_messages: IntGauge,
    /// New model versions found by the registry watcher, by result (`loaded`, `rejected`).
    pub model_reloads: IntCounterVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// 1 when CUDA was asked for (`auto`) and the worker fell back to CPU.
    pub execution_provider_fallback: IntGauge,
    /// How much the resident set shrank at the last hand-back of start-up's pages (`startup_pages`):
    /// once start-up is over, then after each session the registry builds.
    pub startup_pages_released_bytes: IntGauge,
    /// Batches handed to the inference thread and not yet handed to the producer (0 or 1 per
    /// worker: one inference thread scores one batch at a time).
    pub in_flight_batches: IntGauge,
    /// 1 while the circuit breaker is open (the fallback serves every batch).
    pub fallback_active: IntGauge,
    /// Predictions served by the fallback (breaker open, or the primary failed that batch).
    pub fallback_predictions: IntCounter,
    /// Breaker state changes, by new state (`open`, `closed`).
    pub breaker_transitions: IntCounterVec,
    /// Label-driven decisions applied to the A/B candidate, by kind (`rollback`, `promote`).
    pub variant_decisions: IntCounterVec,
    /// Decisions not applied because `variants.decision_key` is set and they are unsigned,
    /// wrongly signed or stale, by reason.
    pub decisions_ignored: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric name");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric name");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let latency_buckets = prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets");
        let m = Metrics {
            events_consumed: counter("streamcast_events_consumed_total", "Input events consumed."),
            events_acknowledged: counter(
                "streamcast_events_acknowledged_total",
                "Input events whose prediction or dead-letter record the broker acknowledged (offset stored).",
            ),
            predictions: counter_vec("streamcast_predictions_total", "Predictions produced.", &["variant"]),
            rejected: counter_vec(
                "streamcast_events_rejected_total",
                "Events sent to the dead-letter topic.",
                &["kind"],
            ),
            extra_features: counter(
                "streamcast_extra_features_total",
                "Feature names in input objects that the bundle does not use (ignored).",
            ),
            delivery_failures: counter("streamcast_delivery_failures_total", "Records the broker did not acknowledge."),
            unproducible_records: counter(
                "streamcast_unproducible_records_total",
                "Records the broker refused for good (too large, invalid), skipped and committed.",
            ),
            end_to_end_latency: histogram(
                "streamcast_end_to_end_latency_seconds",
                "From consuming an event to handing its prediction to the producer.",
                latency_buckets.clone(),
            ),
            inference_duration: histogram(
                "streamcast_inference_duration_seconds",
                "ONNX Runtime time per batch.",
                latency_buckets,
            ),
            batch_size: histogram(
                "streamcast_batch_size",
                "Events per inference batch.",
                prometheus::exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
            ),
            in_flight: gauge("streamcast_in_flight_events", "Events consumed and not yet acknowledged."),
            unscored: gauge(
                "streamcast_unscored_events",
                "Events consumed and queued for the model, not yet scored and published.",
            ),
            series_windows: gauge("streamcast_series_windows", "Series whose window state is held."),
            series_evicted: counter("streamcast_series_evicted_total", "Series windows evicted by the LRU cap."),
            window_cases: counter_vec(
                "streamcast_window_observations_total",
                "Event-time windows: observations out of order, duplicated, late or off the grid; gaps reset; steps filled.",
                &["case"],
            ),
            series_rebuilt: counter(
                "streamcast_series_rebuilt_total",
                "Series windows rebuilt from a newly assigned partition's history.",
            ),
            execution_provider: int_gauge_vec(
                "streamcast_execution_provider",
                "1 for the execution provider in use.",
                &["provider"],
            ),
            consumer_lag_messages: int_gauge_vec(
                "streamcast_consumer_lag_messages",
                "Input messages not yet consumed, per partition.",
                &["partition"],
            ),
            consumer_lag_seconds: gauge_vec(
                "streamcast_consumer_lag_seconds",
                "Seconds behind the newest input event, per partition.",
                &["partition"],
            ),
            producer_queue_messages: gauge("streamcast_producer_queue_messages", "Messages in the producer's queues."),
            cache_hits: counter("streamcast_cache_hits_total", "Predictions served from the prediction cache."),
            cache_misses: counter("streamcast_cache_misses_total", "Prediction cache lookups that ran the model."),
            execution_provider_fallback: gauge(
                "streamcast_execution_provider_fallback",
                "1 when CUDA was wanted (auto) and inference fell back to CPU.",
            ),
            startup_pages_released_bytes: gauge(
                "streamcast_startup_pages_released_bytes",
                "Bytes the resident set shrank by at the last hand-back of start-up's code pages to the kernel.",
            ),
            model_reloads: counter_vec(
                "streamcast_model_reloads_total",
                "New model versions found by the registry watcher, by result.",
                &["result"],
            ),
            in_flight_batches: gauge(
                "streamcast_in_flight_batches",
                "Batches being scored or published by the inference thread.",
            ),
            fallback_active: gauge("streamcast_fallback_active", "1 while the circuit breaker is open."),
            fallback_predictions: counter(
                "streamcast_fallback_predictions_total",
                "Predictions served by the fallback instead of the primary.",
            ),
            breaker_transitions: counter_vec(
                "streamcast_breaker_transitions_total",
                "Circuit breaker state changes, by new state.",
                &["state"],
            ),
            variant_decisions: counter_vec(
                "streamcast_variant_decisions_total",
                "Rollback and promotion decisions applied to the A/B candidate.",
                &["decision"],
            ),
            decisions_ignored: counter_vec(
                "streamcast_decisions_ignored_total",
                "Decisions on the alerts topic ignored: unsigned, wrongly signed or stale (with a decision key).",
                &["reason"],
            ),
            registry,
        };
        for kind in RejectKind::ALL {
            m.rejected.with_label_values(&[kind.as_str()]);
        }
        for case in ["out_of_order", "duplicate", "late", "off_grid", "future", "gap_reset", "gap_filled_step"] {
            m.window_cases.with_label_values(&[case]);
        }
        Arc::new(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}
