//! Calibrated prediction intervals, online: the conformal rule, adaptive conformal inference,
//! CQR's scores, empirical coverage, and how every worker replica learns the monitor's
//! calibration.
//!
//! The monitor leader joins forecasts to what was later observed, so it alone holds each horizon
//! step's recent errors. At every publish it turns them into a half width per step (split
//! conformal, ACI's moving level, or CQR's correction of a quantile band) and writes it in the
//! `model_metrics` snapshot of that model version × variant. Every worker replica follows that
//! topic ([`spawn_follower`]) and puts `point ± half width` (CQR: `[lo − w, hi + w]`) around its
//! forecasts, so all replicas serve the same interval whichever of them scored the event. Until a
//! step has enough errors, a prediction says that its interval is not calibrated and carries no
//! bounds: an interval is never invented.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;
use serde::Deserialize;

use crate::config::Config;
use crate::event::{ModelRef, Variant};
use crate::shutdown::Shutdown;

/// Snapshots read back per `model_metrics` partition at start-up: the newest calibration of the
/// served versions is among them unless far more than this many keys share a partition.
const TAIL_RECORDS: i64 = 1_000;
/// How long the follower's fetches wait for a snapshot: the calibration is at most this much
/// staler than the monitor's last publish, and an idle follower makes ten fetches a second.
const FETCH_WAIT_MS: u32 = 100;

/// The split-conformal quantile of `scores` at `level`: the ⌈(n + 1)·level⌉-th smallest.
///
/// When that rank exceeds n, the window cannot support the level: `None`, unless `saturate`
/// (ACI, whose level may go past any window), which then takes the largest score. A rank below 1
/// takes the smallest. `scores` is reordered; NaN never reaches it (errors are finite).
pub fn conformal_quantile(scores: &mut [f64], level: f64, saturate: bool) -> Option<f64> {
    let n = scores.len();
    if n == 0 {
        return None;
    }
    let rank = ((n as f64 + 1.0) * level).ceil();
    let k = if rank > n as f64 {
        if !saturate {
            return None;
        }
        n
    } else if rank < 1.0 {
        1
    } else {
        rank as usize
    };
    let (_, q, _) = scores.select_nth_unstable_by(k - 1, f64::total_cmp);
    Some(*q)
}

/// For CQR at `level`: the indices of the quantile levels (1 − level)/2 and (1 + level)/2 among a
/// quantile bundle's `levels`, when both are there.
pub fn cqr_band(levels: &[f64], level: f64) -> Option<(usize, usize)> {
    let find = |target: f64| levels.iter().position(|l| (l - target).abs() < 1e-9);
    Some((find((1.0 - level) / 2.0)?, find((1.0 + level) / 2.0)?))
}

/// CQR's conformity score of one step: how far the actual fell outside the band `[lo, hi]`
/// (negative when inside).
pub fn cqr_score(lo: f64, hi: f64, actual: f64) -> f64 {
    (lo - actual).max(actual - hi)
}

/// Adaptive conformal inference (Gibbs and Candès, 2021) for one horizon step:
/// αₜ₊₁ = αₜ + γ·(α − missₜ). A miss lowers α (a wider interval), a hit raises it slowly, and the
/// long-run miss rate is α whatever the errors do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aci {
    target: f64,
    gamma: f64,
    alpha: f64,
}

impl Aci {
    /// For the nominal `level` (α = 1 − level) and step size `gamma`.
    pub fn new(level: f64, gamma: f64) -> Aci {
        Aci { target: 1.0 - level, gamma, alpha: 1.0 - level }
    }

    /// After a judged interval.
    pub fn update(&mut self, covered: bool) {
        let miss = if covered { 0.0 } else { 1.0 };
        self.alpha += self.gamma * (self.target - miss);
    }

    /// The level the quantile is taken at now (above 1 after a run of misses: the largest error).
    pub fn level(&self) -> f64 {
        1.0 - self.alpha
    }
}

/// Whether the most recent `capacity` judged intervals of a step covered their actual.
#[derive(Debug, Clone)]
pub struct Coverage {
    capacity: usize,
    hits: std::collections::VecDeque<bool>,
    covered: usize,
}

impl Coverage {
    pub fn new(capacity: usize) -> Coverage {
        Coverage { capacity, hits: std::collections::VecDeque::with_capacity(capacity.min(4096)), covered: 0 }
    }

    pub fn push(&mut self, covered: bool) {
        if self.hits.len() == self.capacity {
            if let Some(true) = self.hits.pop_front() {
                self.covered -= 1;
            }
        }
        self.hits.push_back(covered);
        self.covered += usize::from(covered);
    }

    /// Judged intervals in the window.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// The share that covered; `None` before any.
    pub fn rate(&self) -> Option<f64> {
        (!self.hits.is_empty()).then(|| self.covered as f64 / self.hits.len() as f64)
    }
}

/// One model version × variant's calibration: a half width per step (`None`: not calibrated).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub model: ModelRef,
    pub variant: Variant,
    pub half_widths: Vec<Option<f64>>,
}

