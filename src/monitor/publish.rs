//! One publish: drift and scheduled-retraining alerts, RMSE alerts, a snapshot and gauges per
//! model version × variant, and the A/B decision. Alerts go out after the snapshots, in that
//! order.

use std::sync::Arc;
use std::time::Instant;

use super::drift::{DriftReport, DriftStat, DriftTracker};
use super::metrics::MonitorMetrics;
use super::rolling::ErrorStats;
use super::scoring::{KeyReport, Scoring};
use super::snapshot::{IntervalDef, Pinball, Snapshot, SnapshotSink, StepStats, WindowDef};
use crate::alert::{Alert, AlertSink, AlertState, Details, DriftDetails, Gate, RetrainDetails, RetrainReason};
use crate::config::{IntervalsConfig, MonitorConfig};
use crate::event::{now_rfc3339, ModelRef};

/// Publishes the monitor's findings; holds the gates of the served model's alerts.
pub struct Publisher {
    cfg: MonitorConfig,
    /// Calibrated intervals, when on: their settings go into every snapshot.
    intervals: Option<IntervalsConfig>,
    /// The served model.
    model: ModelRef,
    snapshots: SnapshotSink,
    metrics: MonitorMetrics,
    alerts: Arc<AlertSink>,
    /// One drift gate per feature, in bundle order.
    feature_gates: Vec<(String, Gate)>,
    prediction_gate: Gate,
    last_schedule: Instant,
}

impl Publisher {
    pub fn new(
        cfg: &MonitorConfig,
        model: ModelRef,
        features: &[String],
        snapshots: SnapshotSink,
        metrics: MonitorMetrics,
        alerts: Arc<AlertSink>,
    ) -> Publisher {
        Publisher {
            cfg: cfg.clone(),
            intervals: None,
            model,
            snapshots,
            metrics,
            alerts,
            feature_gates: features.iter().map(|f| (f.clone(), Gate::new(cfg.alert_cooldown))).collect(),
            prediction_gate: Gate::new(cfg.alert_cooldown),
            last_schedule: Instant::now(),
        }
    }

    /// Describes the interval calibration in every snapshot.
    pub fn with_intervals(mut self, cfg: &IntervalsConfig) -> Publisher {
        self.intervals = cfg.enabled.then(|| cfg.clone());
        self
    }

    /// Evaluates drift and the rolling errors as of `now`, and publishes what they show.
    pub fn publish(&mut self, drift: &DriftTracker, scoring: &mut Scoring, now: Instant) {
        let at = now_rfc3339();
        let report = drift.evaluate(&self.cfg);
        let mut alerts = self.feature_drift_alerts(&report, now);
        alerts.extend(self.prediction_drift_alert(&report, now));
        alerts.extend(self.scheduled_retrain(now));
        let stats = scoring.advance(chrono::Utc::now().timestamp_millis());
        for (model, variant) in scoring.take_freed() {
            self.metrics.remove_key(&model, variant);
        }
        alerts.extend(scoring.rmse_alerts(&stats, now));
        alerts.extend(scoring.coverage_alerts(now));
        self.snapshots_and_gauges(scoring, &stats, &report, &at);
        alerts.extend(scoring.decide(&stats));
        for a in alerts {
            self.alerts.send(&a);
        }
        self.snapshots.poll();
    }

    /// This replica leads now: the alert gates and the retraining schedule resume from what
    /// earlier leaders published (`history`, the alerts topic in order), so a restart or a
    /// failover neither repeats an alert that is still firing nor restarts a cooldown or the
    /// schedule's period.
    pub fn take_over(&mut self, history: &[Alert], now: Instant) {
        let cooldown = self.cfg.alert_cooldown;
        let ours = || history.iter().filter(|a| a.model.name == self.model.name);
        let resume = |matches: &dyn Fn(&Details) -> Option<AlertState>| {
            let mut active = false;
            let mut last_fired = None;
            for a in ours() {
                match matches(&a.details) {
                    Some(AlertState::Firing) => {
                        active = true;
                        last_fired = a.instant(now);
                    }
                    Some(AlertState::Resolved) => active = false,
                    None => {}
                }
            }
            Gate::resumed(cooldown, active, last_fired)
        };
        for (feature, gate) in &mut self.feature_gates {
            *gate = resume(&|d| match d {
                Details::FeatureDrift(d) if d.feature.as_deref() == Some(feature.as_str()) => Some(d.state),
                _ => None,
            });
        }
        self.prediction_gate = resume(&|d| match d {
            Details::PredictionDrift(d) => Some(d.state),
            _ => None,
        });
        let scheduled =
            |a: &&Alert| matches!(&a.details, Details::RetrainRequested(r) if r.reason == RetrainReason::Schedule);
        self.last_schedule = ours().rfind(scheduled).and_then(|a| a.instant(now)).unwrap_or(now);
        self.metrics.set_leader(true);
    }

