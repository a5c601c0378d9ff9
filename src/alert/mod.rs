//! Alerts: the `alerts` topic's messages, typed per kind, how repeats are damped, and the one
//! sink that sends them.
//!
//! - [`gate`]: hysteresis and cooldown, so one ongoing condition gives one alert and one
//!   all-clear.
//! - [`sink`]: the alert producer shared by every part of a process.
//!
//! An alert is built, sent and read back only through [`Alert`]: its `kind` follows from its
//! [`Details`], and it (de)serializes to exactly `schemas/alert.schema.json`.

pub mod gate;
pub mod sink;

use serde::{Deserialize, Serialize};

use crate::event::{ModelRef, Variant};
pub use gate::{Gate, Transition};
pub use sink::AlertSink;

/// What an alert is about (`kind` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    RmseAboveThreshold,
    FeatureDrift,
    PredictionDrift,
    RetrainRequested,
    ModelRollback,
    ModelPromoted,
    FallbackActive,
    ExecutionProviderFallback,
    ModelRejected,
    IntervalCoverage,
}

impl AlertKind {
    pub const ALL: [AlertKind; 10] = [
        AlertKind::RmseAboveThreshold,
        AlertKind::FeatureDrift,
        AlertKind::PredictionDrift,
        AlertKind::RetrainRequested,
        AlertKind::ModelRollback,
        AlertKind::ModelPromoted,
        AlertKind::FallbackActive,
        AlertKind::ExecutionProviderFallback,
        AlertKind::ModelRejected,
        AlertKind::IntervalCoverage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RmseAboveThreshold => "rmse_above_threshold",
            AlertKind::FeatureDrift => "feature_drift",
            AlertKind::PredictionDrift => "prediction_drift",
            AlertKind::RetrainRequested => "retrain_requested",
            AlertKind::ModelRollback => "model_rollback",
            AlertKind::ModelPromoted => "model_promoted",
            AlertKind::FallbackActive => "fallback_active",
            AlertKind::ExecutionProviderFallback => "execution_provider_fallback",
            AlertKind::ModelRejected => "model_rejected",
            AlertKind::IntervalCoverage => "interval_coverage",
        }
    }
}

/// Whether a damped condition started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    /// The state a gate transition announces; `None` when nothing changed.
    pub fn of(transition: Transition) -> Option<AlertState> {
        match transition {
            Transition::Fire => Some(AlertState::Firing),
            Transition::Resolve => Some(AlertState::Resolved),
            Transition::None => None,
        }
    }
}

/// Rolling error of one variant, as a decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariantScore {
    pub rmse: f64,
    pub mae: f64,
    pub joined: usize,
}

/// `rmse_above_threshold`: a variant's rolling RMSE crossed the threshold (or came back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmseDetails {
    pub state: AlertState,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
    pub count: usize,
    pub threshold: f64,
}

/// `interval_coverage`: the intervals served for some horizon step held their actual less often
/// than `level − band` over the recent judged ones (firing), or every step is back (resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageDetails {
    pub state: AlertState,
    pub level: f64,
    pub band: f64,
    /// The steps below the band (1 = the nearest); empty when resolved.
    pub below: Vec<usize>,
    /// Every step with enough judged intervals.
    pub steps: Vec<StepCoverage>,
}

/// One step's empirical coverage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCoverage {
    pub step: usize,
    pub coverage: f64,
    pub judged: usize,
}

/// `feature_drift` (with `feature`) and `prediction_drift` (without): served values against the
/// bundle's reference sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftDetails {
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The drifted features (one today; a list so a grouped alert keeps the same shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    pub ks_statistic: Option<f64>,
    pub p_value: Option<f64>,
    pub psi: Option<f64>,
    pub samples: usize,
}

/// Why retraining is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainReason {
    /// `monitor.retrain_schedule` came round.
    Schedule,
    /// The RMSE stayed above its threshold for `monitor.retrain_after`.
    Performance,
}

/// `retrain_requested`. A performance request carries the RMSE evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainDetails {
    pub reason: RetrainReason,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<RetrainEvidence>,
}

/// The numbers behind a performance-driven retraining request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainEvidence {
    #[serde(flatten)]
    pub rmse: RmseDetails,
    pub above_for_s: f64,
}

/// Which way a decision about the A/B candidate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Rollback,
    Promote,
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    /// The monitor's label-driven rule.
    Monitor,
    /// `streamcast models promote|rollback`.
    Operator,
}

