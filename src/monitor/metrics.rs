//! The monitor's Prometheus gauges: registered once, set on every publish.

use std::collections::BTreeMap;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::drift::DriftStat;
use super::scoring::KeyReport;

/// Cumulative error sums per model version × variant, as counters: PromQL rates of them give the
/// group's RMSE and MAE over any range, across leader changes (a new leader's counters start at
/// zero, which `rate` reads as a counter reset). See `deploy/prometheus-rules.yml`.
#[derive(Clone)]
pub struct ErrorCounters {
    count: IntCounterVec,
    squared: prometheus::CounterVec,
    absolute: prometheus::CounterVec,
}

impl ErrorCounters {
    /// Unregistered counters (tests).
    pub fn unregistered() -> ErrorCounters {
        Self::new(None)
    }

    fn new(registry: Option<&Registry>) -> ErrorCounters {
        let key = &["model", "version", "variant"];
        let c = |name: &str, help: &str| {
            let v = prometheus::CounterVec::new(Opts::new(name, help), key).expect("valid metric");
            if let Some(r) = registry {
                r.register(Box::new(v.clone())).expect("registered once");
            }
            v
        };
        let count = IntCounterVec::new(
            Opts::new("streamcast_monitor_errors_total", "Joined prediction errors scored (one per horizon step)."),
            key,
        )
        .expect("valid metric");
        if let Some(r) = registry {
            r.register(Box::new(count.clone())).expect("registered once");
        }
        ErrorCounters {
            count,
            squared: c("streamcast_monitor_squared_error_total", "Sum of squared errors (target units squared)."),
            absolute: c("streamcast_monitor_absolute_error_total", "Sum of absolute errors (target units)."),
        }
    }

    /// Counts one joined pair's errors.
    pub fn add(&self, model: &crate::event::ModelRef, variant: crate::event::Variant, errors: &[f64]) {
        let labels = [model.name.as_str(), model.version.as_str(), variant.as_str()];
        self.count.with_label_values(&labels).inc_by(errors.len() as u64);
        self.squared.with_label_values(&labels).inc_by(errors.iter().map(|e| e * e).sum());
        self.absolute.with_label_values(&labels).inc_by(errors.iter().map(|e| e.abs()).sum());
    }
}

/// The leader's lag behind each topic it reads: messages, and seconds since the last record read
/// when behind.
#[derive(Clone)]
pub struct LagGauges {
    messages: IntGaugeVec,
    seconds: GaugeVec,
}

impl LagGauges {
    pub fn register(registry: &Registry) -> LagGauges {
        let messages = IntGaugeVec::new(
            Opts::new("streamcast_monitor_lag_messages", "Records the monitor has yet to read, per topic."),
            &["topic"],
        )
        .expect("valid metric");
        let seconds = GaugeVec::new(
            Opts::new("streamcast_monitor_lag_seconds", "Age of the last record read while behind, per topic."),
            &["topic"],
        )
        .expect("valid metric");
        registry.register(Box::new(messages.clone())).expect("registered once");
        registry.register(Box::new(seconds.clone())).expect("registered once");
        LagGauges { messages, seconds }
    }

    pub fn set(&self, topic: &str, messages: i64, seconds: f64) {
        self.messages.with_label_values(&[topic]).set(messages);
        self.seconds.with_label_values(&[topic]).set(seconds);
    }

    /// A replica that stands by reads nothing: no lag of its own to report.
    pub fn clear(&self) {
        self.messages.reset();
        self.seconds.reset();
    }
}

/// Monitor gauges, labelled by model, version, variant and feature only.
#[derive(Clone)]
pub struct MonitorMetrics {
    rmse: GaugeVec,
    mae: GaugeVec,
    /// Per horizon step (label `step`, 1 nearest).
    step_rmse: GaugeVec,
    step_mae: GaugeVec,
    step_bias: GaugeVec,
    step_mase: GaugeVec,
    step_interval_half_width: GaugeVec,
    step_interval_coverage: GaugeVec,
    /// A quantile bundle's mean pinball loss per level (label `quantile`).
    pinball: GaugeVec,
    /// The most steps any key has reported, so a removed key's step gauges can all go.
    steps_seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    joined: IntGaugeVec,
    pending: IntGaugeVec,
    expired: IntGaugeVec,
    unmatched: IntGaugeVec,
    ks: GaugeVec,
    psi: GaugeVec,
    p_value: GaugeVec,
    rejected: IntCounterVec,
    leader: prometheus::IntGauge,
    errors: ErrorCounters,
}

