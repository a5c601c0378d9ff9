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
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::{Config, VariantsConfig};
use crate::event::ModelRef;
use crate::inference::VariantControl;
use crate::monitor::alerts::Alert;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

pub const ROLLBACK: &str = "model_rollback";
pub const PROMOTED: &str = "model_promoted";

/// Rolling error of one variant, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VariantScore {
    pub rmse: f64,
    pub mae: f64,
    pub joined: usize,
}

/// The monitor's verdict about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Rollback,
    Promote,
}

/// The rule: with at least `decision_min_joined` joined actuals on both sides, a candidate whose
/// RMSE exceeds the primary's by more than `rollback_margin` is rolled back, and one below it by
/// more than `promote_margin` is promoted (when `auto_promote`). Anything between keeps both.
pub fn decide(cfg: &VariantsConfig, primary: VariantScore, candidate: VariantScore) -> Option<Verdict> {
    if primary.joined < cfg.decision_min_joined || candidate.joined < cfg.decision_min_joined {
        return None;
    }
    if cfg.auto_rollback && candidate.rmse > primary.rmse * (1.0 + cfg.rollback_margin) {
        Some(Verdict::Rollback)
    } else if cfg.auto_promote && candidate.rmse < primary.rmse * (1.0 - cfg.promote_margin) {
        Some(Verdict::Promote)
    } else {
        None
    }
}

/// The alert for a decision about `candidate` (the alert's model), on behalf of `source`.
pub fn alert(
    verdict: Verdict,
    candidate: &ModelRef,
    primary: &ModelRef,
    source: &str,
    numbers: serde_json::Value,
) -> Alert {
    let (kind, decision) = match verdict {
        Verdict::Rollback => (ROLLBACK, "rollback"),
        Verdict::Promote => (PROMOTED, "promote"),
    };
    let mut details = numbers;
    details["decision"] = decision.into();
    details["source"] = source.into();
    details["candidate_version"] = candidate.version.clone().into();
    details["primary_version"] = primary.version.clone().into();
    Alert { kind, model: candidate.clone(), variant: Some("candidate"), at: crate::event::now_rfc3339(), details }
}

/// Reads a decision out of an `alerts` record: `(verdict, candidate version)` when the record is
/// a rollback or promotion of model `name`.
pub fn parse(payload: &[u8], name: &str) -> Option<(Verdict, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let verdict = match v["kind"].as_str()? {
        ROLLBACK => Verdict::Rollback,
        PROMOTED => Verdict::Promote,
        _ => return None,
    };
    if v["model"]["name"].as_str()? != name {
        return None;
    }
    Some((verdict, v["model"]["version"].as_str()?.to_string()))
}

/// Publishes an operator's decision about the configured candidate and waits for the broker.
///
/// `primary_version` in the details is the configured `model.version` (it may read `latest`).
pub fn publish_operator_decision(
    config: &Config,
    verdict: Verdict,
    candidate_version: &str,
    reason: &str,
) -> Result<Alert, KafkaError> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let name = &config.model.name;
    let candidate = ModelRef { name: name.clone(), version: candidate_version.to_string() };
    let primary = ModelRef { name: name.clone(), version: config.model.version.clone() };
    let a = alert(verdict, &candidate, &primary, "operator", serde_json::json!({"reason": reason}));
    let body = serde_json::to_vec(&a).expect("alert serializes");
    let producer: BaseProducer = crate::pipeline::client_config(config).create()?;
    producer.send(BaseRecord::to(&config.topics.alerts).key(name).payload(&body)).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    Ok(a)
}