/// `model_rollback` and `model_promoted`: the alert's model is the candidate concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionDetails {
    pub decision: Decision,
    pub source: DecisionSource,
    pub candidate_version: String,
    /// For an operator's decision, the configured `model.version` (it may read `latest`).
    pub primary_version: String,
    /// The operator's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The monitor's evidence.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<DecisionEvidence>,
    /// Hex HMAC-SHA256 over the decision's fields, when `variants.decision_key` is set (see
    /// `decisions::sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The numbers behind the monitor's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvidence {
    pub primary: VariantScore,
    pub candidate: VariantScore,
    pub margin: f64,
    pub rmse_ratio: f64,
    pub rule: String,
}

/// `fallback_active`: the fallback serves (breaker open, or the primary failed to load) or no
/// longer does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackDetails {
    pub state: AlertState,
    pub primary: ModelRef,
    pub fallback: Option<ModelRef>,
    /// `primary_load_failed` when the primary never served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `execution_provider_fallback`: CUDA was asked for and the CPU serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderFallbackDetails {
    pub requested: String,
    pub using: String,
    pub reason: String,
}

/// `model_rejected`: a new version was refused; `serving` keeps serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedDetails {
    pub reason: String,
    pub serving: String,
}

/// The kind-specific part of an alert; it decides the alert's `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    RmseAboveThreshold(RmseDetails),
    FeatureDrift(DriftDetails),
    PredictionDrift(DriftDetails),
    RetrainRequested(RetrainDetails),
    ModelRollback(DecisionDetails),
    ModelPromoted(DecisionDetails),
    FallbackActive(FallbackDetails),
    ExecutionProviderFallback(ProviderFallbackDetails),
    ModelRejected(RejectedDetails),
    IntervalCoverage(CoverageDetails),
}

impl Details {
    pub fn kind(&self) -> AlertKind {
        match self {
            Details::RmseAboveThreshold(_) => AlertKind::RmseAboveThreshold,
            Details::FeatureDrift(_) => AlertKind::FeatureDrift,
            Details::PredictionDrift(_) => AlertKind::PredictionDrift,
            Details::RetrainRequested(_) => AlertKind::RetrainRequested,
            Details::ModelRollback(_) => AlertKind::ModelRollback,
            Details::ModelPromoted(_) => AlertKind::ModelPromoted,
            Details::FallbackActive(_) => AlertKind::FallbackActive,
            Details::ExecutionProviderFallback(_) => AlertKind::ExecutionProviderFallback,
            Details::ModelRejected(_) => AlertKind::ModelRejected,
            Details::IntervalCoverage(_) => AlertKind::IntervalCoverage,
        }
    }

    fn to_value(&self) -> serde_json::Value {
        let v = match self {
            Details::RmseAboveThreshold(d) => serde_json::to_value(d),
            Details::FeatureDrift(d) | Details::PredictionDrift(d) => serde_json::to_value(d),
            Details::RetrainRequested(d) => serde_json::to_value(d),
            Details::ModelRollback(d) | Details::ModelPromoted(d) => serde_json::to_value(d),
            Details::FallbackActive(d) => serde_json::to_value(d),
            Details::ExecutionProviderFallback(d) => serde_json::to_value(d),
            Details::ModelRejected(d) => serde_json::to_value(d),
            Details::IntervalCoverage(d) => serde_json::to_value(d),
        };
        v.expect("alert details are plain data and always serialize")
    }

    fn from_value(kind: AlertKind, v: serde_json::Value) -> Result<Details, serde_json::Error> {
        use serde_json::from_value as de;
        Ok(match kind {
            AlertKind::RmseAboveThreshold => Details::RmseAboveThreshold(de(v)?),
            AlertKind::FeatureDrift => Details::FeatureDrift(de(v)?),
            AlertKind::PredictionDrift => Details::PredictionDrift(de(v)?),
            AlertKind::RetrainRequested => Details::RetrainRequested(de(v)?),
            AlertKind::ModelRollback => Details::ModelRollback(de(v)?),
            AlertKind::ModelPromoted => Details::ModelPromoted(de(v)?),
            AlertKind::FallbackActive => Details::FallbackActive(de(v)?),
            AlertKind::ExecutionProviderFallback => Details::ExecutionProviderFallback(de(v)?),
            AlertKind::ModelRejected => Details::ModelRejected(de(v)?),
            AlertKind::IntervalCoverage => Details::IntervalCoverage(de(v)?),
        })
    }
}

