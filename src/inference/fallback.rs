//! What serves when the primary cannot: a second bundle, or a model-free naive forecast (last
//! value, seasonal naive) read from the raw window.

use super::{InferenceError, Model};
use crate::bundle::Manifest;
use crate::config::FallbackKind;
use crate::event::ModelRef;

/// Errors setting up a fallback (reported as configuration errors).
#[derive(Debug, thiserror::Error)]
#[error("fallback.{key}: {message}")]
pub struct FallbackError {
    pub key: &'static str,
    pub message: String,
}

/// What serves a batch the primary cannot.
pub enum FallbackModel {
    /// A second bundle with the primary's features, window and horizon.
    Bundle(Model),
    /// A model-free forecast from the raw window.
    Naive(Naive),
}

impl FallbackModel {
    pub fn model_ref(&self) -> &ModelRef {
        match self {
            FallbackModel::Bundle(m) => m.model_ref(),
            FallbackModel::Naive(n) => &n.model_ref,
        }
    }

    /// Values per window it outputs: a bundle's [`Model::width`]; a naive forecast's horizon
    /// (one value per step, even next to a quantile primary).
    pub fn width(&self) -> usize {
        match self {
            FallbackModel::Bundle(m) => m.width(),
            FallbackModel::Naive(n) => n.horizon,
        }
    }

    /// Non-finite predictions are left in `out` for the caller to judge per row.
    pub fn predict_rows(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        match self {
            FallbackModel::Bundle(m) => m.predict_rows(raw, n, out),
            FallbackModel::Naive(naive) => {
                naive.predict(raw, n, out);
                Ok(())
            }
        }
    }
}

/// Last value, or seasonal naive, of the target feature in the raw (un-normalized) window.
///
/// Last value: every horizon step is the newest observed target. Seasonal naive with season `m`:
/// step `h` (1-based) is the target observed `m` steps before it, `y[T − m + ((h − 1) mod m)]`.
#[derive(Debug, Clone)]
pub struct Naive {
    /// Position of the target among the bundle's features.
    target: usize,
    features: usize,
    window: usize,
    horizon: usize,
    /// 1 for last value.
    season: usize,
    /// `{name: <model>, version: "fallback-last_value" | "fallback-seasonal_naive-<m>"}`.
    pub model_ref: ModelRef,
}

impl Naive {
    /// A naive forecast for `manifest`'s target, which must be one of its features.
    pub fn for_manifest(manifest: &Manifest, kind: FallbackKind, season: usize) -> Result<Naive, FallbackError> {
        let target =
            manifest.features.iter().position(|f| *f == manifest.target.name).ok_or_else(|| FallbackError {
                key: "kind",
                message: format!(
                    "a naive fallback repeats the target `{}`, which is not among the model's features {:?}",
                    manifest.target.name, manifest.features
                ),
            })?;
        let (season, version) = match kind {
            FallbackKind::LastValue => (1, "fallback-last_value".to_string()),
            FallbackKind::SeasonalNaive => {
                if season > manifest.window {
                    return Err(FallbackError {
                        key: "season",
                        message: format!(
                            "season {season} is longer than the model's window of {} steps",
                            manifest.window
                        ),
                    });
                }
                (season, format!("fallback-seasonal_naive-{season}"))
            }
            other => {
                return Err(FallbackError { key: "kind", message: format!("{other:?} is not a naive forecast") });
            }
        };
        Ok(Naive {
            target,
            features: manifest.features.len(),
            window: manifest.window,
            horizon: manifest.horizon,
            season,
            model_ref: ModelRef { name: manifest.name.clone(), version },
        })
    }

    /// `n` windows of `window · features` raw values, time-major → `n · horizon` forecasts.
    pub fn predict(&self, raw: &[f32], n: usize, out: &mut Vec<f32>) {
        let width = self.window * self.features;
        out.clear();
        for w in raw.chunks_exact(width).take(n) {
            for h in 0..self.horizon {
                let step = self.window - self.season + h % self.season;
                out.push(w[step * self.features + self.target]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_forecasts_read_the_target_from_the_raw_window() {
        let manifest = crate::bundle::Bundle::load(std::path::Path::new("models/co2-gru/1")).unwrap().manifest;
        assert_eq!((manifest.window, manifest.horizon, manifest.features.len()), (16, 4, 3));
        // co2 at step t is 300 + t; the other features are noise that must not be read.
        let window: Vec<f32> = (0..16).flat_map(|t| [300.0 + t as f32, -7.0, 9.0]).collect();
        let two = [window.clone(), window.iter().map(|v| v + 1000.0).collect()].concat();
        let mut out = Vec::new();
        Naive::for_manifest(&manifest, FallbackKind::LastValue, 0).unwrap().predict(&two, 2, &mut out);
        assert_eq!(out, [315.0, 315.0, 315.0, 315.0, 1315.0, 1315.0, 1315.0, 1315.0]);
        // Season 3: steps 1..4 repeat y[13], y[14], y[15], y[13].
        let seasonal = Naive::for_manifest(&manifest, FallbackKind::SeasonalNaive, 3).unwrap();
        assert_eq!(seasonal.model_ref.version, "fallback-seasonal_naive-3");
        seasonal.predict(&window, 1, &mut out);
        assert_eq!(out, [313.0, 314.0, 315.0, 313.0]);
        let err = Naive::for_manifest(&manifest, FallbackKind::SeasonalNaive, 17).unwrap_err();
        assert_eq!(err.key, "season");
    }
}
