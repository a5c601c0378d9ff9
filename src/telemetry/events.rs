//! Telemetry as typed events, after Vector's `internal_events`: each struct is one thing that
//! happened, and its [`InternalEvent::emit`] writes the log line and moves the metrics that
//! belong to it, so a log and its counter cannot drift apart and label values come from the
//! event's own types (never from ids, keys or error text).
//!
//! Gauges that mirror state (in-flight events, series held, lag) are set where the state lives;
//! the monitor's per-model gauges live in `monitor`.

use std::time::Duration;

use super::Metrics;
use crate::alert::Decision;
use crate::event::{ModelRef, RejectKind, Variant};
use crate::startup_pages::Released;

/// Something worth a log line and a metric.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// An input record went to the dead-letter topic.
pub struct EventRejected<'a> {
    pub kind: RejectKind,
    pub reason: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl InternalEvent for EventRejected<'_> {
    fn emit(self, metrics: &Metrics) {
        // Per event: DEBUG only; the counter by kind is what operators watch.
        tracing::debug!(
            kind = self.kind.as_str(),
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "Event dead-lettered."
        );
        metrics.rejected.with_label_values(&[self.kind.as_str()]).inc();
    }
}

/// The broker did not acknowledge the record standing for an input offset.
pub struct DeliveryFailed<'a> {
    pub partition: i32,
    pub offset: i64,
    pub error: &'a rdkafka::error::KafkaError,
}

impl InternalEvent for DeliveryFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(error = %self.error, partition = self.partition, offset = self.offset, "Delivery failed; stopping.");
        metrics.delivery_failures.inc();
    }
}

/// A record the broker refuses for good was skipped: its offset is committed without a
/// prediction or dead letter (`processing.unproducible = "skip"`).
pub struct RecordUnproducible<'a> {
    pub partition: i32,
    pub offset: i64,
    pub error: &'a rdkafka::error::KafkaError,
}

impl InternalEvent for RecordUnproducible<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            error = %self.error,
            partition = self.partition,
            offset = self.offset,
            "Record refused by the broker for good; skipped and committed. The original is still in the input topic at this offset."
        );
        metrics.unproducible_records.inc();
    }
}

/// One scored batch handed to the producer.
pub struct BatchPublished {
    pub size: usize,
    pub inference_time: Duration,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Streamed predictions by the primary and by the candidate, and those the fallback served.
    pub primary: u64,
    pub candidate: u64,
    pub by_fallback: u64,
}

impl InternalEvent for BatchPublished {
    fn emit(self, metrics: &Metrics) {
        metrics.batch_size.observe(self.size as f64);
        metrics.inference_duration.observe(self.inference_time.as_secs_f64());
        metrics.cache_hits.inc_by(self.cache_hits);
        metrics.cache_misses.inc_by(self.cache_misses);
        metrics.predictions.with_label_values(&[Variant::Primary.as_str()]).inc_by(self.primary);
        metrics.predictions.with_label_values(&[Variant::Candidate.as_str()]).inc_by(self.candidate);
        metrics.fallback_predictions.inc_by(self.by_fallback);
    }
}

/// Windows rebuilt from newly assigned partitions' history.
pub struct WindowsRebuilt<'a> {
    pub partitions: &'a [i32],
    pub series: usize,
    pub records: u64,
    /// Partitions whose history was not read to the end in time.
    pub incomplete: &'a [i32],
    pub took: Duration,
}

impl InternalEvent for WindowsRebuilt<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.series_rebuilt.inc_by(self.series as u64);
        if !self.incomplete.is_empty() {
            tracing::warn!(
                partitions = ?self.incomplete,
                "History not read to the resume offset in time; those series warm up afresh."
            );
        }
        if self.records > 0 {
            tracing::info!(
                partitions = ?self.partitions,
                series = self.series,
                records = self.records,
                ms = self.took.as_secs_f64() * 1e3,
                "Series windows rebuilt from the partitions' history."
            );
        }
    }
}

/// The registry watcher validated a new version and handed it over.
pub struct ModelReloaded<'a> {
    pub from: &'a str,
    pub to: &'a str,
}

impl InternalEvent for ModelReloaded<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(from = self.from, to = self.to, "New model version validated; swapping.");
        metrics.model_reloads.with_label_values(&["loaded"]).inc();
    }
}

/// The registry watcher refused a new version; the old one keeps serving.
pub struct ModelRefused<'a> {
    pub version: &'a str,
    pub reason: &'a str,
    pub serving: &'a str,
}

impl InternalEvent for ModelRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            version = self.version,
            reason = self.reason,
            serving = self.serving,
            "Model version refused; the old one keeps serving."
        );
        metrics.model_reloads.with_label_values(&["rejected"]).inc();
    }
}