/// An `alerts` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireAlert", try_from = "WireAlert")]
pub struct Alert {
    pub model: ModelRef,
    /// The variant concerned; `None` when the alert is not about one variant.
    pub variant: Option<Variant>,
    pub at: String,
    pub details: Details,
}

impl Alert {
    /// An alert stamped now.
    pub fn new(model: ModelRef, variant: Option<Variant>, details: Details) -> Alert {
        Alert { model, variant, at: crate::event::now_rfc3339(), details }
    }

    /// When it was raised, on this process's monotonic clock (`None` when `at` does not parse or
    /// lies before what the clock can express).
    pub fn instant(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        let at = chrono::DateTime::parse_from_rfc3339(&self.at).ok()?;
        let age = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).to_std().unwrap_or_default();
        now.checked_sub(age)
    }

    pub fn kind(&self) -> AlertKind {
        self.details.kind()
    }

    /// The details as the wire carries them (for logs).
    pub fn encode_details(&self) -> serde_json::Value {
        self.details.to_value()
    }

    /// The message value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("alerts are plain data and always serialize")
    }

    /// Reads an `alerts` record; `None` for anything that is not a well-formed alert of a known
    /// kind (the topic is shared, and older or newer writers may add kinds).
    pub fn decode(payload: &[u8]) -> Option<Alert> {
        serde_json::from_slice(payload).ok()
    }
}

/// The wire form: `kind` beside untyped `details`, as `schemas/alert.schema.json` has it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAlert {
    kind: AlertKind,
    model: ModelRef,
    variant: Option<Variant>,
    at: String,
    details: serde_json::Value,
}

impl From<Alert> for WireAlert {
    fn from(a: Alert) -> WireAlert {
        WireAlert {
            kind: a.details.kind(),
            details: a.details.to_value(),
            model: a.model,
            variant: a.variant,
            at: a.at,
        }
    }
}

impl TryFrom<WireAlert> for Alert {
    type Error = serde_json::Error;

