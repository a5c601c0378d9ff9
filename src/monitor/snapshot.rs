//! The `model_metrics` message, one per model version × variant and publish, and the producer
//! that sends it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::Serialize;

use super::drift::DriftStat;
use super::rolling::ErrorStats;
use crate::config::MonitorConfig;
use crate::event::{ModelRef, Variant};

/// A `model_metrics` message.
#[derive(Debug, Serialize)]
pub struct Snapshot<'a> {
    pub model: &'a ModelRef,
    pub variant: Variant,
    pub at: &'a str,
    pub window: WindowDef,
    pub joined: u64,
    pub pending: u64,
    pub expired: u64,
    pub unmatched_actuals: u64,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
    pub bias: Option<f64>,
    /// The same errors by horizon step, step 1 first; absent before any join.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_step: Vec<StepStats>,
    /// How intervals are calibrated (`intervals.enabled`); each step's in `per_step`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<IntervalDef>,
    /// A quantile bundle's pinball loss per level, over all steps of the joined pairs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinball: Vec<Pinball>,
    /// The served model's drift, repeated in every variant's snapshot.
    pub drift: &'a BTreeMap<String, DriftStat>,
    pub prediction_drift: Option<&'a DriftStat>,
    pub drifted_features: &'a [String],
}

/// The rolling error of one horizon step.
#[derive(Debug, Serialize)]
pub struct StepStats {
    /// 1 for the nearest step.
    pub step: usize,
    /// `count`, `rmse`, `mae` and `bias`, as for all steps together.
    #[serde(flatten)]
    pub stats: ErrorStats,
    /// MAE over the seasonal-naive forecast's MAE on the same targets (joined by time only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mase: Option<f64>,
    /// The step's calibrated interval and its coverage (`intervals.enabled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<StepInterval>,
}

/// One quantile level's mean pinball loss, ρ_τ(y − q) = max(τ·(y − q), (τ − 1)·(y − q)).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pinball {
    pub level: f64,
    /// Losses in the window (one per joined step).
    pub count: usize,
    /// Their mean, target units; null when none.
    pub loss: Option<f64>,
}

/// The interval settings a snapshot's calibration follows.
#[derive(Debug, Serialize)]
pub struct IntervalDef {
    /// The nominal coverage; workers serve a calibration only at their own configured level.
    pub level: f64,
    pub method: crate::config::IntervalMethod,
    pub coverage_band: f64,
}

/// One step's calibration: what workers put around forecasts, and how it has done.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepInterval {
    /// The conformal quantile of the window's absolute errors: the interval is the forecast
    /// ± this. `null` until the window holds `intervals.min_residuals` errors (and, for the
    /// split rule, enough for the level: ⌈(n + 1)·level⌉ ≤ n).
    pub half_width: Option<f64>,
    /// Errors in the window the quantile was taken over.
    pub residuals: usize,
    /// The level the quantile was taken at: the nominal one, or ACI's current one.
    pub level: f64,
    /// Share of the last judged intervals that held their actual.
    pub coverage: Option<f64>,
    /// Judged intervals that `coverage` is over.
    pub judged: usize,
}

/// The rolling error window a snapshot's numbers cover.
#[derive(Debug, Serialize)]
pub struct WindowDef {
    pub duration_s: f64,
    pub max_samples: usize,
}

impl WindowDef {
    /// The configured window.
    pub fn of(cfg: &MonitorConfig) -> WindowDef {
        WindowDef { duration_s: cfg.window_duration.as_secs_f64(), max_samples: cfg.window_count }
    }
}

/// Sends snapshots to the `model_metrics` topic, keyed by model name.
pub struct SnapshotSink {
    producer: BaseProducer,
    topic: String,
}

impl SnapshotSink {
    pub fn new(producer: BaseProducer, topic: String) -> SnapshotSink {
        SnapshotSink { producer, topic }
    }

    /// Enqueues a snapshot; a full queue is retried briefly, then the snapshot is dropped with
    /// an error log (the next publish sends fresh numbers anyway).
    pub fn send(&self, snapshot: &Snapshot<'_>) {
        let body = serde_json::to_vec(snapshot).expect("snapshot serializes");
        let topic = self.topic.as_str();
        let record = BaseRecord::to(topic).key(snapshot.model.name.as_str()).payload(&body[..]);
        let wait = || {
            self.producer.poll(Duration::from_millis(10));
        };
        if crate::kafka::send_with_retry(|r| self.producer.send(r), record, wait, Some(100)).is_err() {
            tracing::error!(topic, "Monitor could not enqueue a record.");
        }
    }

    /// Serves delivery callbacks without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits (bounded) for enqueued snapshots on shutdown.
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_fields_in_order() {
        let model = ModelRef { name: "m".into(), version: "1".into() };
        let drift = BTreeMap::new();
        let snapshot = Snapshot {
            model: &model,
            variant: Variant::Primary,
            at: "2024-01-01T00:00:00Z",
            window: WindowDef::of(&MonitorConfig::default()),
            joined: 2,
            pending: 1,
            expired: 0,
            unmatched_actuals: 3,
            rmse: Some(1.5),
            mae: Some(1.0),
            bias: Some(-0.5),
            per_step: vec![StepStats {
                step: 1,
                stats: ErrorStats { count: 2, rmse: Some(1.5), mae: Some(1.0), bias: Some(-0.5) },
                mase: None,
                interval: None,
            }],
            interval: None,
            pinball: Vec::new(),
            drift: &drift,
            prediction_drift: None,
            drifted_features: &[],
        };
        let json = serde_json::to_string(&snapshot).expect("serializes");
        assert_eq!(
            json,
            r#"{"model":{"name":"m","version":"1"},"variant":"primary","at":"2024-01-01T00:00:00Z","window":{"duration_s":3600.0,"max_samples":10000},"joined":2,"pending":1,"expired":0,"unmatched_actuals":3,"rmse":1.5,"mae":1.0,"bias":-0.5,"per_step":[{"step":1,"count":2,"rmse":1.5,"mae":1.0,"bias":-0.5}],"drift":{},"prediction_drift":null,"drifted_features":[]}"#
        );
    }
}