/// A rollback or promotion of the candidate handed to the inference thread.
pub struct DecisionApplied<'a> {
    pub decision: Decision,
    pub candidate: &'a str,
    pub primary: &'a str,
    /// Its offset in the alerts topic.
    pub offset: i64,
}

impl InternalEvent for DecisionApplied<'_> {
    fn emit(self, metrics: &Metrics) {
        let label = match self.decision {
            Decision::Rollback => "rollback",
            Decision::Promote => "promote",
        };
        tracing::warn!(
            decision = label,
            candidate = self.candidate,
            primary = self.primary,
            offset = self.offset,
            "Applying a label-driven decision about the candidate."
        );
        metrics.variant_decisions.with_label_values(&[label]).inc();
    }
}

/// How the circuit breaker in front of the primary changed (`inference::breaker::Transition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerChange {
    /// Closed → open, after `failures` bad batches of the last `batches`: `fallback_active`
    /// starts firing.
    Opened { failures: usize, batches: usize },
    /// A half-open probe failed: open again (still firing).
    Reopened,
    /// Half-open → closed: `fallback_active` resolves.
    Closed,
}

/// A decision on the alerts topic was not applied (`variants.decision_key` is set).
pub struct DecisionIgnored<'a> {
    /// `unsigned`, `bad_signature` or `stale`.
    pub reason: &'static str,
    pub candidate: &'a str,
    pub offset: i64,
}

impl InternalEvent for DecisionIgnored<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            reason = self.reason,
            candidate = self.candidate,
            offset = self.offset,
            "Ignoring a decision that is not signed with the decision key."
        );
        metrics.decisions_ignored.with_label_values(&[self.reason]).inc();
    }
}

/// The circuit breaker in front of the primary changed state.
pub struct BreakerTransitioned<'a> {
    pub change: BreakerChange,
    /// The primary's last error.
    pub error: Option<&'a str>,
}

impl InternalEvent for BreakerTransitioned<'_> {
    fn emit(self, metrics: &Metrics) {
        let error = self.error;
        match self.change {
            BreakerChange::Opened { failures, batches } => {
                tracing::error!(failures, batches, error, "Circuit breaker opened: the fallback serves every batch.");
                metrics.fallback_active.set(1);
                metrics.breaker_transitions.with_label_values(&["open"]).inc();
            }
            BreakerChange::Reopened => {
                tracing::warn!(error, "Half-open probe failed: the circuit breaker is open again.");
                metrics.breaker_transitions.with_label_values(&["open"]).inc();
            }
            BreakerChange::Closed => {
                tracing::info!("Circuit breaker closed: the primary serves again.");
                metrics.fallback_active.set(0);
                metrics.breaker_transitions.with_label_values(&["closed"]).inc();
            }
        }
    }
}

/// The primary failed to load at start-up and the fallback serves until a valid version comes.
pub struct PrimaryLoadFailed<'a> {
    pub model: &'a ModelRef,
    pub reason: &'a str,
    pub fallback: &'a ModelRef,
}

impl InternalEvent for PrimaryLoadFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            model = %self.model.name,
            version = %self.model.version,
            reason = self.reason,
            fallback = %self.fallback.version,
            "The primary failed to load; the fallback serves until a valid version is loaded."
        );
        metrics.fallback_active.set(1);
    }
}

/// The pages only start-up used were handed back to the kernel (`startup_pages`).
pub struct StartupPagesReleased(pub Released);

impl InternalEvent for StartupPagesReleased {
    fn emit(self, metrics: &Metrics) {
        let Released { mappings, refused, resident_before, resident_after } = self.0;
        let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
        tracing::info!(
            mappings,
            refused,
            resident_before_mib = mib(resident_before),
            resident_after_mib = mib(resident_after),
            "Handed start-up's pages back to the kernel."
        );
        let shrank = resident_before.saturating_sub(resident_after);
        metrics.startup_pages_released_bytes.set(i64::try_from(shrank).unwrap_or(i64::MAX));
    }
}

/// Start-up's pages could not be handed back (`/proc` unreadable): the worker runs on, holding them.
pub struct StartupPagesNotReleased<'a> {
    pub error: &'a std::io::Error,
}

impl InternalEvent for StartupPagesNotReleased<'_> {
    fn emit(self, _metrics: &Metrics) {
        // The gauge keeps the last hand-back's figure; nothing went back this time.
        tracing::warn!(error = %self.error, "Could not hand start-up's pages back to the kernel.");
    }
}

/// The execution provider the primary's session runs on (logged when the session was built).
pub struct ProviderSelected {
    /// `cpu` or `cuda`.
    pub provider: &'static str,
    /// CUDA was asked for (`auto`) and the CPU serves.
    pub fell_back: bool,
}

impl InternalEvent for ProviderSelected {
    fn emit(self, metrics: &Metrics) {
        metrics.execution_provider.with_label_values(&[self.provider]).set(1);
        if self.fell_back {
            metrics.execution_provider_fallback.set(1);
        }
    }
}