    fn try_from(w: WireAlert) -> Result<Alert, serde_json::Error> {
        Ok(Alert { details: Details::from_value(w.kind, w.details)?, model: w.model, variant: w.variant, at: w.at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelRef {
        ModelRef { name: "co2-mlp".into(), version: "3".into() }
    }

    fn rmse(state: AlertState) -> RmseDetails {
        RmseDetails { state, rmse: Some(1.5), mae: Some(1.1), count: 120, threshold: 1.0 }
    }

    fn drift(feature: Option<&str>) -> DriftDetails {
        DriftDetails {
            state: AlertState::Firing,
            feature: feature.map(str::to_string),
            features: feature.into_iter().map(str::to_string).collect(),
            ks_statistic: Some(0.4),
            p_value: Some(1e-9),
            psi: Some(0.8),
            samples: 500,
        }
    }

    fn decision(decision: Decision, source: DecisionSource) -> DecisionDetails {
        let score = |rmse: f64| VariantScore { rmse, mae: rmse * 0.8, joined: 150 };
        DecisionDetails {
            decision,
            source,
            candidate_version: "4".into(),
            primary_version: "3".into(),
            reason: (source == DecisionSource::Operator).then(|| "canary looked bad".into()),
            evidence: (source == DecisionSource::Monitor).then(|| DecisionEvidence {
                primary: score(0.4),
                candidate: score(4.9),
                margin: 0.1,
                rmse_ratio: 12.25,
                rule: "candidate.rmse > primary.rmse * (1 + margin)".into(),
            }),
            signature: (source == DecisionSource::Operator).then(|| "ab".repeat(32)),
        }
    }

    /// One alert of every kind, in every shape the worker writes.
    pub(crate) fn every_alert() -> Vec<Alert> {
        let m = model();
        let p = Some(Variant::Primary);
        vec![
            Alert::new(m.clone(), p, Details::RmseAboveThreshold(rmse(AlertState::Firing))),
            Alert::new(m.clone(), Some(Variant::Candidate), Details::RmseAboveThreshold(rmse(AlertState::Resolved))),
            Alert::new(m.clone(), None, Details::FeatureDrift(drift(Some("co2")))),
            Alert::new(m.clone(), None, Details::PredictionDrift(drift(None))),
            Alert::new(
                m.clone(),
                None,
                Details::RetrainRequested(RetrainDetails { reason: RetrainReason::Schedule, evidence: None }),
            ),
            Alert::new(
                m.clone(),
                p,
                Details::RetrainRequested(RetrainDetails {
                    reason: RetrainReason::Performance,
                    evidence: Some(RetrainEvidence { rmse: rmse(AlertState::Firing), above_for_s: 600.0 }),
                }),
            ),
            Alert::new(
                m.clone(),
                Some(Variant::Candidate),
                Details::ModelRollback(decision(Decision::Rollback, DecisionSource::Monitor)),
            ),
            Alert::new(
                m.clone(),
                Some(Variant::Candidate),
                Details::ModelPromoted(decision(Decision::Promote, DecisionSource::Operator)),
            ),
            Alert::new(
                m.clone(),
                p,
                Details::FallbackActive(FallbackDetails {
                    state: AlertState::Firing,
                    primary: m.clone(),
                    fallback: Some(ModelRef { name: "last_value".into(), version: "builtin".into() }),
                    reason: None,
                    failed_batches: Some(3),
                    batches: Some(5),
                    last_error: Some("the model produced a non-finite prediction".into()),
                }),
            ),
            Alert::new(
                m.clone(),
                p,
                Details::FallbackActive(FallbackDetails {
                    state: AlertState::Resolved,
                    primary: m.clone(),
                    fallback: None,
                    reason: None,
                    failed_batches: None,
                    batches: None,
                    last_error: None,
                }),
            ),
            Alert::new(
                m.clone(),
                p,
                Details::ExecutionProviderFallback(ProviderFallbackDetails {
                    requested: "auto".into(),
                    using: "cpu".into(),
                    reason: "CUDA provider library not found".into(),
                }),
            ),
            Alert::new(
                m.clone(),
                p,
                Details::IntervalCoverage(CoverageDetails {
                    state: AlertState::Firing,
                    level: 0.9,
                    band: 0.05,
                    below: vec![2],
                    steps: vec![
                        StepCoverage { step: 1, coverage: 0.88, judged: 200 },
                        StepCoverage { step: 2, coverage: 0.7, judged: 200 },
                    ],
                }),
            ),
            Alert::new(
                m,
                p,
                Details::ModelRejected(RejectedDetails {
                    reason: "golden case 0: expected 350.1, got 351.7".into(),
                    serving: "2".into(),
                }),
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let alerts = every_alert();
        for kind in AlertKind::ALL {
            assert!(alerts.iter().any(|a| a.kind() == kind), "no sample of {kind:?}");
        }
        for a in alerts {
            let bytes = a.encode();
            let back = Alert::decode(&bytes).unwrap_or_else(|| panic!("decodes: {}", String::from_utf8_lossy(&bytes)));
            assert_eq!(back, a);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["kind"], a.kind().as_str());
        }
    }

    #[test]
    fn every_kind_validates_against_the_alert_schema() {
        let text = std::fs::read_to_string("schemas/alert.schema.json").expect("the schema ships with the repo");
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        for a in every_alert() {
            let v: serde_json::Value = serde_json::from_slice(&a.encode()).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{v}: {errors:?}");
        }
    }

    #[test]
    fn the_wire_form_keeps_the_field_names_readers_use() {
        let v: serde_json::Value = serde_json::from_slice(&every_alert()[6].encode()).unwrap();
        assert_eq!(v["variant"], "candidate");
        assert_eq!(v["details"]["decision"], "rollback");
        assert_eq!(v["details"]["source"], "monitor");
        assert_eq!(v["details"]["primary"]["joined"], 150);
        assert_eq!(v["details"]["rule"], "candidate.rmse > primary.rmse * (1 + margin)");
        let v: serde_json::Value = serde_json::from_slice(&every_alert()[5].encode()).unwrap();
        assert_eq!(v["details"]["reason"], "performance");
        assert_eq!(v["details"]["state"], "firing");
        assert_eq!(v["details"]["above_for_s"], 600.0);
        let v: serde_json::Value = serde_json::from_slice(&every_alert()[9].encode()).unwrap();
        assert_eq!(v["details"], serde_json::json!({"state": "resolved", "primary": model(), "fallback": null}));
    }

    #[test]
    fn foreign_records_are_not_alerts() {
        assert_eq!(Alert::decode(b"not json"), None);
        assert_eq!(Alert::decode(br#"{"kind":"coffee_ready","model":{"name":"m","version":"1"},"variant":null,"at":"2026-01-01T00:00:00Z","details":{}}"#), None);
        assert_eq!(
            Alert::decode(br#"{"kind":"model_rollback","model":{"name":"m","version":"1"},"variant":"candidate","at":"2026-01-01T00:00:00Z","details":{}}"#),
            None,
            "a decision without its fields"
        );
    }
}