impl MonitorMetrics {
    /// Registers the gauges; a registry takes them once.
    pub fn register(registry: &Registry) -> MonitorMetrics {
        let g = |name: &str, help: &str, labels: &[&str]| {
            let v = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(v.clone())).expect("registered once");
            v
        };
        let i = |name: &str, help: &str, labels: &[&str]| {
            let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(v.clone())).expect("registered once");
            v
        };
        let key = &["model", "version", "variant"];
        let step = &["model", "version", "variant", "step"];
        let feat = &["model", "feature"];
        MonitorMetrics {
            rmse: g("streamcast_monitor_rmse", "Rolling RMSE on joined actuals (target units).", key),
            mae: g("streamcast_monitor_mae", "Rolling MAE on joined actuals (target units).", key),
            step_rmse: g("streamcast_monitor_step_rmse", "Rolling RMSE of one horizon step (target units).", step),
            step_mae: g("streamcast_monitor_step_mae", "Rolling MAE of one horizon step (target units).", step),
            step_bias: g(
                "streamcast_monitor_step_bias",
                "Rolling mean of prediction minus actual of one horizon step (target units).",
                step,
            ),
            step_mase: g(
                "streamcast_monitor_step_mase",
                "MASE of one horizon step against the seasonal-naive forecast (joined by time).",
                step,
            ),
            step_interval_half_width: g(
                "streamcast_monitor_step_interval_half_width",
                "Calibrated half width of one horizon step's prediction interval (target units).",
                step,
            ),
            step_interval_coverage: g(
                "streamcast_monitor_step_interval_coverage",
                "Share of one horizon step's recent intervals that held their actual.",
                step,
            ),
            pinball: g(
                "streamcast_monitor_pinball_loss",
                "A quantile bundle's rolling mean pinball loss at one quantile level (target units).",
                &["model", "version", "variant", "quantile"],
            ),
            steps_seen: Default::default(),
            joined: i("streamcast_monitor_joined", "Joined values in the rolling window.", key),
            pending: i("streamcast_monitor_pending", "Predictions waiting for their actual.", key),
            expired: i("streamcast_monitor_expired", "Predictions whose actual never came (cumulative).", key),
            unmatched: i(
                "streamcast_monitor_unmatched_actuals",
                "Actuals whose prediction never came (cumulative).",
                &["model"],
            ),
            ks: g("streamcast_monitor_drift_ks_statistic", "KS statistic of served inputs vs reference.", feat),
            psi: g("streamcast_monitor_drift_psi", "PSI of served inputs vs reference.", feat),
            p_value: g("streamcast_monitor_drift_p_value", "BH-corrected KS p-value.", feat),
            rejected: {
                let v = IntCounterVec::new(
                    Opts::new("streamcast_monitor_rejected_total", "Records the monitor refused to score, by reason."),
                    &["reason"],
                )
                .expect("valid metric");
                registry.register(Box::new(v.clone())).expect("registered once");
                v
            },
            errors: ErrorCounters::new(Some(registry)),
            leader: {
                let g = prometheus::IntGauge::new(
                    "streamcast_monitor_leader",
                    "1 while this replica's monitor leads the group (reads and publishes), else 0.",
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("registered once");
                g
            },
        }
    }

    /// The error-sum counters, for [`super::scoring::Scoring`].
    pub fn errors(&self) -> ErrorCounters {
        self.errors.clone()
    }

    /// The rejection counter, for [`super::scoring::Scoring`].
    pub fn rejected(&self) -> IntCounterVec {
        self.rejected.clone()
    }

    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// The gauges labelled by horizon step.
    fn step_gauges(&self) -> [&GaugeVec; 6] {
        [
            &self.step_rmse,
            &self.step_mae,
            &self.step_bias,
            &self.step_mase,
            &self.step_interval_half_width,
            &self.step_interval_coverage,
        ]
    }

    /// Removes every per-model gauge (the leader's are the group's).
    pub fn clear(&self) {
        for g in [&self.rmse, &self.mae, &self.ks, &self.psi, &self.p_value, &self.pinball] {
            g.reset();
        }
        for g in self.step_gauges() {
            g.reset();
        }
        for g in [&self.joined, &self.pending, &self.expired, &self.unmatched] {
            g.reset();
        }
    }

    /// Removes the gauges of a key that no longer exists.
    pub fn remove_key(&self, model: &crate::event::ModelRef, variant: crate::event::Variant) {
        let labels = [model.name.as_str(), model.version.as_str(), variant.as_str()];
        for g in [&self.rmse, &self.mae] {
            let _ = g.remove_label_values(&labels);
        }
        for g in [&self.joined, &self.pending, &self.expired] {
            let _ = g.remove_label_values(&labels);
        }
        // Its levels are not known here: every key's pinball gauges go, and the publish that
        // removes a key sets the live keys' again right after.
        self.pinball.reset();
        for step in 1..=self.steps_seen.load(std::sync::atomic::Ordering::Relaxed) {
            let step = step.to_string();
            let labels = [labels[0], labels[1], labels[2], step.as_str()];
            for g in self.step_gauges() {
                let _ = g.remove_label_values(&labels);
            }
        }
    }

    /// Sets one model version × variant's error and join gauges; a missing error reads NaN.
    pub fn set_key(&self, key: &KeyReport<'_>) {
        let labels = [key.model.name.as_str(), key.model.version.as_str(), key.variant.as_str()];
        self.rmse.with_label_values(&labels).set(key.stats.rmse.unwrap_or(f64::NAN));
        self.mae.with_label_values(&labels).set(key.stats.mae.unwrap_or(f64::NAN));
        self.joined.with_label_values(&labels).set(key.stats.count as i64);
        self.pending.with_label_values(&labels).set(key.pending as i64);
        self.expired.with_label_values(&labels).set(key.expired as i64);
        self.steps_seen.fetch_max(key.steps.len(), std::sync::atomic::Ordering::Relaxed);
        for (i, s) in key.steps.iter().enumerate() {
            let step = (i + 1).to_string();
            let labels = [labels[0], labels[1], labels[2], step.as_str()];
            self.step_rmse.with_label_values(&labels).set(s.rmse.unwrap_or(f64::NAN));
            self.step_mae.with_label_values(&labels).set(s.mae.unwrap_or(f64::NAN));
            self.step_bias.with_label_values(&labels).set(s.bias.unwrap_or(f64::NAN));
            if let Some(mase) = key.mase.get(i).copied().flatten() {
                self.step_mase.with_label_values(&labels).set(mase);
            }
            if let Some(interval) = key.intervals.get(i) {
                self.step_interval_half_width.with_label_values(&labels).set(interval.half_width.unwrap_or(f64::NAN));
                self.step_interval_coverage.with_label_values(&labels).set(interval.coverage.unwrap_or(f64::NAN));
            }
        }
        for (level, _, loss) in &key.pinball {
            let level = level.to_string();
            let labels = [labels[0], labels[1], labels[2], level.as_str()];
            self.pinball.with_label_values(&labels).set(loss.unwrap_or(f64::NAN));
        }
    }

    /// Sets the served model's unmatched actuals and its per-feature drift gauges.
    pub fn set_model(&self, model: &str, unmatched_actuals: u64, drift: &BTreeMap<String, DriftStat>) {
        self.unmatched.with_label_values(&[model]).set(unmatched_actuals as i64);
        for (f, s) in drift {
            let labels = [model, f.as_str()];
            self.ks.with_label_values(&labels).set(s.ks_statistic.unwrap_or(f64::NAN));
            self.psi.with_label_values(&labels).set(s.psi.unwrap_or(f64::NAN));
            self.p_value.with_label_values(&labels).set(s.p_value.unwrap_or(f64::NAN));
        }
    }
}
