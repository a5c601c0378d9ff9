//! Drift of what the model actually sees (served inputs) and says (served predictions), against
//! the bundle's reference sample.
//!
//! A p-value alone flags tiny shifts once samples are large, so a feature is flagged only when
//! (1) at least `drift_min_samples` recent values are held, (2) its KS p-value, corrected across
//! features with Benjamini-Hochberg, is below `drift_alpha`, and (3) an effect size says the shift
//! matters: the KS statistic reaches `drift_ks_threshold` or the PSI reaches
//! `drift_psi_threshold`. It clears (hysteresis) once the corrected p-value is back above alpha or
//! both effect sizes fall below half their thresholds.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::{benjamini_hochberg, ks_2samp, psi, SlidingSample};
use crate::bundle::Bundle;
use crate::config::MonitorConfig;

/// Drift statistics of one feature (or of the predictions).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftStat {
    pub ks_statistic: Option<f64>,
    /// The KS p-value, Benjamini-Hochberg-corrected across features (uncorrected for predictions).
    pub p_value: Option<f64>,
    pub psi: Option<f64>,
    pub samples: usize,
}

/// One evaluation.
#[derive(Debug, Clone, Default)]
pub struct DriftReport {
    pub features: BTreeMap<String, DriftStat>,
    pub drifted: Vec<String>,
    pub prediction: Option<DriftStat>,
    pub prediction_drifted: bool,
}

impl DriftReport {
    /// True when `s` is clearly not drifting (the stricter test that resolves an alert).
    pub fn is_clear(&self, s: &DriftStat, cfg: &MonitorConfig) -> bool {
        let (Some(ks), Some(p), Some(psi)) = (s.ks_statistic, s.p_value, s.psi) else { return true };
        p >= cfg.drift_alpha || (ks < 0.5 * cfg.drift_ks_threshold && psi < 0.5 * cfg.drift_psi_threshold)
    }
}

fn flagged(s: &DriftStat, cfg: &MonitorConfig) -> bool {
    let (Some(ks), Some(p), Some(psi)) = (s.ks_statistic, s.p_value, s.psi) else { return false };
    s.samples >= cfg.drift_min_samples
        && p < cfg.drift_alpha
        && (ks >= cfg.drift_ks_threshold || psi >= cfg.drift_psi_threshold)
}

/// A served value as compared: widened from f32, with -0.0 folded into 0.0 so both tie.
fn as_served(v: f32) -> f64 {
    f64::from(v) + 0.0
}

/// Recent served values per feature and of predictions, next to the reference.
pub struct DriftTracker {
    names: Vec<String>,
    reference: Vec<Option<Vec<f64>>>,
    current: Vec<SlidingSample>,
    reference_predictions: Option<Vec<f64>>,
    current_predictions: SlidingSample,
}

impl DriftTracker {
    pub fn new(bundle: &Bundle, cfg: &MonitorConfig) -> DriftTracker {
        let m = &bundle.manifest;
        // Served values pass through f32 (the model's input type); the reference must too, or a
        // discrete feature such as month_sin = 0.866025 would never tie with its served copy
        // 0.86602497 and the KS statistic would measure rounding instead of drift.
        let reference = m
            .features
            .iter()
            .map(|f| {
                let values = m.reference.features.get(f).filter(|v| !v.is_empty())?;
                Some(values.iter().map(|x| as_served(*x as f32)).collect())
            })
            .collect();
        DriftTracker {
            names: m.features.clone(),
            reference,
            current: m.features.iter().map(|_| SlidingSample::new(cfg.drift_sample_size)).collect(),
            reference_predictions: Some(m.reference.predictions.clone()).filter(|v| !v.is_empty()),
            current_predictions: SlidingSample::new(cfg.drift_sample_size),
        }
    }

    /// Records one served observation (raw values in bundle order).
    pub fn push_features(&mut self, row: &[f32]) {
        for (sample, v) in self.current.iter_mut().zip(row) {
            sample.push(as_served(*v));
        }
    }

    /// Records one served prediction (first horizon step).
    pub fn push_prediction(&mut self, v: f64) {
        if v.is_finite() {
            self.current_predictions.push(v);
        }
    }

    pub fn evaluate(&self, cfg: &MonitorConfig) -> DriftReport {
        let mut report = DriftReport::default();
        let mut raw_p: Vec<(usize, f64)> = Vec::new();
        let mut stats: Vec<Option<DriftStat>> = Vec::with_capacity(self.names.len());
        for (i, (reference, current)) in self.reference.iter().zip(&self.current).enumerate() {
            let Some(reference) = reference else {
                stats.push(None);
                continue;
            };
            let cur = current.values();
            let ks = ks_2samp(reference, cur);
            if let Some(k) = &ks {
                raw_p.push((i, k.p_value));
            }
            stats.push(Some(DriftStat {
                ks_statistic: ks.as_ref().map(|k| k.statistic),
                p_value: ks.as_ref().map(|k| k.p_value),
                psi: psi(reference, cur, cfg.drift_bins),
                samples: cur.len(),
            }));
        }
        // Correct across the features that have a p-value.
        let adjusted = benjamini_hochberg(&raw_p.iter().map(|(_, p)| *p).collect::<Vec<_>>());
        for ((i, _), adj) in raw_p.iter().zip(adjusted) {
            if let Some(s) = stats[*i].as_mut() {
                s.p_value = Some(adj);
            }
        }
        for (name, stat) in self.names.iter().zip(stats) {
            if let Some(s) = stat {
                if flagged(&s, cfg) {
                    report.drifted.push(name.clone());
                }
                report.features.insert(name.clone(), s);
            }
        }
        if let Some(reference) = &self.reference_predictions {
            let cur = self.current_predictions.values();
            let ks = ks_2samp(reference, cur);
            let s = DriftStat {
                ks_statistic: ks.as_ref().map(|k| k.statistic),
                p_value: ks.as_ref().map(|k| k.p_value),
                psi: psi(reference, cur, cfg.drift_bins),
                samples: cur.len(),
            };
            report.prediction_drifted = flagged(&s, cfg);
            report.prediction = Some(s);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A discrete feature served exactly as in training must not look drifted because of f32.
    #[test]
    fn discrete_reference_values_tie_with_their_served_f32_copies() {
        let mut bundle = crate::bundle::Bundle::load(std::path::Path::new("models/co2-mlp/1")).unwrap();
        let months: Vec<f64> = (0..1200).map(|i| (2.0 * std::f64::consts::PI * (i % 12) as f64 / 12.0).sin()).collect();
        let rounded: Vec<f64> = months.iter().map(|v| (v * 1e6).round() / 1e6).collect();
        bundle.manifest.reference.features.insert("month_sin".into(), rounded.clone());
        let cfg = MonitorConfig { drift_sample_size: 600, drift_min_samples: 100, ..MonitorConfig::default() };
        let mut t = DriftTracker::new(&bundle, &cfg);
        for v in rounded.iter().take(600) {
            t.push_features(&[340.0, *v as f32, 0.5]);
        }
        let r = t.evaluate(&cfg);
        let s = &r.features["month_sin"];
        assert!(s.ks_statistic.unwrap() < 0.01, "{s:?}");
        assert!(!r.drifted.contains(&"month_sin".to_string()));
    }
}
