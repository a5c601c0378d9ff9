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

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::alert::{Alert, AlertSink, DecisionDetails, DecisionEvidence, DecisionSource, Details};
pub use crate::alert::{Decision, VariantScore};
use crate::config::{Config, VariantsConfig};
use crate::event::{ModelRef, Variant};
use crate::inference::VariantControl;
use crate::served::SharedServedModels;
use crate::shutdown::Shutdown;
use crate::telemetry::events::{DecisionApplied, DecisionIgnored, InternalEvent};
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

/// The alert for a decision about `candidate` (the alert's model), signed with `key` if any.
pub fn alert(
    decision: Decision,
    candidate: &ModelRef,
    primary: &ModelRef,
    source: DecisionSource,
    reason: Option<String>,
    evidence: Option<DecisionEvidence>,
    key: Option<&[u8]>,
) -> Alert {
    let d = DecisionDetails {
        decision,
        source,
        candidate_version: candidate.version.clone(),
        primary_version: primary.version.clone(),
        reason,
        evidence,
        signature: None,
    };
    let details = match decision {
        Decision::Rollback => Details::ModelRollback(d),
        Decision::Promote => Details::ModelPromoted(d),
    };
    let mut alert = Alert::new(candidate.clone(), Some(Variant::Candidate), details);
    if let Some(key) = key {
        let signature = sign(key, &alert);
        if let Details::ModelRollback(d) | Details::ModelPromoted(d) = &mut alert.details {
            d.signature = signature;
        }
    }
    alert
}

/// The fields a decision's signature covers, one per line: what it does, to which candidate,
/// on whose behalf, and when. The evidence and reason are informational and not covered.
fn signed_text(alert: &Alert, d: &DecisionDetails) -> String {
    format!(
        "streamcast-decision-v1\n{}\n{}\n{}\n{}\n{:?}\n{:?}\n{}\n{}",
        alert.kind().as_str(),
        alert.model.name,
        alert.model.version,
        alert.at,
        d.decision,
        d.source,
        d.candidate_version,
        d.primary_version
    )
}

fn mac(key: &[u8], alert: &Alert, d: &DecisionDetails) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(signed_text(alert, d).as_bytes());
    mac
}

/// The hex HMAC-SHA256 of a decision alert; `None` for other kinds.
pub fn sign(key: &[u8], alert: &Alert) -> Option<String> {
    let (Details::ModelRollback(d) | Details::ModelPromoted(d)) = &alert.details else { return None };
    let tag = mac(key, alert, d).finalize().into_bytes();
    Some(tag.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a decision read from the alerts topic is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key is configured and the decision carries no signature.
    Unsigned,
    /// The signature does not match the decision (forged, or signed with another key).
    BadSignature,
    /// Older than a decision already applied: a replayed record.
    Stale,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
        }
    }
}

/// Checks a decision's signature against `key` (in constant time).
pub fn verify(key: &[u8], alert: &Alert) -> Result<(), Refusal> {
    let (Details::ModelRollback(d) | Details::ModelPromoted(d)) = &alert.details else { return Ok(()) };
    let hex = d.signature.as_deref().ok_or(Refusal::Unsigned)?;
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    let bytes = bytes.filter(|b| b.len() == 32).ok_or(Refusal::BadSignature)?;
    mac(key, alert, d).verify_slice(&bytes).map_err(|_| Refusal::BadSignature)
}

