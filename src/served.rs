//! What this process serves, as `GET /models` shows it: the primary, the A/B candidate, the
//! shadow and the fallback, with their traffic shares. Start-up fills it; the registry watcher
//! ([`ServedModels::on_reload`]) and the decision follower ([`ServedModels::on_decision`]) keep
//! it current. Only the HTTP layer serializes it.

use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::alert::Decision;
use crate::bundle::Layout;
use crate::event::ModelRef;

/// The role of one listed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    Primary,
    Candidate,
    Shadow,
    Fallback,
    /// A promoted candidate's predecessor, kept so a rollback can restore it.
    PreviousPrimary,
}

/// Why a listed model is not serving as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    FailedToLoad,
    RolledBack,
    Promoted,
}

/// What a loaded model's session looks like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signature {
    pub features: Vec<String>,
    pub window: usize,
    pub horizon: usize,
    pub layout: Layout,
    pub execution_provider: &'static str,
    pub execution_provider_fallback_reason: Option<String>,
}

/// One entry of `/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub variant: Slot,
    pub traffic_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the fallback serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serves: Option<&'static str>,
    /// The shadow's topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl ServedModel {
    pub fn new(model: &ModelRef, variant: Slot, traffic_share: f64) -> ServedModel {
        ServedModel {
            name: model.name.clone(),
            version: model.version.clone(),
            variant,
            traffic_share,
            routing: None,
            status: None,
            reason: None,
            serves: None,
            topic: None,
            signature: None,
        }
    }
}

/// A monitor-only process lists the model it watches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Watched {
    pub name: String,
    pub version: String,
    pub role: &'static str,
}

/// The `/models` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServedModels {
    Worker { models: Vec<ServedModel> },
    Monitor { models: [Watched; 1] },
}

/// Shared between start-up, the registry watcher, the decision follower and the HTTP server.
pub type SharedServedModels = Arc<RwLock<ServedModels>>;

impl ServedModels {
    pub fn monitor(model: &ModelRef) -> ServedModels {
        ServedModels::Monitor {
            models: [Watched { name: model.name.clone(), version: model.version.clone(), role: "monitor" }],
        }
    }

    pub fn worker(primary: ServedModel) -> ServedModels {
        ServedModels::Worker { models: vec![primary] }
    }

    pub fn shared(self) -> SharedServedModels {
        Arc::new(RwLock::new(self))
    }

    fn entries(&mut self) -> &mut [ServedModel] {
        match self {
            ServedModels::Worker { models } => models,
            ServedModels::Monitor { .. } => &mut [],
        }
    }

    /// Adds a model beside the primary; a candidate takes its share from the primary.
    pub fn add(&mut self, model: ServedModel) {
        if let ServedModels::Worker { models } = self {
            if model.variant == Slot::Candidate {
                for m in models.iter_mut().filter(|m| m.variant == Slot::Primary) {
                    m.traffic_share = 1.0 - model.traffic_share;
                }
            }
            models.push(model);
        }
    }

    /// The registry watcher swapped in `version` as the primary. Found by variant, not position:
    /// a promotion reorders the entries.
    pub fn on_reload(&mut self, version: &str) {
        if let Some(primary) = self.entries().iter_mut().find(|m| m.variant == Slot::Primary) {
            primary.version = version.to_string();
            primary.status = None;
            primary.reason = None;
        }
    }

