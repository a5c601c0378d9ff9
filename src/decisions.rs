//! Label-driven rollback and promotion of the A/B candidate.
//!
//! The monitor compares the candidate's rolling RMSE on joined actuals with the primary's
//! ([`decide`]) and publishes its verdict as a `model_rollback` or `model_promoted` alert, with
//! the numbers behind it. An operator publishes the same alert with `streamcast models promote`
//! or `rollback`. Every worker replica follows the `alerts` topic ([`spawn_follower`]) and hands
//! matching decisions to its inference thread, which applies them between two batches.
//!
//! The alerts topic is the decision log: a follower reads it from the beginning, so a restarted
//! replica re-applies a decision about the candidate it is configured with instead of sending
//! that candidate traffic again. A decision names the candidate version it is about; one about
//! another version is ignored, so configuring a new candidate starts afresh. Until the follower
//! has caught up after a start, the configured routing applies (seconds on a small topic).

use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;

use crate::alert::{Alert, AlertSink, DecisionDetails, DecisionEvidence, DecisionSource, Details};
pub use crate::alert::{Decision, VariantScore};
use crate::config::{Config, VariantsConfig};
use crate::event::{ModelRef, Variant};
use crate::inference::VariantControl;
use crate::served::SharedServedModels;
use crate::shutdown::Shutdown;
use crate::telemetry::events::{DecisionApplied, InternalEvent};
use crate::telemetry::Metrics;

/// The rule: with at least `decision_min_joined` joined actuals on both sides, a candidate whose
/// RMSE exceeds the primary's by more than `rollback_margin` is rolled back, and one below it by
/// more than `promote_margin` is promoted (when `auto_promote`). Anything between keeps both.
pub fn decide(cfg: &VariantsConfig, primary: VariantScore, candidate: VariantScore) -> Option<Decision> {
    if primary.joined < cfg.decision_min_joined || candidate.joined < cfg.decision_min_joined {
        return None;
    }
    if cfg.auto_rollback && candidate.rmse > primary.rmse * (1.0 + cfg.rollback_margin) {
        Some(Decision::Rollback)
    } else if cfg.auto_promote && candidate.rmse < primary.rmse * (1.0 - cfg.promote_margin) {
        Some(Decision::Promote)
    } else {
        None
    }
}

/// The monitor's evidence for `decision`, with the rule it applied.
pub fn evidence(
    cfg: &VariantsConfig,
    decision: Decision,
    primary: VariantScore,
    candidate: VariantScore,
) -> DecisionEvidence {
    let (margin, rule) = match decision {
        Decision::Rollback => (cfg.rollback_margin, "candidate.rmse > primary.rmse * (1 + margin)"),
        Decision::Promote => (cfg.promote_margin, "candidate.rmse < primary.rmse * (1 - margin)"),
    };
    DecisionEvidence { primary, candidate, margin, rmse_ratio: candidate.rmse / primary.rmse, rule: rule.into() }
}

/// The alert for a decision about `candidate` (the alert's model).
pub fn alert(
    decision: Decision,
    candidate: &ModelRef,
    primary: &ModelRef,
    source: DecisionSource,
    reason: Option<String>,
    evidence: Option<DecisionEvidence>,
) -> Alert {
    let d = DecisionDetails {
        decision,
        source,
        candidate_version: candidate.version.clone(),
        primary_version: primary.version.clone(),
        reason,
        evidence,
    };
    let details = match decision {
        Decision::Rollback => Details::ModelRollback(d),
        Decision::Promote => Details::ModelPromoted(d),
    };
    Alert::new(candidate.clone(), Some(Variant::Candidate), details)
}

/// Reads a decision out of an `alerts` record: `(decision, candidate version)` when the record is
/// a rollback or promotion of model `name`.
pub fn parse(payload: &[u8], name: &str) -> Option<(Decision, String)> {
    let a = Alert::decode(payload)?;
    if a.model.name != name {
        return None;
    }
    match a.details {
        Details::ModelRollback(d) | Details::ModelPromoted(d) => Some((d.decision, a.model.version)),
        _ => None,
    }
}