/// Reads a decision about model `name` out of an `alerts` record: `None` for anything else.
pub fn parse(payload: &[u8], name: &str) -> Option<(Decision, Alert)> {
    let a = Alert::decode(payload)?;
    if a.model.name != name {
        return None;
    }
    match &a.details {
        Details::ModelRollback(d) | Details::ModelPromoted(d) => Some((d.decision, a)),
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
    let key = config.variants.decision_key().map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    let a =
        alert(decision, &candidate, &primary, DecisionSource::Operator, Some(reason.to_string()), None, key.as_deref());
    let sink = AlertSink::new(&crate::kafka::producer_side_config(config), &config.topics.alerts)?;
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
    let key = config.variants.decision_key().map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    Ok(std::thread::Builder::new()
        .name("streamcast-decisions".into())
        .spawn(move || {
            let mut last_applied: Option<chrono::DateTime<chrono::FixedOffset>> = None;
            while !shutdown.is_triggered() {
                let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
                let msg = match msg {
                    Ok(m) => m,
                    Err(error) => {
                        tracing::warn!(%error, "Decision follower: alerts consumer error.");
                        continue;
                    }
                };
                let Some((decision, alert)) = parse(msg.payload().unwrap_or_default(), &primary.name) else {
                    continue;
                };
                let version = alert.model.version.clone();
                if version != candidate.version {
                    continue;
                }
                // With a key, only signed decisions count, and a replayed older one cannot
                // undo a newer one.
                if let Some(key) = key.as_deref() {
                    let at = chrono::DateTime::parse_from_rfc3339(&alert.at).ok();
                    let stale = match (at, last_applied) {
                        (Some(at), Some(last)) => at < last,
                        (None, _) => true,
                        (Some(_), None) => false,
                    };
                    let refusal = verify(key, &alert).err().or(stale.then_some(Refusal::Stale));
                    if let Some(refusal) = refusal {
                        DecisionIgnored { reason: refusal.as_str(), candidate: &version, offset: msg.offset() }
                            .emit(&metrics);
                        continue;
                    }
                    last_applied = at;
                }
                // Every decision is handed over, in log order: the latest one wins, so an
                // operator can undo an automatic decision; repeats change nothing.
                let control = match decision {
                    Decision::Rollback => VariantControl::Rollback { candidate_version: version.clone() },
                    Decision::Promote => VariantControl::Promote { candidate_version: version.clone() },
                };
                if shutdown.send(&controls, control).is_err() {
                    return; // Shutting down, or the inference thread is gone.
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
        let a = alert(Decision::Rollback, &cand, &prim, DecisionSource::Monitor, None, Some(ev), None);
        let body = a.encode();
        let (decision, parsed) = parse(&body, "co2-mlp").unwrap();
        assert_eq!((decision, parsed.model.version.as_str()), (Decision::Rollback, "9"));
        assert!(parse(&body, "other-model").is_none());
        let Details::ModelRollback(d) = &a.details else { panic!("a rollback") };
        assert_eq!(d.primary_version, "1");
        assert_eq!(d.evidence.as_ref().unwrap().rmse_ratio, 2.0);
        assert!(parse(br#"{"kind":"feature_drift","model":{"name":"co2-mlp","version":"1"}}"#, "co2-mlp").is_none());
    }

    #[test]
    fn signatures_cover_the_decision_and_only_the_right_key_verifies() {
        let key = b"0123456789abcdef-secret";
        let cand = ModelRef { name: "co2-mlp".into(), version: "9".into() };
        let prim = ModelRef { name: "co2-mlp".into(), version: "1".into() };
        let signed =
            alert(Decision::Promote, &cand, &prim, DecisionSource::Operator, Some("ok".into()), None, Some(key));
        assert_eq!(verify(key, &signed), Ok(()));
        // It survives the wire.
        let (_, back) = parse(&signed.encode(), "co2-mlp").unwrap();
        assert_eq!(verify(key, &back), Ok(()));
        assert_eq!(verify(b"another-key-of-16+", &back), Err(Refusal::BadSignature));
        let unsigned = alert(Decision::Promote, &cand, &prim, DecisionSource::Operator, None, None, None);
        assert_eq!(verify(key, &unsigned), Err(Refusal::Unsigned));
        // Turning a signed promotion into a rollback, or retargeting it, breaks the signature.
        let mut forged = back.clone();
        if let Details::ModelPromoted(d) = &mut forged.details {
            d.decision = Decision::Rollback;
        }
        assert_eq!(verify(key, &forged), Err(Refusal::BadSignature));
        let mut moved = back;
        moved.model.version = "10".into();
        assert_eq!(verify(key, &moved), Err(Refusal::BadSignature));
    }
}