    /// Mirrors an applied decision: a rolled-back candidate stays listed with no traffic; a
    /// promoted candidate's predecessor is listed as `previous_primary` (a rollback restores it).
    pub fn on_decision(&mut self, decision: Decision, candidate_version: &str) {
        let entries = self.entries();
        let promoted = entries.iter().any(|m| m.variant == Slot::Primary && m.version == candidate_version);
        for m in entries.iter_mut() {
            let (variant, share, status) = match (decision, promoted, m.variant) {
                (Decision::Rollback, false, Slot::Candidate) => (Slot::Candidate, 0.0, Some(Status::RolledBack)),
                (Decision::Rollback, false, Slot::Primary) => (Slot::Primary, 1.0, None),
                (Decision::Rollback, true, Slot::Primary) => (Slot::Candidate, 0.0, Some(Status::RolledBack)),
                (Decision::Rollback, true, Slot::PreviousPrimary) => (Slot::Primary, 1.0, None),
                (Decision::Promote, false, Slot::Candidate) => (Slot::Primary, 1.0, Some(Status::Promoted)),
                (Decision::Promote, false, Slot::Primary) => (Slot::PreviousPrimary, 0.0, None),
                _ => continue,
            };
            m.variant = variant;
            m.traffic_share = share;
            m.routing = None;
            m.status = status;
        }
    }

    /// The listed version of `slot`, if any.
    pub fn version_of(&self, slot: Slot) -> Option<&str> {
        match self {
            ServedModels::Worker { models } => models.iter().find(|m| m.variant == slot).map(|m| m.version.as_str()),
            ServedModels::Monitor { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> ServedModels {
        let r = |v: &str| ModelRef { name: "co2-mlp".into(), version: v.into() };
        let mut d = ServedModels::worker(ServedModel::new(&r("1"), Slot::Primary, 1.0));
        let mut c = ServedModel::new(&r("2"), Slot::Candidate, 0.25);
        c.routing = Some("sticky by series_id hash");
        d.add(c);
        d.add(ServedModel::new(&r("0"), Slot::Fallback, 0.0));
        d
    }

    fn shares(d: &ServedModels) -> Vec<(String, Slot, f64, Option<Status>)> {
        match d {
            ServedModels::Worker { models } => {
                models.iter().map(|m| (m.version.clone(), m.variant, m.traffic_share, m.status)).collect()
            }
            ServedModels::Monitor { .. } => Vec::new(),
        }
    }

    #[test]
    fn a_candidate_takes_its_share_from_the_primary() {
        let v = serde_json::to_value(doc()).unwrap();
        assert_eq!(v["models"][0]["traffic_share"], 0.75);
        assert_eq!(v["models"][1]["routing"], "sticky by series_id hash");
        assert_eq!(v["models"][2]["variant"], "fallback");
        assert!(v["models"][0].get("status").is_none());
    }

    #[test]
    fn decisions_and_reloads_move_the_entries() {
        let mut d = doc();
        d.on_decision(Decision::Rollback, "2");
        assert_eq!(
            shares(&d)[..2],
            [("1".into(), Slot::Primary, 1.0, None), ("2".into(), Slot::Candidate, 0.0, Some(Status::RolledBack))]
        );
        d.on_decision(Decision::Promote, "2");
        assert_eq!(
            shares(&d)[..2],
            [("1".into(), Slot::PreviousPrimary, 0.0, None), ("2".into(), Slot::Primary, 1.0, Some(Status::Promoted))]
        );
        assert_eq!(d.version_of(Slot::Primary), Some("2"));
        d.on_decision(Decision::Rollback, "2");
        assert_eq!(
            shares(&d)[..2],
            [("1".into(), Slot::Primary, 1.0, None), ("2".into(), Slot::Candidate, 0.0, Some(Status::RolledBack))]
        );
        d.on_reload("3");
        assert_eq!(d.version_of(Slot::Primary), Some("3"));
        assert_eq!(d.version_of(Slot::Candidate), Some("2"));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["models"][1]["status"], "rolled_back");
    }

    #[test]
    fn a_monitor_lists_what_it_watches() {
        let m = ModelRef { name: "co2-mlp".into(), version: "1".into() };
        let v = serde_json::to_value(ServedModels::monitor(&m)).unwrap();
        assert_eq!(v, serde_json::json!({"models": [{"name": "co2-mlp", "version": "1", "role": "monitor"}]}));
    }
}
