//! The monitor side task: joins late actuals to earlier predictions, keeps rolling error per
//! model version and variant, tests served inputs and outputs for drift against the bundle's
//! reference sample, and publishes snapshots, alerts and retraining triggers.
//!
//! - [`join`]: the bounded id join and its commit watermarks.
//! - [`rolling`]: incremental RMSE/MAE/bias over a count and a time window.
//! - [`stats`]: KS test, PSI, multiple-testing correction, bounded samples.
//! - [`drift`]: per-feature drift verdicts.
//!
//! It reads `predictions`, `actuals` and `input_data` in its own consumer group
//! (`<consumer.group_id>-monitor`), so it runs the same inside `streamcast run` or alone with
//! `--role monitor`, and a restart or rebalance rebuilds pending joins by re-reading from the
//! committed watermark: per partition, the lowest offset whose record still waits.

pub mod drift;
pub mod join;
pub mod rolling;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use crate::alert::{
    Alert, AlertSink, AlertState, DecisionSource, Details, DriftDetails, Gate, RetrainDetails, RetrainEvidence,
    RetrainReason, RmseDetails, Transition, VariantScore,
};
use crate::bundle::Bundle;
use crate::config::{Config, MonitorConfig};
use crate::event::{now_rfc3339, Actual, EventValues, FeatureSchema, InputEvent, ModelRef, Prediction, Variant};
use crate::kafka::{client_config, require_topics, ClusterError};
use crate::shutdown::Shutdown;
use drift::{DriftReport, DriftTracker};
use join::{JoinBuffer, Offer, Side, Source, WaitingPrediction};
use rolling::RollingError;

/// At most this many model version × variant keys are tracked; more means a misrouted topic.
const MAX_KEYS: usize = 64;

/// Monitor gauges, labelled by model, version, variant and feature only.
#[derive(Clone)]
pub struct MonitorMetrics {
    rmse: GaugeVec,
    mae: GaugeVec,
    joined: IntGaugeVec,
    pending: IntGaugeVec,
    expired: IntGaugeVec,
    unmatched: IntGaugeVec,
    ks: GaugeVec,
    psi: GaugeVec,
    p_value: GaugeVec,
}

impl MonitorMetrics {
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
        let feat = &["model", "feature"];
        MonitorMetrics {
            rmse: g("streamcast_monitor_rmse", "Rolling RMSE on joined actuals (target units).", key),
            mae: g("streamcast_monitor_mae", "Rolling MAE on joined actuals (target units).", key),
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A `model_metrics` message.
#[derive(Debug, Serialize)]
struct Snapshot<'a> {
    model: &'a ModelRef,
    variant: Variant,
    at: &'a str,
    window: WindowDef,
    joined: u64,
    pending: u64,
    expired: u64,
    unmatched_actuals: u64,
    rmse: Option<f64>,
    mae: Option<f64>,
    bias: Option<f64>,
    drift: &'a std::collections::BTreeMap<String, drift::DriftStat>,
    prediction_drift: Option<&'a drift::DriftStat>,
    drifted_features: &'a [String],
}

#[derive(Debug, Serialize)]
struct WindowDef {
    duration_s: f64,
    max_samples: usize,
}

/// Rebalance context: revoked partitions are handed to the loop, which drops their waiting
/// entries (the next owner re-reads them from the committed watermark).
struct MonitorContext {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for MonitorContext {}
impl ConsumerContext for MonitorContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            r.extend(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
        }
    }
}

/// One model version × variant being scored.
struct Scored {
    model: ModelRef,
    variant: Variant,
    rolling: RollingError,
    rmse_gate: Gate,
    above_since: Option<Instant>,
    retrain_requested: bool,
}

/// The monitor's state, owned by its thread.
struct State {
    cfg: MonitorConfig,
    model: ModelRef,
    threshold: Option<f64>,
    schema: FeatureSchema,
    join: JoinBuffer,
    shadow_join: Option<JoinBuffer>,
    keys: Vec<Scored>,
    expired_by_key: HashMap<u16, u64>,
    drift: DriftTracker,
    feature_gates: Vec<Gate>,
    prediction_gate: Gate,
    last_schedule: Instant,
    /// One past the last record read, per (topic, partition).
    next: HashMap<(String, i32), i64>,
    metrics: MonitorMetrics,
    /// The rollback/promotion rule and the configured candidate.
    variants: crate::config::VariantsConfig,
    /// A decision about the configured candidate was published (once per run: workers apply
    /// each decision once, and a rolled-back candidate's window stops moving).
    decided: bool,
    alerts: Arc<AlertSink>,
}