    /// A new primary is served: its alerts are about it.
    pub fn follow(&mut self, model: ModelRef) {
        self.model = model;
    }

    /// Another replica leads: this one's gauges would contradict the leader's, so they go.
    pub fn stand_down(&self) {
        self.metrics.clear();
        self.metrics.set_leader(false);
    }

    /// Waits (bounded) for enqueued snapshots on shutdown.
    pub fn flush(&self) {
        self.snapshots.flush();
    }

    fn feature_drift_alerts(&mut self, report: &DriftReport, now: Instant) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for (f, gate) in &mut self.feature_gates {
            let Some(stat) = report.features.get(f.as_str()) else {
                gate.update(false, true, now);
                continue;
            };
            let firing = report.drifted.contains(f);
            let clear = report.is_clear(stat, &self.cfg);
            if let Some(state) = AlertState::of(gate.update(firing, clear, now)) {
                let d = drift_details(state, Some(f), stat);
                alerts.push(Alert::new(self.model.clone(), None, Details::FeatureDrift(d)));
            }
        }
        alerts
    }

    fn prediction_drift_alert(&mut self, report: &DriftReport, now: Instant) -> Option<Alert> {
        let s = report.prediction.as_ref()?;
        let clear = report.is_clear(s, &self.cfg);
        let state = AlertState::of(self.prediction_gate.update(report.prediction_drifted, clear, now))?;
        Some(Alert::new(self.model.clone(), None, Details::PredictionDrift(drift_details(state, None, s))))
    }

    fn scheduled_retrain(&mut self, now: Instant) -> Option<Alert> {
        let due = self.cfg.retrain_schedule.is_some_and(|d| now.duration_since(self.last_schedule) >= d);
        if !due {
            return None;
        }
        self.last_schedule = now;
        let d = RetrainDetails { reason: RetrainReason::Schedule, evidence: None };
        Some(Alert::new(self.model.clone(), None, Details::RetrainRequested(d)))
    }

    fn snapshots_and_gauges(&self, scoring: &Scoring, stats: &[ErrorStats], report: &DriftReport, at: &str) {
        let unmatched_actuals = scoring.unmatched_actuals();
        for key in scoring.reports(stats) {
            self.metrics.set_key(&key);
            let intervals = self.intervals.as_ref();
            self.snapshots.send(&snapshot(&key, &self.cfg, intervals, at, unmatched_actuals, report));
        }
        self.metrics.set_model(&self.model.name, unmatched_actuals, &report.features);
    }
}

fn snapshot<'a>(
    key: &KeyReport<'a>,
    cfg: &MonitorConfig,
    intervals: Option<&IntervalsConfig>,
    at: &'a str,
    unmatched_actuals: u64,
    report: &'a DriftReport,
) -> Snapshot<'a> {
    Snapshot {
        model: key.model,
        variant: key.variant,
        at,
        window: WindowDef::of(cfg),
        joined: key.stats.count as u64,
        pending: key.pending,
        expired: key.expired,
        unmatched_actuals,
        rmse: key.stats.rmse,
        mae: key.stats.mae,
        bias: key.stats.bias,
        per_step: key
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepStats {
                step: i + 1,
                stats: *s,
                mase: key.mase.get(i).copied().flatten(),
                interval: key.intervals.get(i).copied(),
            })
            .collect(),
        interval: intervals.map(|c| IntervalDef { level: c.level, method: c.method, coverage_band: c.coverage_band }),
        pinball: key.pinball.iter().map(|&(level, count, loss)| Pinball { level, count, loss }).collect(),
        drift: &report.features,
        prediction_drift: report.prediction.as_ref(),
        drifted_features: &report.drifted,
    }
}

fn drift_details(state: AlertState, feature: Option<&String>, s: &DriftStat) -> DriftDetails {
    DriftDetails {
        state,
        feature: feature.cloned(),
        features: feature.into_iter().cloned().collect(),
        ks_statistic: s.ks_statistic,
        p_value: s.p_value,
        psi: s.psi,
        samples: s.samples,
    }
}