/// Follows the alerts topic and hands decisions about `candidate` to the inference thread.
pub fn spawn_follower(
    config: &Config,
    primary: ModelRef,
    candidate: ModelRef,
    controls: SyncSender<VariantControl>,
    models_doc: Arc<RwLock<serde_json::Value>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, KafkaError> {
    let mut cc = crate::pipeline::client_config(config);
    // Assigned, never subscribed: every replica reads every partition, and nothing is committed.
    cc.set("group.id", format!("{}-decisions", config.consumer.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    let topic = config.topics.alerts.clone();
    let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
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
                let Some((verdict, version)) = parse(msg.payload().unwrap_or_default(), &primary.name) else {
                    continue;
                };
                if version != candidate.version {
                    continue;
                }
                // Every decision is handed over, in log order: the latest one wins, so an
                // operator can undo an automatic decision; repeats change nothing.
                let (control, label) = match verdict {
                    Verdict::Rollback => (VariantControl::Rollback { candidate_version: version.clone() }, "rollback"),
                    Verdict::Promote => (VariantControl::Promote { candidate_version: version.clone() }, "promote"),
                };
                if controls.send(control).is_err() {
                    return; // The inference thread is gone: shutting down.
                }
                tracing::warn!(
                    decision = label,
                    candidate = %version,
                    primary = %primary.version,
                    offset = msg.offset(),
                    "Applying a label-driven decision about the candidate."
                );
                metrics.variant_decisions.with_label_values(&[label]).inc();
                update_models_doc(&models_doc, verdict, &candidate.version);
            }
        })
        .expect("spawning a thread only fails when the OS is out of resources"))
}

/// Mirrors an applied decision in the `/models` document: the served primary has
/// `"variant": "primary"`; a rolled-back candidate stays listed with no traffic; a promoted
/// candidate's predecessor is listed as `"previous_primary"` (a rollback restores it).
fn update_models_doc(doc: &RwLock<serde_json::Value>, verdict: Verdict, candidate_version: &str) {
    let mut doc = doc.write().unwrap_or_else(|e| e.into_inner());
    let Some(models) = doc["models"].as_array_mut() else { return };
    let is = |m: &serde_json::Value, variant: &str| m["variant"] == variant;
    let promoted = models.iter().any(|m| is(m, "primary") && m["version"] == candidate_version);
    for m in models.iter_mut() {
        let Some(o) = m.as_object_mut() else { continue };
        let variant = o.get("variant").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let (new_variant, share, status) = match (verdict, promoted, variant.as_str()) {
            (Verdict::Rollback, false, "candidate") => ("candidate", 0.0, Some("rolled_back")),
            (Verdict::Rollback, false, "primary") => ("primary", 1.0, None),
            (Verdict::Rollback, true, "primary") => ("candidate", 0.0, Some("rolled_back")),
            (Verdict::Rollback, true, "previous_primary") => ("primary", 1.0, None),
            (Verdict::Promote, false, "candidate") => ("primary", 1.0, Some("promoted")),
            (Verdict::Promote, false, "primary") => ("previous_primary", 0.0, None),
            _ => continue,
        };
        o.insert("variant".into(), new_variant.into());
        o.insert("traffic_share".into(), share.into());
        o.remove("routing");
        match status {
            Some(s) => o.insert("status".into(), s.into()),
            None => o.remove("status"),
        };
    }
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
        assert_eq!(decide(&cfg, score(1.0, 100), score(1.11, 100)), Some(Verdict::Rollback));
        assert_eq!(decide(&cfg, score(1.0, 100), score(1.09, 100)), None, "within the margin");
        assert_eq!(decide(&cfg, score(1.0, 100), score(0.91, 100)), None, "within the margin");
        assert_eq!(decide(&cfg, score(1.0, 100), score(0.89, 100)), Some(Verdict::Promote));
        let manual = VariantsConfig { auto_promote: false, auto_rollback: false, ..cfg };
        assert_eq!(decide(&manual, score(1.0, 100), score(0.5, 100)), None);
        assert_eq!(decide(&manual, score(1.0, 100), score(5.0, 100)), None);
    }

    #[test]
    fn alerts_round_trip_through_parse() {
        let cand = ModelRef { name: "co2-mlp".into(), version: "9".into() };
        let prim = ModelRef { name: "co2-mlp".into(), version: "1".into() };
        let a = alert(Verdict::Rollback, &cand, &prim, "monitor", serde_json::json!({"margin": 0.1}));
        let body = serde_json::to_vec(&a).unwrap();
        assert_eq!(parse(&body, "co2-mlp"), Some((Verdict::Rollback, "9".to_string())));
        assert_eq!(parse(&body, "other-model"), None);
        assert_eq!(a.details["primary_version"], "1");
        assert_eq!(parse(br#"{"kind":"feature_drift","model":{"name":"co2-mlp","version":"1"}}"#, "co2-mlp"), None);
    }
}