impl Calibration {
    /// Writes `[lo − half width, hi + half width]` per step into `lower` and `upper` (cleared
    /// first), `band` giving each step's `(lo, hi)`: the point twice (split, ACI) or the quantile
    /// band (CQR). In f32 like the forecast itself (a relative rounding of 6e-8, and half the
    /// bytes on the wire of an f64). `false`, with both empty, unless every step is calibrated:
    /// a partial interval would be read as a whole one.
    pub fn bounds(&self, band: &[(f32, f32)], lower: &mut Vec<f32>, upper: &mut Vec<f32>) -> bool {
        lower.clear();
        upper.clear();
        if self.half_widths.len() < band.len() {
            return false;
        }
        for ((lo, hi), w) in band.iter().zip(&self.half_widths) {
            let Some(w) = w else {
                lower.clear();
                upper.clear();
                return false;
            };
            // A CQR correction may be negative, but never past the band's middle.
            let w = w.max(-f64::from(hi - lo) / 2.0);
            lower.push((f64::from(*lo) - w) as f32);
            upper.push((f64::from(*hi) + w) as f32);
        }
        true
    }
}

/// The calibrations a worker knows, swapped whole by the follower and read once per batch.
#[derive(Debug, Clone, Default)]
pub struct CalibrationTable {
    entries: Vec<Arc<Calibration>>,
}

impl CalibrationTable {
    /// The calibration of `model` × `variant`, if one was published.
    pub fn get(&self, model: &ModelRef, variant: Variant) -> Option<&Calibration> {
        self.entries.iter().map(|c| &**c).find(|c| c.variant == variant && c.model == *model)
    }

    fn with(&self, calibration: Calibration) -> CalibrationTable {
        let mut entries: Vec<Arc<Calibration>> = self
            .entries
            .iter()
            .filter(|c| !(c.variant == calibration.variant && c.model == calibration.model))
            .cloned()
            .collect();
        entries.push(Arc::new(calibration));
        // Bounded: the monitor tracks at most 64 keys; the oldest-updated go first.
        if entries.len() > 64 {
            entries.remove(0);
        }
        CalibrationTable { entries }
    }
}

/// The worker's view of the calibrations, shared between the follower and the inference thread.
#[derive(Debug, Clone, Default)]
pub struct SharedCalibration(Arc<Mutex<Arc<CalibrationTable>>>);

impl SharedCalibration {
    /// The current table; cheap (one lock and one reference count), taken once per batch.
    pub fn current(&self) -> Arc<CalibrationTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the calibration of one key.
    pub fn set(&self, calibration: Calibration) {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let next = table.with(calibration);
        *table = Arc::new(next);
    }
}

/// The part of a `model_metrics` snapshot the follower reads.
#[derive(Deserialize)]
struct SnapshotCalibration {
    model: ModelRef,
    variant: Variant,
    #[serde(default)]
    interval: Option<SnapshotInterval>,
    #[serde(default)]
    per_step: Vec<SnapshotStep>,
}

#[derive(Deserialize)]
struct SnapshotInterval {
    level: f64,
}

#[derive(Deserialize)]
struct SnapshotStep {
    #[serde(default)]
    interval: Option<SnapshotStepInterval>,
}

#[derive(Deserialize)]
struct SnapshotStepInterval {
    half_width: Option<f64>,
}

/// The calibration in a `model_metrics` record, if it has one at `level`. A snapshot at another
/// level (a monitor configured differently) is not this worker's interval.
pub fn parse_snapshot(payload: &[u8], level: f64) -> Option<Calibration> {
    let s: SnapshotCalibration = serde_json::from_slice(payload).ok()?;
    if s.interval.as_ref()?.level != level {
        return None;
    }
    let half_widths = s
        .per_step
        .iter()
        .map(|step| step.interval.as_ref().and_then(|i| i.half_width).filter(|w| w.is_finite()))
        .collect();
    Some(Calibration { model: s.model, variant: s.variant, half_widths })
}

