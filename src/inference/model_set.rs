//! The models one inference thread serves: the primary, the A/B candidate, the shadow, and a
//! promoted candidate's predecessor. Reloads from the registry watcher and label-driven
//! decisions are applied here, between two batches, so no batch is scored by two versions of
//! the same role and no event waits for a load.

use std::sync::mpsc::Receiver;

use super::{InferenceError, Model};
use crate::event::ModelRef;

/// A label-driven decision about the A/B candidate, applied between two batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantControl {
    /// Stop routing to the candidate of this version: its series go back to the primary.
    Rollback { candidate_version: String },
    /// The candidate of this version becomes the primary for all series.
    Promote { candidate_version: String },
}

/// Anything that turns raw windows into predictions (a model, a fallback).
pub trait Predict {
    /// `n` raw windows, time-major, → `n · H` predictions in `out` (non-finite values are left
    /// for the caller to judge per row).
    fn predict_rows(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError>;
}

impl Predict for Model {
    fn predict_rows(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        Model::predict_rows(self, raw, n, out)
    }
}

/// The primary and its variants.
pub struct ModelSet {
    /// `None` while a primary that failed to load is replaced by the fallback.
    primary: Option<Model>,
    candidate: Option<Model>,
    /// False after a rollback: the candidate stays loaded (a later promotion can still apply)
    /// but gets no rows.
    candidate_active: bool,
    shadow: Option<Model>,
    /// The primary a promotion replaced, kept so a rollback of that promotion can restore it.
    demoted: Option<Model>,
    /// Validated, warmed-up replacement primaries from the registry watcher.
    reloads: Option<Receiver<Model>>,
    controls: Option<Receiver<VariantControl>>,
}

impl ModelSet {
    /// `primary` is `None` when it failed to load and a fallback stands in.
    pub fn new(primary: Option<Model>) -> ModelSet {
        ModelSet {
            primary,
            candidate: None,
            candidate_active: true,
            shadow: None,
            demoted: None,
            reloads: None,
            controls: None,
        }
    }

    /// Routes candidate-marked jobs to `candidate`, and scores every job also with `shadow`.
    pub fn with_variants(mut self, candidate: Option<Model>, shadow: Option<Model>) -> ModelSet {
        self.candidate = candidate;
        self.shadow = shadow;
        self
    }

    /// Accepts replacement primaries on `reloads`.
    pub fn with_reloads(mut self, reloads: Receiver<Model>) -> ModelSet {
        self.reloads = Some(reloads);
        self
    }

    /// Accepts rollback and promotion decisions about the candidate.
    pub fn with_controls(mut self, controls: Receiver<VariantControl>) -> ModelSet {
        self.controls = Some(controls);
        self
    }

    /// Applies pending reloads, then pending decisions. True when a primary now serves where
    /// none did (a reload or promotion after a failed load): the breaker should close.
    pub fn apply_pending(&mut self) -> bool {
        let had_primary = self.primary.is_some();
        if let Some(rx) = &self.reloads {
            while let Ok(next) = rx.try_recv() {
                tracing::info!(
                    from = %self.primary_version(),
                    to = %next.model_ref().version,
                    model = %next.model_ref().name,
                    "Model swapped."
                );
                self.primary = Some(next);
            }
        }
        let pending: Vec<VariantControl> = self.controls.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default();
        for control in pending {
            self.apply(control);
        }
        !had_primary && self.primary.is_some()
    }

    /// Applies one decision. Decisions apply in order, so the latest one wins (an operator can
    /// undo an automatic decision). One naming another version than the configured candidate is
    /// ignored, and repeating one changes nothing: replaying the decision log is harmless.
    ///
    /// Split (candidate gets its share) → rollback → candidate loaded but idle; → promote →
    /// candidate is the primary, the old primary kept; rollback then restores it.
    pub fn apply(&mut self, control: VariantControl) {
        let (VariantControl::Rollback { candidate_version: v } | VariantControl::Promote { candidate_version: v }) =
            &control;
        let is_candidate = self.candidate.as_ref().is_some_and(|c| c.model_ref().version == *v);
        let is_promoted = self.demoted.is_some() && self.primary.as_ref().is_some_and(|m| m.model_ref().version == *v);
        match control {
            VariantControl::Rollback { .. } if is_candidate && self.candidate_active => {
                self.candidate_active = false;
                tracing::warn!(candidate = %v, primary = %self.primary_version(), "Candidate rolled back: its series are served by the primary again.");
            }
            VariantControl::Rollback { .. } if is_promoted => {
                let previous = self.demoted.take().expect("checked above");
                tracing::warn!(candidate = %v, primary = %previous.model_ref().version, "Promotion rolled back: the previous primary serves every series again.");
                self.candidate = self.primary.replace(previous);
                self.candidate_active = false;
            }
            VariantControl::Promote { .. } if is_candidate => {
                tracing::warn!(from = %self.primary_version(), to = %v, "Candidate promoted: it now serves every series as the primary.");
                self.demoted = std::mem::replace(&mut self.primary, self.candidate.take());
                self.candidate_active = false;
            }
            _ => {}
        }
    }

