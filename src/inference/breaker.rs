//! The circuit breaker in front of the primary model, and the fallback that serves while it is
//! open.
//!
//! The breaker judges whole batches (one ONNX Runtime call each): a batch fails when inference
//! returns an error or takes longer than the budget. It opens when the failure rate over the last
//! `window` batches reaches `error_rate` (once at least `min_batches` were seen), stays open for
//! `open_for`, then lets batches through as half-open probes: `close_after` good probes in a row
//! close it, one bad probe opens it again. Measuring over a window of batches rather than
//! reacting to one failure is the hysteresis: a single bad batch is served by the fallback but
//! does not flip the whole worker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{InferenceError, Model};
use crate::bundle::Manifest;
use crate::config::{FallbackConfig, FallbackKind};
use crate::event::ModelRef;

/// The breaker's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { successes: usize },
}

/// A change worth telling operators about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: `fallback_active` starts firing.
    Opened { failures: usize, batches: usize },
    /// A half-open probe failed: open again (still firing).
    Reopened,
    /// Half-open → closed: `fallback_active` resolves.
    Closed,
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerOptions {
    pub error_rate: f64,
    pub window: usize,
    pub min_batches: usize,
    pub batch_budget: Option<Duration>,
    pub open_for: Duration,
    pub close_after: usize,
}

impl BreakerOptions {
    pub fn from_config(c: &FallbackConfig) -> BreakerOptions {
        BreakerOptions {
            error_rate: c.error_rate,
            window: c.window,
            min_batches: c.min_batches,
            batch_budget: (!c.batch_budget.is_zero()).then_some(c.batch_budget),
            open_for: c.open_for,
            close_after: c.close_after,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    options: BreakerOptions,
    state: BreakerState,
    /// Outcomes (true = failed) of the last `window` batches while closed.
    recent: VecDeque<bool>,
}

impl Breaker {
    pub fn new(options: BreakerOptions) -> Breaker {
        Breaker { options, state: BreakerState::Closed, recent: VecDeque::with_capacity(options.window) }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, BreakerState::Open { .. })
    }

    /// Back to closed with an empty window (a new primary was loaded).
    pub fn reset(&mut self) {
        self.state = BreakerState::Closed;
        self.recent.clear();
    }

    /// Whether the next batch goes to the primary; an expired open state becomes half-open here.
    pub fn allow_primary(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { successes: 0 };
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// Whether the primary's call for a batch, taking `took`, stayed within the budget.
    pub fn within_budget(&self, took: Duration) -> bool {
        self.options.batch_budget.is_none_or(|b| took <= b)
    }

    /// Records a batch the primary scored.
    pub fn record(&mut self, good: bool, now: Instant) -> Option<Transition> {
        match self.state {
            BreakerState::Closed => {
                if self.recent.len() == self.options.window {
                    self.recent.pop_front();
                }
                self.recent.push_back(!good);
                let failures = self.recent.iter().filter(|f| **f).count();
                let batches = self.recent.len();
                if batches >= self.options.min_batches && failures as f64 >= self.options.error_rate * batches as f64 {
                    self.state = BreakerState::Open { until: now + self.options.open_for };
                    self.recent.clear();
                    return Some(Transition::Opened { failures, batches });
                }
                None
            }
            BreakerState::HalfOpen { successes } if good => {
                if successes + 1 >= self.options.close_after {
                    self.state = BreakerState::Closed;
                    Some(Transition::Closed)
                } else {
                    self.state = BreakerState::HalfOpen { successes: successes + 1 };
                    None
                }
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open { until: now + self.options.open_for };
                Some(Transition::Reopened)
            }
            // Batches are not sent to the primary while open.
            BreakerState::Open { .. } => None,
        }
    }
}

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

    pub fn horizon(&self) -> usize {
        match self {
            FallbackModel::Bundle(m) => m.horizon(),
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

    fn options() -> BreakerOptions {
        BreakerOptions {
            error_rate: 0.5,
            window: 4,
            min_batches: 2,
            batch_budget: Some(Duration::from_millis(50)),
            open_for: Duration::from_secs(10),
            close_after: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_rate_half_opens_after_the_wait_and_closes_after_good_probes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(options());
        assert!(b.allow_primary(t0));
        // A failure as the very first batch is judged only once min_batches (2) were seen.
        let mut fresh = Breaker::new(options());
        assert_eq!(fresh.record(false, t0), None);
        assert_eq!(b.record(true, t0), None);
        assert_eq!(b.record(true, t0), None);
        // 1 failure of 3 is below 0.5; 2 of 4 reaches it.
        assert_eq!(b.record(false, t0), None);
        assert_eq!(b.record(false, t0), Some(Transition::Opened { failures: 2, batches: 4 }));
        assert!(!b.allow_primary(t0 + Duration::from_secs(9)));
        // Half-open after open_for; a failed probe reopens for another open_for.
        assert!(b.allow_primary(t0 + Duration::from_secs(10)));
        assert_eq!(b.state(), BreakerState::HalfOpen { successes: 0 });
        assert_eq!(b.record(false, t0 + Duration::from_secs(10)), Some(Transition::Reopened));
        assert!(!b.allow_primary(t0 + Duration::from_secs(19)));
        assert!(b.allow_primary(t0 + Duration::from_secs(20)));
        assert_eq!(b.record(true, t0 + Duration::from_secs(20)), None);
        assert_eq!(b.record(true, t0 + Duration::from_secs(20)), Some(Transition::Closed));
        // Closed with a fresh window: one failure in three does not reopen it.
        assert_eq!(b.record(true, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.record(true, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.record(false, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_batch_over_budget_counts_as_a_failure() {
        let b = Breaker::new(options());
        assert!(b.within_budget(Duration::from_millis(50)));
        assert!(!b.within_budget(Duration::from_millis(51)));
        let no_budget = Breaker::new(BreakerOptions { batch_budget: None, ..options() });
        assert!(no_budget.within_budget(Duration::from_secs(100)));
    }

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