/// Topic roles the monitor reads.
struct Topics {
    predictions: String,
    /// The shadow variant's predictions, when a shadow is configured.
    shadow: Option<String>,
    actuals: String,
    input: String,
    metrics: String,
}

/// Starts the monitor thread.
pub fn spawn(
    config: &Config,
    bundle: Arc<Bundle>,
    registry: &Registry,
    alerts: Arc<AlertSink>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, MonitorError> {
    let cfg = config.monitor.clone();
    let mut cc = client_config(config);
    cc.set("group.id", format!("{}-monitor", config.consumer.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Predictions and actuals are keyed by series id: with equal partition counts, the range
        // assignor gives both topics' partition p to the same member, so joins stay local.
        .set("partition.assignment.strategy", "range");
    let consumer: BaseConsumer<MonitorContext> =
        cc.create_with_context(MonitorContext { revoked: Mutex::new(Vec::new()) }).map_err(ClusterError::Client)?;
    let t = &config.topics;
    let shadow = config.variants.shadow.as_ref().map(|_| t.shadow.clone());
    let mut read: Vec<&str> = vec![&t.predictions, &t.actuals, &t.input];
    read.extend(shadow.as_deref());
    let mut wanted = read.clone();
    wanted.extend([t.metrics.as_str(), t.alerts.as_str()]);
    require_topics(&consumer, &wanted, config)?;
    consumer.subscribe(&read).map_err(ClusterError::Client)?;
    let producer: BaseProducer = client_config(config).create().map_err(ClusterError::Client)?;
    let topics = Topics {
        predictions: t.predictions.clone(),
        shadow: shadow.clone(),
        actuals: t.actuals.clone(),
        input: t.input.clone(),
        metrics: t.metrics.clone(),
    };
    let m = &bundle.manifest;
    let threshold = cfg.rmse_threshold.or_else(|| m.validation.as_ref().map(|v| v.rmse * cfg.rmse_threshold_ratio));
    let drift = DriftTracker::new(&bundle, &cfg);
    let mut state = State {
        model: ModelRef { name: m.name.clone(), version: m.version.clone() },
        threshold,
        schema: FeatureSchema::for_bundle(m, config.validation.max_message_bytes, false),
        join: JoinBuffer::new(cfg.max_pending, cfg.join_ttl),
        // Shadow predictions share ids with the primary's, so they wait in a join of their own;
        // each actual is offered to both.
        shadow_join: shadow.as_ref().map(|_| JoinBuffer::new(cfg.max_pending, cfg.join_ttl)),
        keys: Vec::new(),
        expired_by_key: HashMap::new(),
        feature_gates: m.features.iter().map(|_| Gate::new(cfg.alert_cooldown)).collect(),
        prediction_gate: Gate::new(cfg.alert_cooldown),
        drift,
        last_schedule: Instant::now(),
        next: HashMap::new(),
        metrics: MonitorMetrics::register(registry),
        cfg,
        variants: config.variants.clone(),
        decided: false,
        alerts,
    };
    // The served model's primary variant always has a snapshot, so drift is published even
    // before any prediction has been read.
    let served = state.model.clone();
    state.key_of(&served, Variant::Primary);
    tracing::info!(group = %format!("{}-monitor", config.consumer.group_id), threshold, "Monitor started.");
    Ok(std::thread::Builder::new()
        .name("streamcast-monitor".into())
        .spawn(move || run(consumer, producer, topics, state, shutdown))
        .expect("spawning a thread only fails when the OS is out of resources"))
}

fn run(
    consumer: BaseConsumer<MonitorContext>,
    producer: BaseProducer,
    topics: Topics,
    mut st: State,
    shutdown: Shutdown,
) {
    let mut last_publish = Instant::now();
    let mut last_expire = Instant::now();
    while !shutdown.is_triggered() {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            match msg {
                Ok(m) => {
                    let now = Instant::now();
                    let topic = m.topic();
                    let src = Source { partition: m.partition(), offset: m.offset() };
                    st.next.insert((topic.to_string(), src.partition), src.offset + 1);
                    let payload = m.payload().unwrap_or_default();
                    if topic == topics.predictions {
                        st.on_prediction(payload, src, now);
                    } else if topics.shadow.as_deref() == Some(topic) {
                        st.on_shadow_prediction(payload, src, now);
                    } else if topic == topics.actuals {
                        st.on_actual(payload, src, now);
                    } else if topic == topics.input {
                        st.on_input(payload);
                    }
                }
                Err(error) => tracing::warn!(%error, "Monitor consumer error."),
            }
        }
        let revoked: Vec<(String, i32)> =
            std::mem::take(&mut *consumer.context().revoked.lock().unwrap_or_else(|e| e.into_inner()));
        for (topic, partition) in revoked {
            if topics.shadow.as_deref() == Some(topic.as_str()) {
                if let Some(j) = st.shadow_join.as_mut() {
                    j.drop_partition(Side::Prediction, partition);
                }
            } else if topic != topics.input {
                let side = if topic == topics.predictions { Side::Prediction } else { Side::Actual };
                st.join.drop_partition(side, partition);
                if side == Side::Actual {
                    if let Some(j) = st.shadow_join.as_mut() {
                        j.drop_partition(Side::Actual, partition);
                    }
                }
            }
            st.next.remove(&(topic, partition));
        }
        let now = Instant::now();
        if now.duration_since(last_expire) >= Duration::from_secs(1) {
            st.expire(now);
            last_expire = now;
        }
        if now.duration_since(last_publish) >= st.cfg.publish_interval {
            st.publish(&producer, &topics, now);
            commit(&consumer, &st, &topics, CommitMode::Async);
            last_publish = now;
        }
    }
    commit(&consumer, &st, &topics, CommitMode::Sync);
    let _ = producer.flush(Duration::from_secs(10));
    tracing::info!("Monitor stopped.");
}

/// Commits, per partition, the lowest offset whose record still waits in the join.
fn commit(consumer: &BaseConsumer<MonitorContext>, st: &State, topics: &Topics, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in &st.next {
        let offset = if *topic == topics.predictions {
            st.join.commit_point(Side::Prediction, *partition, *next)
        } else if topics.shadow.as_ref() == Some(topic) {
            st.shadow_join.as_ref().map_or(*next, |j| j.commit_point(Side::Prediction, *partition, *next))
        } else if *topic == topics.actuals {
            let main = st.join.commit_point(Side::Actual, *partition, *next);
            st.shadow_join.as_ref().map_or(main, |j| main.min(j.commit_point(Side::Actual, *partition, *next)))
        } else {
            *next
        };
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
    }
    if tpl.count() > 0 {
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(%error, "Monitor commit failed.");
        }
    }
}

impl State {
    fn key_of(&mut self, model: &ModelRef, variant: Variant) -> Option<u16> {
        if let Some(i) = self.keys.iter().position(|k| k.model == *model && k.variant == variant) {
            return Some(i as u16);
        }
        if self.keys.len() >= MAX_KEYS {
            return None;
        }
        self.keys.push(Scored {
            model: model.clone(),
            variant,
            rolling: RollingError::new(self.cfg.window_count, self.cfg.window_duration),
            rmse_gate: Gate::new(self.cfg.alert_cooldown),
            above_since: None,
            retrain_requested: false,
        });
        Some((self.keys.len() - 1) as u16)
    }

    fn on_prediction(&mut self, payload: &[u8], src: Source, now: Instant) {
        let Ok(p) = serde_json::from_slice::<Prediction>(payload) else { return };
        if let (Some(first), Variant::Primary) = (p.prediction.first(), p.variant) {
            self.drift.push_prediction(*first);
        }
        let Some(key) = self.key_of(&p.model, p.variant) else { return };
        let offer = self.join.offer_prediction(&p.id, WaitingPrediction { key, values: p.prediction }, src, now);
        self.score(offer);
    }

    fn on_actual(&mut self, payload: &[u8], src: Source, now: Instant) {
        let Ok(a) = serde_json::from_slice::<Actual>(payload) else { return };
        if a.actual.iter().any(|v| !v.is_finite()) {
            return;
        }
        if let Some(j) = self.shadow_join.as_mut() {
            let offer = j.offer_actual(&a.id, a.actual.clone(), src, now);
            self.score(offer);
        }
        let offer = self.join.offer_actual(&a.id, a.actual, src, now);
        self.score(offer);
    }

    fn on_shadow_prediction(&mut self, payload: &[u8], src: Source, now: Instant) {
        let Ok(p) = serde_json::from_slice::<Prediction>(payload) else { return };
        let Some(key) = self.key_of(&p.model, Variant::Shadow) else { return };
        let Some(j) = self.shadow_join.as_mut() else { return };
        let offer = j.offer_prediction(&p.id, WaitingPrediction { key, values: p.prediction }, src, now);
        self.score(offer);
    }

    fn on_input(&mut self, payload: &[u8]) {
        // Malformed events are the worker's to dead-letter; the monitor just skips them.
        let Ok(e) = InputEvent::decode(payload, &self.schema) else { return };
        let width = self.schema.width();
        let row = match &e.values {
            EventValues::Observation(v) => &v[..],
            EventValues::Window(w) => &w[w.len() - width..],
        };
        self.drift.push_features(row);
    }

    fn score(&mut self, offer: Offer) {
        if let Offer::Joined { prediction, actual } = offer {
            let scored = &mut self.keys[prediction.key as usize];
            // The time window runs on the monitor's clock (join time), not event time: actuals
            // arrive arbitrarily late, and the window is about recent model behaviour.
            let at = chrono::Utc::now().timestamp_millis();
            for (p, a) in prediction.values.iter().zip(&actual) {
                scored.rolling.push(at, p - a);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let by_key = &mut self.expired_by_key;
        self.join.expire(now, |key| *by_key.entry(key).or_default() += 1);
        if let Some(j) = self.shadow_join.as_mut() {
            j.expire(now, |key| *by_key.entry(key).or_default() += 1);
        }
    }

    fn publish(&mut self, producer: &BaseProducer, topics: &Topics, now: Instant) {
        let at = now_rfc3339();
        let report: DriftReport = self.drift.evaluate(&self.cfg);
        let mut pending = self.join.pending_by_key();
        if let Some(j) = &self.shadow_join {
            pending.extend(j.pending_by_key());
        }
        let counts = self.join.counts();
        let mut alerts: Vec<Alert> = Vec::new();

        // Drift alerts, one gate per feature.
        for (i, f) in self.schema.names.iter().enumerate() {
            let Some(stat) = report.features.get(f) else {
                self.feature_gates[i].update(false, true, now);
                continue;
            };
            let firing = report.drifted.contains(f);
            let clear = report.is_clear(stat, &self.cfg);
            if let Some(state) = AlertState::of(self.feature_gates[i].update(firing, clear, now)) {
                let d = drift_details(state, Some(f), stat);
                alerts.push(Alert::new(self.model.clone(), None, Details::FeatureDrift(d)));
            }
        }
        if let Some(s) = &report.prediction {
            let firing = report.prediction_drifted;
            let clear = report.is_clear(s, &self.cfg);
            if let Some(state) = AlertState::of(self.prediction_gate.update(firing, clear, now)) {
                alerts.push(Alert::new(
                    self.model.clone(),
                    None,
                    Details::PredictionDrift(drift_details(state, None, s)),
                ));
            }
        }

        let schedule_due = self.cfg.retrain_schedule.is_some_and(|d| now.duration_since(self.last_schedule) >= d);
        if schedule_due {
            self.last_schedule = now;
            let d = RetrainDetails { reason: RetrainReason::Schedule, evidence: None };
            alerts.push(Alert::new(self.model.clone(), None, Details::RetrainRequested(d)));
        }

        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut scores: Vec<Option<VariantScore>> = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter_mut().enumerate() {
            k.rolling.advance(now_ms);
            let stats = k.rolling.snapshot();
            scores.push(stats.rmse.zip(stats.mae).map(|(rmse, mae)| VariantScore { rmse, mae, joined: stats.count }));
            let variant = k.variant.as_str();
            if let Some(threshold) = self.threshold {
                let enough = stats.count >= self.cfg.min_joined;
                let rmse = stats.rmse.unwrap_or(0.0);
                let firing = enough && rmse > threshold;
                // Hysteresis: clear only well below the threshold.
                let clear = enough && rmse < 0.9 * threshold;
                let numbers =
                    |state| RmseDetails { state, rmse: stats.rmse, mae: stats.mae, count: stats.count, threshold };
                match k.rmse_gate.update(firing, clear, now) {
                    Transition::Fire => {
                        k.above_since = Some(now);
                        let d = Details::RmseAboveThreshold(numbers(AlertState::Firing));
                        alerts.push(Alert::new(k.model.clone(), Some(k.variant), d));
                    }
                    Transition::Resolve => {
                        k.above_since = None;
                        k.retrain_requested = false;
                        let d = Details::RmseAboveThreshold(numbers(AlertState::Resolved));
                        alerts.push(Alert::new(k.model.clone(), Some(k.variant), d));
                    }
                    Transition::None => {}
                }
                if let Some(since) = k.above_since {
                    if !k.retrain_requested && now.duration_since(since) >= self.cfg.retrain_after {
                        k.retrain_requested = true;
                        let evidence = RetrainEvidence {
                            rmse: numbers(AlertState::Firing),
                            above_for_s: now.duration_since(since).as_secs_f64(),
                        };
                        let d = RetrainDetails { reason: RetrainReason::Performance, evidence: Some(evidence) };
                        alerts.push(Alert::new(k.model.clone(), Some(k.variant), Details::RetrainRequested(d)));
                    }
                }
            }

            let labels = [k.model.name.as_str(), k.model.version.as_str(), variant];
            self.metrics.rmse.with_label_values(&labels).set(stats.rmse.unwrap_or(f64::NAN));
            self.metrics.mae.with_label_values(&labels).set(stats.mae.unwrap_or(f64::NAN));
            self.metrics.joined.with_label_values(&labels).set(stats.count as i64);
            let key_pending = pending.get(&(i as u16)).copied().unwrap_or(0);
            let key_expired = self.expired_by_key.get(&(i as u16)).copied().unwrap_or(0);
            self.metrics.pending.with_label_values(&labels).set(key_pending as i64);
            self.metrics.expired.with_label_values(&labels).set(key_expired as i64);
            let snapshot = Snapshot {
                model: &k.model,
                variant: k.variant,
                at: &at,
                window: WindowDef {
                    duration_s: self.cfg.window_duration.as_secs_f64(),
                    max_samples: self.cfg.window_count,
                },
                joined: stats.count as u64,
                pending: key_pending,
                expired: key_expired,
                unmatched_actuals: counts.unmatched_actuals + counts.evicted_actuals,
                rmse: stats.rmse,
                mae: stats.mae,
                bias: stats.bias,
                drift: &report.features,
                prediction_drift: report.prediction.as_ref(),
                drifted_features: &report.drifted,
            };
            let body = serde_json::to_vec(&snapshot).expect("snapshot serializes");
            send(producer, &topics.metrics, &k.model.name, &body);
        }
        self.metrics
            .unmatched
            .with_label_values(&[self.model.name.as_str()])
            .set((counts.unmatched_actuals + counts.evicted_actuals) as i64);
        for (f, s) in &report.features {
            let labels = [self.model.name.as_str(), f.as_str()];
            self.metrics.ks.with_label_values(&labels).set(s.ks_statistic.unwrap_or(f64::NAN));
            self.metrics.psi.with_label_values(&labels).set(s.psi.unwrap_or(f64::NAN));
            self.metrics.p_value.with_label_values(&labels).set(s.p_value.unwrap_or(f64::NAN));
        }
        if let Some(a) = self.decide(&scores) {
            alerts.push(a);
        }
        for a in alerts {
            self.alerts.send(&a);
        }
        producer.poll(Duration::ZERO);
    }

    /// Applies the rollback/promotion rule to the configured primary and candidate, once.
    fn decide(&mut self, scores: &[Option<VariantScore>]) -> Option<Alert> {
        let candidate_version = &self.variants.candidate.as_ref()?.version;
        if self.decided {
            return None;
        }
        let find = |variant: Variant, version: &str| {
            self.keys
                .iter()
                .position(|k| k.variant == variant && k.model.name == self.model.name && k.model.version == version)
        };
        let p = find(Variant::Primary, &self.model.version)?;
        let c = find(Variant::Candidate, candidate_version)?;
        let (primary, candidate) = (scores[p]?, scores[c]?);
        let decision = crate::decisions::decide(&self.variants, primary, candidate)?;
        self.decided = true;
        let evidence = crate::decisions::evidence(&self.variants, decision, primary, candidate);
        tracing::warn!(
            ?decision,
            candidate = %candidate_version,
            candidate_rmse = candidate.rmse,
            candidate_joined = candidate.joined,
            primary = %self.model.version,
            primary_rmse = primary.rmse,
            primary_joined = primary.joined,
            margin = evidence.margin,
            "Label-driven decision about the candidate."
        );
        let candidate_model = &self.keys[c].model;
        Some(crate::decisions::alert(
            decision,
            candidate_model,
            &self.model,
            DecisionSource::Monitor,
            None,
            Some(evidence),
        ))
    }
}

fn drift_details(state: AlertState, feature: Option<&String>, s: &drift::DriftStat) -> DriftDetails {
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

fn send(producer: &BaseProducer, topic: &str, key: &str, body: &[u8]) {
    let record = BaseRecord::to(topic).key(key).payload(body);
    let wait = || {
        producer.poll(Duration::from_millis(10));
    };
    if crate::kafka::send_with_retry(|r| producer.send(r), record, wait, Some(100)).is_err() {
        tracing::error!(topic, "Monitor could not enqueue a record.");
    }
}