    fn primary_version(&self) -> &str {
        self.primary.as_ref().map_or("(none)", |m| m.model_ref().version.as_str())
    }

    pub fn primary(&self) -> Option<&Model> {
        self.primary.as_ref()
    }

    pub fn primary_mut(&mut self) -> Option<&mut Model> {
        self.primary.as_mut()
    }

    /// The candidate while it gets traffic.
    pub fn candidate(&self) -> Option<&Model> {
        self.candidate.as_ref().filter(|_| self.candidate_active)
    }

    pub fn candidate_mut(&mut self) -> Option<&mut Model> {
        self.candidate.as_mut().filter(|_| self.candidate_active)
    }

    pub fn shadow(&self) -> Option<&Model> {
        self.shadow.as_ref()
    }

    pub fn shadow_mut(&mut self) -> Option<&mut Model> {
        self.shadow.as_mut()
    }

    /// A candidate or a shadow scores besides the primary.
    pub fn has_variants(&self) -> bool {
        self.candidate().is_some() || self.shadow.is_some()
    }

    /// Values per window the primary outputs (see [`Model::width`]), when there is one.
    pub fn width(&self) -> Option<usize> {
        self.primary.as_ref().map(Model::width)
    }

    /// The primary's quantile levels, when it is a quantile bundle.
    pub fn quantiles(&self) -> Option<&[f64]> {
        self.primary.as_ref().and_then(Model::quantiles)
    }

    pub fn primary_ref(&self) -> Option<&ModelRef> {
        self.primary.as_ref().map(Model::model_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::inference::SessionOptions;

    fn load(v: &str) -> Model {
        let dir = format!("models/co2-mlp/{v}");
        Model::load(Bundle::load(std::path::Path::new(&dir)).unwrap(), SessionOptions::default()).unwrap()
    }

    fn roles(s: &ModelSet) -> (String, Option<String>) {
        (s.primary_ref().unwrap().version.clone(), s.candidate().map(|c| c.model_ref().version.clone()))
    }

    #[test]
    fn reloads_replace_the_primary_and_report_a_recovery() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut set = ModelSet::new(None).with_reloads(rx);
        assert!(!set.apply_pending(), "nothing pending");
        tx.send(load("1")).unwrap();
        assert!(set.apply_pending(), "a primary where there was none");
        tx.send(load("2")).unwrap();
        assert!(!set.apply_pending(), "a swap is not a recovery");
        assert_eq!(set.primary_ref().unwrap().version, "2");
    }

    #[test]
    fn decisions_move_the_candidate_and_a_rollback_undoes_a_promotion() {
        let mut set = ModelSet::new(Some(load("1"))).with_variants(Some(load("2")), None);
        let rollback = || VariantControl::Rollback { candidate_version: "2".into() };
        let promote = || VariantControl::Promote { candidate_version: "2".into() };
        assert_eq!(roles(&set), ("1".into(), Some("2".into())));
        set.apply(rollback());
        assert_eq!(roles(&set), ("1".into(), None));
        set.apply(promote());
        assert_eq!(roles(&set), ("2".into(), None));
        set.apply(promote());
        assert_eq!(roles(&set), ("2".into(), None), "repeats change nothing");
        set.apply(rollback());
        assert_eq!(roles(&set), ("1".into(), None), "the previous primary is back");
        set.apply(VariantControl::Promote { candidate_version: "3".into() });
        assert_eq!(roles(&set), ("1".into(), None), "other versions are ignored");
    }
}