/// Follows `model_metrics` from a little before its end and keeps `shared` current.
pub fn spawn_follower(
    config: &Config,
    shared: SharedCalibration,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, KafkaError> {
    // Assigned, never subscribed: every replica reads every partition, and nothing is committed.
    let mut cc = crate::kafka::reader_config(config, "calibration");
    // A snapshot every few seconds needs no fast fetch loop: with a short `fetch.wait.max.ms`
    // (tuned for the data path) this idle reader alone would cost a measurable share of a core.
    cc.set("fetch.wait.max.ms", FETCH_WAIT_MS.to_string());
    let consumer: BaseConsumer = cc.create()?;
    crate::kafka::assign_all(&consumer, &config.topics.metrics, Offset::OffsetTail(TAIL_RECORDS))?;
    let level = config.intervals.level;
    Ok(std::thread::Builder::new()
        .name("streamcast-calibration".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(msg)) => {
                        if let Some(c) = parse_snapshot(msg.payload().unwrap_or_default(), level) {
                            shared.set(c);
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "Calibration follower: model_metrics consumer error."),
                    None => {}
                }
            }
        })
        .expect("spawning a thread only fails when the OS is out of resources"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conformal_rank_is_ceil_of_n_plus_one_times_the_level() {
        let mut s: Vec<f64> = (1..=19).map(f64::from).rev().collect();
        // ⌈20 · 0.9⌉ = 18.
        assert_eq!(conformal_quantile(&mut s, 0.9, false), Some(18.0));
        // n = 8: ⌈9 · 0.9⌉ = 9 > 8, no interval; ACI saturates at the largest.
        let mut few: Vec<f64> = (1..=8).map(f64::from).collect();
        assert_eq!(conformal_quantile(&mut few, 0.9, false), None);
        assert_eq!(conformal_quantile(&mut few, 0.9, true), Some(8.0));
        assert_eq!(conformal_quantile(&mut few, 1.7, true), Some(8.0));
        assert_eq!(conformal_quantile(&mut few, -0.2, true), Some(1.0));
        assert_eq!(conformal_quantile(&mut [], 0.9, true), None);
    }

    #[test]
    fn aci_widens_after_misses_and_settles_back() {
        let mut aci = Aci::new(0.9, 0.05);
        assert!((aci.level() - 0.9).abs() < 1e-12);
        for _ in 0..3 {
            aci.update(false);
        }
        // Each miss moves α by γ·(0.1 − 1) = −0.045.
        assert!((aci.level() - (0.9 + 3.0 * 0.045)).abs() < 1e-12, "{}", aci.level());
        aci.update(true);
        assert!((aci.level() - (0.9 + 3.0 * 0.045 - 0.005)).abs() < 1e-12);
    }

    #[test]
    fn coverage_is_over_the_most_recent_window() {
        let mut c = Coverage::new(4);
        assert_eq!(c.rate(), None);
        for hit in [false, true, true, true, true] {
            c.push(hit);
        }
        assert_eq!((c.len(), c.rate()), (4, Some(1.0)));
        c.push(false);
        assert_eq!(c.rate(), Some(0.75));
    }

    #[test]
    fn bounds_need_every_step_calibrated() {
        let model = ModelRef { name: "m".into(), version: "1".into() };
        let c = Calibration { model, variant: Variant::Primary, half_widths: vec![Some(1.0), Some(2.5)] };
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        assert!(c.bounds(&[(10.0, 10.0), (20.0, 20.0)], &mut lo, &mut hi));
        assert_eq!((lo.as_slice(), hi.as_slice()), (&[9.0, 17.5][..], &[11.0, 22.5][..]));
        let partial = Calibration { half_widths: vec![Some(1.0), None], ..c.clone() };
        assert!(!partial.bounds(&[(10.0, 10.0), (20.0, 20.0)], &mut lo, &mut hi));
        assert!(lo.is_empty() && hi.is_empty());
        assert!(!c.bounds(&[(1.0, 1.0); 3], &mut lo, &mut hi), "a longer forecast than calibrated");
        // CQR: around a band, and a negative correction stops at the band's middle.
        let cqr = Calibration { half_widths: vec![Some(-0.5), Some(-3.0)], ..c.clone() };
        assert!(cqr.bounds(&[(9.0, 11.0), (18.0, 22.0)], &mut lo, &mut hi));
        assert_eq!((lo.as_slice(), hi.as_slice()), (&[9.5, 20.0][..], &[10.5, 20.0][..]));
        assert_eq!(cqr_band(&[0.05, 0.5, 0.95], 0.9), Some((0, 2)));
        assert_eq!(cqr_band(&[0.1, 0.5, 0.9], 0.9), None);
        assert_eq!(cqr_score(9.0, 11.0, 12.5), 1.5);
        assert_eq!(cqr_score(9.0, 11.0, 10.0), -1.0);
    }

    #[test]
    fn snapshots_parse_at_the_configured_level_only() {
        let body =
            br#"{"model":{"name":"m","version":"2"},"variant":"candidate","interval":{"level":0.9,"method":"split"},
            "per_step":[{"step":1,"interval":{"half_width":0.5}},{"step":2,"interval":{"half_width":null}}]}"#;
        let c = parse_snapshot(body, 0.9).unwrap();
        assert_eq!((c.model.version.as_str(), c.variant), ("2", Variant::Candidate));
        assert_eq!(c.half_widths, vec![Some(0.5), None]);
        assert!(parse_snapshot(body, 0.8).is_none());
        assert!(parse_snapshot(br#"{"model":{"name":"m","version":"2"},"variant":"primary"}"#, 0.9).is_none());
        let table = CalibrationTable::default().with(c.clone());
        let model = ModelRef { name: "m".into(), version: "2".into() };
        assert_eq!(table.get(&model, Variant::Candidate), Some(&c));
        assert!(table.get(&model, Variant::Primary).is_none());
    }
}