/// Publishes an operator's decision about the configured candidate and waits for the broker.
///
/// `primary_version` in the details is the configured `model.version` (it may read `latest`).
pub fn publish_operator_decision(
    config: &Config,
    decision: Decision,
    candidate_version: &str,
    reason: &str,
) -> Result<Alert, KafkaError> {
    let name = &config.model.name;
    let candidate = ModelRef { name: name.clone(), version: candidate_version.to_string() };
    let primary = ModelRef { name: name.clone(), version: config.model.version.clone() };
    let a = alert(decision, &candidate, &primary, DecisionSource::Operator, Some(reason.to_string()), None);
    let sink = AlertSink::new(&crate::kafka::client_config(config), &config.topics.alerts)?;
    sink.enqueue(&a)?;
    sink.flush(Duration::from_secs(30))?;
    Ok(a)
}

/// Follows the alerts topic and hands decisions about `candidate` to the inference thread.
pub fn spawn_follower(
    config: &Config,
    primary: ModelRef,
    candidate: ModelRef,
    controls: SyncSender<VariantControl>,
    served: SharedServedModels,
    metrics: std::sync::Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, KafkaError> {
    // Assigned, never subscribed: every replica reads every partition, and nothing is committed.
    let mut cc = crate::kafka::reader_config(config, "decisions");
    cc.set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    crate::kafka::assign_all(&consumer, &config.topics.alerts, Offset::Beginning)?;
    Ok(std::thread::Builder::new()
        .name("streamcast-decisions".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
                let msg = match msg {
                    Ok(m) => m,
                    Err(error) => {
                        tracing::warn!(%error, "Decision follower: alerts consumer error.");
                        continue;
                    }
                };
                let Some((decision, version)) = parse(msg.payload().unwrap_or_default(), &primary.name) else {
                    continue;
                };
                if version != candidate.version {
                    continue;
                }
                // Every decision is handed over, in log order: the latest one wins, so an
                // operator can undo an automatic decision; repeats change nothing.
                let control = match decision {
                    Decision::Rollback => VariantControl::Rollback { candidate_version: version.clone() },
                    Decision::Promote => VariantControl::Promote { candidate_version: version.clone() },
                };
                if shutdown.send(&controls, control).is_err() {
                    return; // The inference thread is gone: shutting down.
                }
                DecisionApplied { decision, candidate: &version, primary: &primary.version, offset: msg.offset() }
                    .emit(&metrics);
                served.write().unwrap_or_else(|e| e.into_inner()).on_decision(decision, &candidate.version);
            }
        })
        .expect("spawning a thread only fails when the OS is out of resources"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(rmse: f64, joined: usize) -> VariantScore {
        VariantScore { rmse, mae: rmse * 0.8, joined }
    }

    #[test]
    fn the_rule_needs_enough_actuals_and_a_clear_margin() {
        let cfg = VariantsConfig { decision_min_joined: 100, auto_promote: true, ..VariantsConfig::default() };
        assert_eq!(decide(&cfg, score(1.0, 100), score(5.0, 99)), None, "too few candidate actuals");
        assert_eq!(decide(&cfg, score(1.0, 100), score(1.11, 100)), Some(Decision::Rollback));
        assert_eq!(decide(&cfg, score(1.0, 100), score(1.09, 100)), None, "within the margin");
        assert_eq!(decide(&cfg, score(1.0, 100), score(0.91, 100)), None, "within the margin");
        assert_eq!(decide(&cfg, score(1.0, 100), score(0.89, 100)), Some(Decision::Promote));
        let manual = VariantsConfig { auto_promote: false, auto_rollback: false, ..cfg };
        assert_eq!(decide(&manual, score(1.0, 100), score(0.5, 100)), None);
        assert_eq!(decide(&manual, score(1.0, 100), score(5.0, 100)), None);
    }

    #[test]
    fn alerts_round_trip_through_parse() {
        let cand = ModelRef { name: "co2-mlp".into(), version: "9".into() };
        let prim = ModelRef { name: "co2-mlp".into(), version: "1".into() };
        let ev = evidence(&VariantsConfig::default(), Decision::Rollback, score(1.0, 100), score(2.0, 100));
        let a = alert(Decision::Rollback, &cand, &prim, DecisionSource::Monitor, None, Some(ev));
        let body = a.encode();
        assert_eq!(parse(&body, "co2-mlp"), Some((Decision::Rollback, "9".to_string())));
        assert_eq!(parse(&body, "other-model"), None);
        let Details::ModelRollback(d) = &a.details else { panic!("a rollback") };
        assert_eq!(d.primary_version, "1");
        assert_eq!(d.evidence.as_ref().unwrap().rmse_ratio, 2.0);
        assert_eq!(parse(br#"{"kind":"feature_drift","model":{"name":"co2-mlp","version":"1"}}"#, "co2-mlp"), None);
    }
}
