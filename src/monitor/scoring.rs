//! Scoring: joins predictions (primary, candidate and shadow) to their actuals, keeps a rolling
//! error per model version × variant (a "key"), gates each key's RMSE alert and performance
//! retraining request, and applies the rollback/promotion rule to the configured candidate.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::join::{JoinBuffer, Offer, Side, Source, WaitingPrediction};
use super::rolling::{ErrorStats, RollingError};
use super::snapshot::StepInterval;
use crate::alert::{
    Alert, AlertState, DecisionSource, Details, Gate, RetrainDetails, RetrainEvidence, RetrainReason, RmseDetails,
    Transition, VariantScore,
};
use crate::alert::{CoverageDetails, StepCoverage};
use crate::config::{IntervalMethod, IntervalsConfig, MonitorConfig, VariantsConfig};
use crate::event::{Actual, ModelRef, Prediction, Variant};
use crate::interval::{conformal_quantile, Aci, Coverage};

/// At most this many model version × variant keys are tracked at once; a key idle for the
/// rolling window and the join TTL frees its slot for a new one.
const MAX_KEYS: usize = 64;
/// Series whose recent observations are kept for MASE's naive forecast (least recently observed
/// dropped). With [`HISTORY_SLACK`] this bounds the history at about 42 MiB.
const MAX_HISTORY_SERIES: usize = 10_000;
/// Observations kept per series beyond the naive lags (see `TimeJoin::history_len`): a leader
/// reading a backlog may meet a series' actuals this far ahead of its forecasts.
const HISTORY_SLACK: usize = 256;

/// Errors beyond this magnitude are refused as overflow: their square (≤ 1e300) and any sum of
/// up to 1e8 of them stay finite, so the rolling sums can neither overflow nor turn NaN.
pub const MAX_ABS_ERROR: f64 = 1e150;

/// Why the monitor refused a record rather than score it
/// (`streamcast_monitor_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// An actuals record that is not a valid actual message.
    UnparsableActual,
    /// A predictions record that is not a valid prediction message.
    UnparsablePrediction,
    /// `"actual": []`.
    Empty,
    /// NaN or ±∞ in the actual.
    NonFinite,
    /// The actual's length differs from its prediction's horizon.
    WrongLength,
    /// An error beyond [`MAX_ABS_ERROR`].
    Overflow,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnparsableActual => "unparsable_actual",
            Rejection::UnparsablePrediction => "unparsable_prediction",
            Rejection::Empty => "empty",
            Rejection::NonFinite => "non_finite",
            Rejection::WrongLength => "wrong_length",
            Rejection::Overflow => "overflow",
        }
    }
}

/// One model version × variant being scored.
struct Scored {
    model: ModelRef,
    variant: Variant,
    rolling: RollingError,
    /// One window per horizon step, over the same count and duration: step 1 and step H are
    /// different facts (a forecast is usually worse the further ahead it looks).
    by_step: Vec<RollingError>,
    /// Per step, the model's errors and the seasonal-naive forecast's on the same targets
    /// (joined by time, where the naive forecast's observation was seen): MASE is their MAE ratio.
    mase: Vec<(RollingError, RollingError)>,
    /// Per step, whether the intervals served were hit (`intervals.coverage_window` of them).
    coverage: Vec<Coverage>,
    /// Per step, ACI's level (`intervals.method = "aci"`).
    aci: Vec<Aci>,
    coverage_gate: Gate,
    /// A quantile bundle's levels (from its first prediction) and, per level, the rolling mean
    /// pinball loss (kept as the window's "bias": the mean of the losses pushed).
    levels: Vec<f64>,
    pinball: Vec<RollingError>,
    /// Per step, CQR's conformity scores (`intervals.method = "cqr"`): how far each actual fell
    /// outside the served quantile band, over the same window as the errors.
    cqr: Vec<RollingError>,
    /// Under CQR, the indices of the band's levels among `levels` (set with them).
    cqr_band: Option<(usize, usize)>,
    rmse_gate: Gate,
    above_since: Option<Instant>,
    retrain_requested: bool,
    /// When a prediction of this key was last offered.
    last_seen: Instant,
    /// The records of the pairs whose errors are in `rolling`, oldest first, so the commit
    /// watermark can hold at them: a new leader rebuilds the window by re-reading them.
    window_pairs: VecDeque<WindowPair>,
    /// Errors the pairs in `window_pairs` contributed (some of the oldest may have left).
    window_entries: usize,
}

/// One joined pair in a rolling window: how many errors it added and where its records are.
struct WindowPair {
    entries: usize,
    prediction: Source,
    actual: Source,
}

impl Scored {
    /// Forgets the pairs whose errors have all left the rolling window.
    fn trim_pairs(&mut self) {
        let live = self.rolling.len();
        while let Some(front) = self.window_pairs.front() {
            if self.window_entries - front.entries < live {
                break;
            }
            self.window_entries -= front.entries;
            self.window_pairs.pop_front();
        }
    }
}

/// One key's numbers at a publish.
pub struct KeyReport<'a> {
    pub model: &'a ModelRef,
    pub variant: Variant,
    pub stats: ErrorStats,
    /// The same errors split by horizon step (index 0 is step 1); empty before any join.
    pub steps: Vec<ErrorStats>,
    /// Per step, MASE against the seasonal-naive forecast (joined by time only).
    pub mase: Vec<Option<f64>>,
    /// Per step, the calibrated interval and its coverage (`intervals.enabled`).
    pub intervals: Vec<StepInterval>,
    /// A quantile bundle's pinball loss per level: `(level, losses in the window, mean)`.
    pub pinball: Vec<(f64, usize, Option<f64>)>,
    /// Predictions waiting for their actual.
    pub pending: u64,
    /// Predictions whose actual never came (cumulative).
    pub expired: u64,
}

/// The joins and the per-key rolling error, owned by the monitor thread.
pub struct Scoring {
    cfg: MonitorConfig,
    /// The served model: the primary that a candidate is compared with.
    model: ModelRef,
    /// The RMSE alert threshold; without one no RMSE alert or performance retraining is raised.
    threshold: Option<f64>,
    join: JoinBuffer,
    shadow_join: Option<JoinBuffer>,
    /// Indexed by the key a waiting prediction carries.
    keys: Vec<Scored>,
    expired_by_key: HashMap<u16, u64>,
    /// The rollback/promotion rule and the configured candidate.
    variants: VariantsConfig,
    /// A decision about the configured candidate was published (once per run: workers apply
    /// each decision once, and a rolled-back candidate's window stops moving).
    decided: bool,
    /// `streamcast_monitor_rejected_total{reason}`.
    rejected: prometheus::IntCounterVec,
    /// Keys whose slot was given to another since the last publish: their gauges go.
    freed: Vec<(ModelRef, Variant)>,
    /// `streamcast_monitor_{errors,squared_error,absolute_error}_total`.
    counters: super::metrics::ErrorCounters,
    /// RMSE gate states read back from the alerts topic, for keys not created yet.
    resumed: HashMap<(ModelRef, Variant), ResumedGate>,
    /// `monitor.join_by = "time"`: the series' step and the served horizon.
    time: Option<TimeJoin>,
    /// Joined by time: each series' recent observed values `(time, value)`, oldest first, for
    /// the seasonal-naive forecast that MASE compares with.
    history: LruCache<String, VecDeque<(i64, f64)>>,
    /// Joined by time: each series' grid phase (see [`snap`]).
    phases: LruCache<String, i64>,
    /// Calibrated intervals, when on.
    intervals: Option<IntervalsConfig>,
}

/// Joining by time: step h of a forecast issued at t waits under (series, t + h·step, h), and an
/// actual observed at T is offered under (series, T, h) for every h. Each (step, actual) pair
/// is then one entry of the ordinary join, with its TTL, memory cap, duplicate handling and
/// commit watermark.
#[derive(Debug, Clone, Copy)]
struct TimeJoin {
    step_ms: i64,
    horizon: usize,
    /// The seasonal-naive forecast's season, in steps (`monitor.mase_season`; 1: the last value).
    season: usize,
}

impl TimeJoin {
    /// How far back the seasonal-naive forecast of step `h` (1-based) looks from its target:
    /// `season · ceil(h / season)` steps, so it only uses what was observed at issue time.
    fn naive_lag_ms(&self, h: usize) -> i64 {
        let m = self.season.max(1);
        (m * h.div_ceil(m)) as i64 * self.step_ms
    }

    /// Observations a series keeps: every step's naive lag, plus slack for actuals that arrive
    /// ahead of the forecasts they judge (a backlog read faster on one topic than the other).
    /// A naive observation no longer held leaves its pair out of MASE.
    fn history_len(&self) -> usize {
        let m = self.season.max(1);
        m * self.horizon.div_ceil(m) + 1 + HISTORY_SLACK
    }
}

/// `t_ms` on its series' grid of `step_ms` steps: the nearest grid time. The worker places an
/// observation up to its bundle's `frequency_tolerance` (half a step by default) off the grid,
/// and its predictions repeat that timestamp, so without this a forecast issued at 10:00:03
/// would never meet the actual stamped 11:00:01.
///
/// The grid's phase is the first forecast's timestamp the monitor sees of the series (`anchor`):
/// the worker accepted it, so it lies on the worker's grid within the tolerance. An actual
/// anchors nothing, since anyone may produce one, and before any forecast of its series it is
/// taken as stamped. A grid fixed to the epoch would be wrong for series stamped at, say, noon
/// each day, where a second of jitter moves a timestamp across the rounding boundary.
fn snap(phases: &mut LruCache<String, i64>, step_ms: i64, series: &str, t_ms: i64, anchor: bool) -> i64 {
    let phase = match phases.get(series) {
        Some(&phase) => phase,
        None if anchor => {
            phases.put(series.to_string(), t_ms.rem_euclid(step_ms));
            return t_ms;
        }
        None => return t_ms,
    };
    let steps = (t_ms - phase).saturating_add(step_ms / 2).div_euclid(step_ms);
    phase.saturating_add(steps.saturating_mul(step_ms))
}

/// The join id of step `h` (1-based) targeting `target_ms` of `series`. The unit separator
/// cannot appear in a JSON-decoded series id without an escape, and an escaped one would still
/// only collide with itself.
fn time_id(series: &str, target_ms: i64, h: usize) -> String {
    format!("{series}\u{1f}{target_ms}\u{1f}{h}")
}

fn millis(timestamp: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(timestamp).ok().map(|t| t.timestamp_millis())
}

/// An RMSE gate as the published alerts left it.
#[derive(Debug, Clone, Copy, Default)]
struct ResumedGate {
    active: bool,
    last_fired: Option<Instant>,
    retrain_requested: bool,
}

impl Scoring {
    /// `shadow`: a shadow variant is configured, so its predictions get a join of their own.
    pub fn new(
        cfg: &MonitorConfig,
        model: ModelRef,
        threshold: Option<f64>,
        shadow: bool,
        variants: VariantsConfig,
    ) -> Scoring {
        let mut scoring = Scoring {
            cfg: cfg.clone(),
            model: model.clone(),
            threshold,
            join: JoinBuffer::new(cfg.max_pending, cfg.join_ttl).with_max_bytes(cfg.max_pending_bytes),
            // Shadow predictions share ids with the primary's, so they wait in a join of their own;
            // each actual is offered to both.
            shadow_join: shadow
                .then(|| JoinBuffer::new(cfg.max_pending, cfg.join_ttl).with_max_bytes(cfg.max_pending_bytes)),
            keys: Vec::new(),
            expired_by_key: HashMap::new(),
            variants,
            decided: false,
            rejected: prometheus::IntCounterVec::new(
                prometheus::Opts::new("streamcast_monitor_rejected_total", "unregistered"),
                &["reason"],
            )
            .expect("valid metric"),
            freed: Vec::new(),
            counters: super::metrics::ErrorCounters::unregistered(),
            resumed: HashMap::new(),
            time: None,
            history: LruCache::new(NonZeroUsize::new(MAX_HISTORY_SERIES).expect("non-zero")),
            phases: LruCache::new(NonZeroUsize::new(MAX_HISTORY_SERIES).expect("non-zero")),
            intervals: None,
        };
        // The served model's primary variant always has a snapshot, so drift is published even
        // before any prediction has been read.
        scoring.key_of(&model, Variant::Primary, Instant::now());
        scoring
    }

    /// A new primary is served (hot reload or promotion): compare candidates with it, alert on
    /// `threshold`, and decide afresh about the configured candidate.
    pub fn follow(&mut self, model: ModelRef, threshold: Option<f64>) {
        self.model = model;
        self.threshold = threshold;
        self.decided = false;
    }

    /// Resumes every RMSE gate, and whether it already requested retraining, from the alerts an
    /// earlier leader published (`history`, in order): a still-high RMSE is not raised again.
    pub fn resume(&mut self, history: &[Alert], now: Instant) {
        for a in history {
            // A decision about the configured candidate is in the log (an earlier leader's, or an
            // operator's): this leader does not decide about it again. Its windows are rebuilt
            // from records the decision already judged, and a second decision would undo an
            // operator's later one.
            if let Details::ModelRollback(_) | Details::ModelPromoted(_) = &a.details {
                let configured = self.variants.candidate.as_ref().map(|c| c.version.as_str());
                if a.model.name == self.model.name && configured == Some(a.model.version.as_str()) {
                    self.decided = true;
                }
                continue;
            }
            let Some(variant) = a.variant else { continue };
            let state = self.resumed.entry((a.model.clone(), variant)).or_default();
            match &a.details {
                Details::RmseAboveThreshold(d) if d.state == AlertState::Firing => {
                    *state = ResumedGate { active: true, last_fired: a.instant(now), retrain_requested: false };
                }
                Details::RmseAboveThreshold(_) => {
                    state.active = false;
                    state.retrain_requested = false;
                }
                Details::RetrainRequested(r) if r.reason == RetrainReason::Performance => {
                    state.retrain_requested = true
                }
                _ => {}
            }
        }
        let cooldown = self.cfg.alert_cooldown;
        for k in &mut self.keys {
            if let Some(r) = self.resumed.remove(&(k.model.clone(), k.variant)) {
                k.resume(r, cooldown);
            }
        }
    }

    /// Counts scored errors in these (registered) counters.
    pub fn with_error_counters(mut self, counters: super::metrics::ErrorCounters) -> Scoring {
        self.counters = counters;
        self
    }

    /// Joins actuals by time instead of id: `step` is the bundle's `frequency`, `horizon` the
    /// steps of its forecasts.
    pub fn with_time_join(mut self, step: Duration, horizon: usize) -> Scoring {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        self.time = Some(TimeJoin { step_ms, horizon: horizon.max(1), season: self.cfg.mase_season });
        self
    }

    /// Calibrates intervals from each step's errors and judges the intervals served.
    pub fn with_intervals(mut self, cfg: &IntervalsConfig) -> Scoring {
        self.intervals = cfg.enabled.then(|| cfg.clone());
        self
    }

    pub fn with_rejected_counter(mut self, rejected: prometheus::IntCounterVec) -> Scoring {
        self.rejected = rejected;
        self
    }

    /// Counts a refused record.
    pub fn reject(&self, rejection: Rejection) {
        self.rejected.with_label_values(&[rejection.as_str()]).inc();
    }

    /// How many records were refused for `rejection`.
    pub fn rejected(&self, rejection: Rejection) -> u64 {
        self.rejected.with_label_values(&[rejection.as_str()]).get()
    }

    /// Keys whose slots were reused since the last call.
    pub fn take_freed(&mut self) -> Vec<(ModelRef, Variant)> {
        std::mem::take(&mut self.freed)
    }

    fn key_of(&mut self, model: &ModelRef, variant: Variant, now: Instant) -> Option<u16> {
        if let Some(i) = self.keys.iter().position(|k| k.model == *model && k.variant == variant) {
            self.keys[i].last_seen = now;
            return Some(i as u16);
        }
        // At the cap, reuse a slot that nothing refers to any more: idle past the join TTL (no
        // prediction of it still waits) and the rolling window (its errors have aged out). The
        // served model's primary keeps its slot. (Plus two seconds: expiry runs once a second,
        // after the TTL has passed.)
        let slot = if self.keys.len() < MAX_KEYS {
            None
        } else {
            let idle = self.cfg.join_ttl.max(self.cfg.window_duration) + Duration::from_secs(2);
            let served = &self.model;
            Some(self.keys.iter().position(|k| {
                now.saturating_duration_since(k.last_seen) > idle
                    && k.rolling.is_empty()
                    && !(k.variant == Variant::Primary && k.model == *served)
            })?)
        };
        let mut scored = Scored {
            model: model.clone(),
            variant,
            rolling: RollingError::new(self.cfg.window_count, self.cfg.window_duration),
            by_step: Vec::new(),
            mase: Vec::new(),
            coverage: Vec::new(),
            aci: Vec::new(),
            coverage_gate: Gate::new(self.cfg.alert_cooldown),
            levels: Vec::new(),
            pinball: Vec::new(),
            cqr: Vec::new(),
            cqr_band: None,
            rmse_gate: Gate::new(self.cfg.alert_cooldown),
            above_since: None,
            retrain_requested: false,
            last_seen: now,
            window_pairs: VecDeque::new(),
            window_entries: 0,
        };
        if let Some(r) = self.resumed.remove(&(model.clone(), variant)) {
            scored.resume(r, self.cfg.alert_cooldown);
        }
        let Some(free) = slot else {
            self.keys.push(scored);
            return Some((self.keys.len() - 1) as u16);
        };
        let old = std::mem::replace(&mut self.keys[free], scored);
        self.expired_by_key.remove(&(free as u16));
        self.freed.push((old.model, old.variant));
        Some(free as u16)
    }

    /// Offers a prediction from the predictions topic (primary or candidate).
    pub fn offer_prediction(&mut self, p: Prediction, src: Source, now: Instant) {
        let Some(key) = self.key_of(&p.model, p.variant, now) else { return };
        self.offer_to(false, key, p, src, now);
    }

    /// Offers a prediction from the shadow topic.
    pub fn offer_shadow_prediction(&mut self, p: Prediction, src: Source, now: Instant) {
        let Some(key) = self.key_of(&p.model, Variant::Shadow, now) else { return };
        if self.shadow_join.is_some() {
            self.offer_to(true, key, p, src, now);
        }
    }

    /// Offers a forecast to the main or the shadow join: whole, by id, or step by step, by time.
    fn offer_to(&mut self, shadow: bool, key: u16, p: Prediction, src: Source, now: Instant) {
        let time = self.time;
        let quantiles = served_quantiles(&p);
        if let Some(q) = &p.quantiles {
            let scored = &mut self.keys[key as usize];
            if scored.levels.is_empty() && !quantiles.is_empty() {
                scored.levels = q.levels.clone();
                let window = || RollingError::new(self.cfg.window_count, self.cfg.window_duration);
                scored.pinball = q.levels.iter().map(|_| window()).collect();
                scored.cqr_band = self
                    .intervals
                    .as_ref()
                    .filter(|c| c.method == IntervalMethod::Cqr)
                    .and_then(|c| crate::interval::cqr_band(&q.levels, c.level));
            }
        }
        let mut offers = Vec::new();
        {
            let join = if shadow { self.shadow_join.as_mut().expect("checked by the caller") } else { &mut self.join };
            match time {
                None => {
                    let bounds = served_bounds(&p);
                    let waiting = WaitingPrediction { key, values: p.prediction, first_step: 0, bounds, quantiles };
                    offers.push((join.offer_prediction(&p.id, waiting, src, now), None));
                }
                Some(t) => {
                    let Some(issued) = millis(&p.timestamp) else {
                        return self.reject(Rejection::UnparsablePrediction);
                    };
                    let issued = snap(&mut self.phases, t.step_ms, &p.series_id, issued, true);
                    let bounds = served_bounds(&p);
                    for (i, value) in p.prediction.iter().enumerate() {
                        let target = issued.saturating_add(t.step_ms.saturating_mul(i as i64 + 1));
                        let bounds = bounds.get(i).map(|b| vec![*b]).unwrap_or_default();
                        let q = p.quantiles.as_ref().map_or(0, |q| q.levels.len());
                        let quantiles = quantiles.get(i * q..(i + 1) * q).map(<[f64]>::to_vec).unwrap_or_default();
                        let waiting = WaitingPrediction { key, values: vec![*value], first_step: i, bounds, quantiles };
                        let offer = join.offer_prediction(&time_id(&p.series_id, target, i + 1), waiting, src, now);
                        offers.push((offer, Some((target, i + 1))));
                    }
                }
            }
        }
        for (offer, at) in offers {
            let reference = at.and_then(|(target, h)| self.naive(&p.series_id, target, h));
            self.score(offer, reference);
        }
    }

    /// Joined by time: the seasonal-naive forecast of step `h` targeting `target_ms`, if that
    /// observation of the series was seen.
    fn naive(&self, series: &str, target_ms: i64, h: usize) -> Option<f64> {
        let t = self.time?;
        let at = target_ms.checked_sub(t.naive_lag_ms(h))?;
        self.history.peek(series)?.iter().rev().find(|(time, _)| *time == at).map(|(_, v)| *v)
    }

    /// Offers an actual to both joins; an empty one or one with a non-finite value is refused
    /// and counted (a bad actual never pairs with its prediction, which then expires).
    pub fn offer_actual(&mut self, a: Actual, src: Source, now: Instant) {
        if a.actual.is_empty() {
            return self.reject(Rejection::Empty);
        }
        if a.actual.iter().any(|v| !v.is_finite()) {
            return self.reject(Rejection::NonFinite);
        }
        let ids: Vec<(String, Option<f64>)> = match self.time {
            // Joined by id, an actual without one cannot meet its forecast.
            None if a.id.is_empty() => return self.reject(Rejection::UnparsableActual),
            None => vec![(a.id, None)],
            Some(t) => {
                // One observed value at one time; any other length is not an observation.
                if a.actual.len() != 1 {
                    return self.reject(Rejection::WrongLength);
                }
                let Some(at) = millis(&a.timestamp) else { return self.reject(Rejection::UnparsableActual) };
                let at = snap(&mut self.phases, t.step_ms, &a.series_id, at, false);
                let ids =
                    (1..=t.horizon).map(|h| (time_id(&a.series_id, at, h), self.naive(&a.series_id, at, h))).collect();
                let held = self.history.get_or_insert_mut(a.series_id.clone(), VecDeque::new);
                held.push_back((at, a.actual[0]));
                if held.len() > t.history_len() {
                    held.pop_front();
                }
                ids
            }
        };
        for (id, reference) in &ids {
            if let Some(j) = self.shadow_join.as_mut() {
                let offer = j.offer_actual(id, a.actual.clone(), src, now);
                self.score(offer, *reference);
            }
            let offer = self.join.offer_actual(id, a.actual.clone(), src, now);
            self.score(offer, *reference);
        }
    }

    /// Scores a join; `reference` is the seasonal-naive forecast of a time-joined step, when
    /// known, for MASE.
    fn score(&mut self, offer: Offer, reference: Option<f64>) {
        let Offer::Joined { prediction, actual, sources: [prediction_source, actual_source] } = offer else { return };
        // One value per horizon step: anything else is not this forecast's actual.
        if prediction.values.len() != actual.len() {
            return self.reject(Rejection::WrongLength);
        }
        let errors = prediction.values.iter().zip(&actual).map(|(p, a)| p - a);
        // Written so that a NaN error is refused too (every comparison with NaN is false).
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let out_of_range = |e: f64| !(e.abs() <= MAX_ABS_ERROR);
        if errors.clone().any(out_of_range) {
            return self.reject(Rejection::Overflow);
        }
        let scored = &mut self.keys[prediction.key as usize];
        // The time window runs on the monitor's clock (join time), not event time: actuals
        // arrive arbitrarily late, and the window is about recent model behaviour.
        let at = chrono::Utc::now().timestamp_millis();
        let errors: Vec<f64> = errors.collect();
        self.counters.add(&scored.model, scored.variant, &errors);
        let entries = errors.iter().filter(|e| scored.rolling.push(at, **e)).count();
        let first = prediction.first_step;
        while scored.by_step.len() < first + errors.len() {
            scored.by_step.push(RollingError::new(self.cfg.window_count, self.cfg.window_duration));
        }
        for (window, e) in scored.by_step[first..].iter_mut().zip(&errors) {
            window.push(at, *e);
        }
        // MASE pairs the model's error with the seasonal-naive forecast's on the same target.
        if let (Some(naive), [error]) = (reference, errors.as_slice()) {
            while scored.mase.len() <= first {
                let window = || RollingError::new(self.cfg.window_count, self.cfg.window_duration);
                scored.mase.push((window(), window()));
            }
            let (model, baseline) = &mut scored.mase[first];
            model.push(at, *error);
            baseline.push(at, naive - actual[0]);
        }
        // Pinball loss of each quantile level against the actual.
        let q = scored.levels.len();
        if q > 0 && prediction.quantiles.len() == q * actual.len() {
            for (values, a) in prediction.quantiles.chunks_exact(q).zip(&actual) {
                for ((window, tau), value) in scored.pinball.iter_mut().zip(&scored.levels).zip(values) {
                    let d = a - value;
                    window.push(at, if d >= 0.0 { tau * d } else { (tau - 1.0) * d });
                }
            }
        }
        // CQR's conformity scores, when the interval is built around the quantile band.
        if let Some((lo, hi)) = scored.cqr_band.filter(|_| prediction.quantiles.len() == q * actual.len()) {
            for (i, (values, a)) in prediction.quantiles.chunks_exact(q).zip(&actual).enumerate() {
                while scored.cqr.len() <= first + i {
                    scored.cqr.push(RollingError::new(self.cfg.window_count, self.cfg.window_duration));
                }
                scored.cqr[first + i].push(at, crate::interval::cqr_score(values[lo], values[hi], *a));
            }
        }
        // Coverage of the interval the forecast was served with, and ACI's reaction to it.
        if let Some(cfg) = &self.intervals {
            for (i, ((lower, upper), a)) in prediction.bounds.iter().zip(&actual).enumerate() {
                let step = first + i;
                while scored.coverage.len() <= step {
                    scored.coverage.push(Coverage::new(cfg.coverage_window));
                    scored.aci.push(Aci::new(cfg.level, cfg.aci_gamma));
                }
                let covered = *lower <= *a && *a <= *upper;
                scored.coverage[step].push(covered);
                scored.aci[step].update(covered);
            }
        }
        scored.window_entries += entries;
        scored.window_pairs.push_back(WindowPair { entries, prediction: prediction_source, actual: actual_source });
        scored.trim_pairs();
    }

    /// The lowest offset of `partition` that a pair in a window of the keys `of` came from.
    fn window_low(
        &self,
        partition: i32,
        of: impl Fn(&Scored) -> bool,
        side: impl Fn(&WindowPair) -> Source,
    ) -> Option<i64> {
        self.keys
            .iter()
            .filter(|k| of(k))
            .flat_map(|k| k.window_pairs.iter().map(&side))
            .filter(|s| s.partition == partition)
            .map(|s| s.offset)
            .min()
    }

    /// Expires entries past the join TTL, counting expired predictions per key.
    pub fn expire(&mut self, now: Instant) {
        let by_key = &mut self.expired_by_key;
        self.join.expire(now, |key| *by_key.entry(key).or_default() += 1);
        if let Some(j) = self.shadow_join.as_mut() {
            j.expire(now, |key| *by_key.entry(key).or_default() += 1);
        }
    }

    /// Forgets the predictions waiting from a revoked partition.
    pub fn drop_predictions(&mut self, partition: i32) {
        self.join.drop_partition(Side::Prediction, partition);
    }

    /// Forgets the shadow predictions waiting from a revoked partition.
    pub fn drop_shadow_predictions(&mut self, partition: i32) {
        if let Some(j) = self.shadow_join.as_mut() {
            j.drop_partition(Side::Prediction, partition);
        }
    }

    /// Forgets the actuals waiting, in either join, from a revoked partition.
    pub fn drop_actuals(&mut self, partition: i32) {
        self.join.drop_partition(Side::Actual, partition);
        if let Some(j) = self.shadow_join.as_mut() {
            j.drop_partition(Side::Actual, partition);
        }
    }

    /// The offset to commit for a predictions partition read up to `next`: the lowest one that
    /// still waits in the join or whose pair is still in a rolling window.
    pub fn predictions_commit_point(&self, partition: i32, next: i64) -> i64 {
        let waiting = self.join.commit_point(Side::Prediction, partition, next);
        let in_window = self.window_low(partition, |k| k.variant != Variant::Shadow, |p| p.prediction);
        in_window.map_or(waiting, |w| waiting.min(w))
    }

    /// The offset to commit for a shadow partition read up to `next` (as for predictions).
    pub fn shadow_commit_point(&self, partition: i32, next: i64) -> i64 {
        let waiting = self.shadow_join.as_ref().map_or(next, |j| j.commit_point(Side::Prediction, partition, next));
        let in_window = self.window_low(partition, |k| k.variant == Variant::Shadow, |p| p.prediction);
        in_window.map_or(waiting, |w| waiting.min(w))
    }

    /// The offset to commit for an actuals partition read up to `next`: the lower of both joins'
    /// and of the pairs still in a rolling window.
    pub fn actuals_commit_point(&self, partition: i32, next: i64) -> i64 {
        let main = self.join.commit_point(Side::Actual, partition, next);
        let waiting =
            self.shadow_join.as_ref().map_or(main, |j| main.min(j.commit_point(Side::Actual, partition, next)));
        let in_window = self.window_low(partition, |_| true, |p| p.actual);
        in_window.map_or(waiting, |w| waiting.min(w))
    }

    /// Actuals whose prediction never came or that the cap evicted, counted in the primary join
    /// only: every actual is offered to the shadow join too.
    pub fn unmatched_actuals(&self) -> u64 {
        let counts = self.join.counts();
        counts.unmatched_actuals + counts.evicted_actuals
    }

    /// Moves every key's time window up to `now_ms`; returns each key's error, in key order.
    pub fn advance(&mut self, now_ms: i64) -> Vec<ErrorStats> {
        let advance = |k: &mut Scored| {
            k.rolling.advance(now_ms);
            k.by_step.iter_mut().for_each(|w| w.advance(now_ms));
            k.pinball.iter_mut().for_each(|w| w.advance(now_ms));
            k.cqr.iter_mut().for_each(|w| w.advance(now_ms));
            k.mase.iter_mut().for_each(|(m, b)| {
                m.advance(now_ms);
                b.advance(now_ms);
            });
            k.trim_pairs();
            k.rolling.snapshot()
        };
        self.keys.iter_mut().map(advance).collect()
    }

    /// Every key's report, given `stats` from [`advance`](Self::advance).
    pub fn reports<'a>(&'a self, stats: &'a [ErrorStats]) -> impl Iterator<Item = KeyReport<'a>> + 'a {
        let mut pending = self.join.pending_by_key();
        if let Some(j) = &self.shadow_join {
            pending.extend(j.pending_by_key());
        }
        let mut scratch = Vec::new();
        self.keys.iter().zip(stats).enumerate().map(move |(i, (k, stats))| KeyReport {
            model: &k.model,
            variant: k.variant,
            pinball: k
                .levels
                .iter()
                .zip(&k.pinball)
                .map(|(level, w)| {
                    let s = w.snapshot();
                    (*level, s.count, s.bias)
                })
                .collect(),
            intervals: match &self.intervals {
                Some(cfg) => k.intervals(cfg, &mut scratch),
                None => Vec::new(),
            },
            stats: *stats,
            steps: k.by_step.iter().map(RollingError::snapshot).collect(),
            mase: k
                .mase
                .iter()
                .map(|(m, b)| match (m.snapshot().mae, b.snapshot().mae) {
                    (Some(m), Some(b)) if b > 0.0 => Some(m / b),
                    _ => None,
                })
                .collect(),
            pending: pending.get(&(i as u16)).copied().unwrap_or(0),
            expired: self.expired_by_key.get(&(i as u16)).copied().unwrap_or(0),
        })
    }

    /// Updates every key's RMSE gate; returns the alerts and retraining requests it raised.
    pub fn rmse_alerts(&mut self, stats: &[ErrorStats], now: Instant) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let Some(threshold) = self.threshold else { return alerts };
        for (k, stats) in self.keys.iter_mut().zip(stats) {
            let rmse = k.rmse_alert(stats, threshold, self.cfg.min_joined, now);
            alerts.extend(rmse);
            alerts.extend(k.retrain_request(stats, threshold, self.cfg.min_joined, self.cfg.retrain_after, now));
        }
        alerts
    }

    /// Updates every key's coverage gate; returns the `interval_coverage` alerts it raised.
    pub fn coverage_alerts(&mut self, now: Instant) -> Vec<Alert> {
        let Some(cfg) = &self.intervals else { return Vec::new() };
        let min = self.cfg.min_joined.min(cfg.coverage_window).max(1);
        self.keys.iter_mut().filter_map(|k| k.coverage_alert(cfg, min, now)).collect()
    }

    /// Applies the rollback/promotion rule to the configured primary and candidate, once.
    pub fn decide(&mut self, stats: &[ErrorStats]) -> Option<Alert> {
        let candidate_version = &self.variants.candidate.as_ref()?.version;
        // Once promoted, the candidate is the served primary: its old candidate window is not
        // evidence against itself.
        if self.decided || *candidate_version == self.model.version {
            return None;
        }
        let find = |variant: Variant, version: &str| {
            self.keys
                .iter()
                .position(|k| k.variant == variant && k.model.name == self.model.name && k.model.version == version)
        };
        let score = |i: usize| {
            let s = stats[i];
            s.rmse.zip(s.mae).map(|(rmse, mae)| VariantScore { rmse, mae, joined: s.count })
        };
        let p = find(Variant::Primary, &self.model.version)?;
        let c = find(Variant::Candidate, candidate_version)?;
        let (primary, candidate) = (score(p)?, score(c)?);
        let decision = crate::decisions::decide(&self.variants, primary, candidate)?;
        self.decided = true;
        let evidence = crate::decisions::evidence(&self.variants, decision, primary, candidate);
        tracing::warn!(
            ?decision,
            candidate = %candidate_version,
            candidate_rmse = candidate.rmse,
            candidate_joined = candidate.joined,
            primary = %self.model.version,
            primary_rmse = primary.rmse,
            primary_joined = primary.joined,
            margin = evidence.margin,
            "Label-driven decision about the candidate."
        );
        let candidate_model = &self.keys[c].model;
        Some(crate::decisions::alert(
            decision,
            candidate_model,
            &self.model,
            DecisionSource::Monitor,
            None,
            Some(evidence),
            // Validated at start-up, so the key reads; a file that vanished since signs nothing.
            self.variants.decision_key().ok().flatten().as_deref(),
        ))
    }
}

impl Scored {
    fn resume(&mut self, r: ResumedGate, cooldown: Duration) {
        self.rmse_gate = Gate::resumed(cooldown, r.active, r.last_fired);
        // The retraining clock runs from the firing that is still on.
        self.above_since = r.active.then(|| r.last_fired.unwrap_or_else(Instant::now));
        self.retrain_requested = r.retrain_requested;
    }

    /// Feeds the RMSE gate; returns the alert when it fired or resolved.
    fn rmse_alert(&mut self, stats: &ErrorStats, threshold: f64, min_joined: usize, now: Instant) -> Option<Alert> {
        let enough = stats.count >= min_joined;
        let rmse = stats.rmse.unwrap_or(0.0);
        let firing = enough && rmse > threshold;
        // Hysteresis: clear only well below the threshold.
        let clear = enough && rmse < 0.9 * threshold;
        let transition = self.rmse_gate.update(firing, clear, now);
        if transition == Transition::Resolve {
            self.retrain_requested = false;
        }
        // The retraining clock counts time spent above the threshold. The alert stays on down to
        // 0.9× of it (hysteresis), but a reading at or under the threshold restarts the clock;
        // too few pairs to judge (a reload's old version draining away) hold it.
        if enough && !firing {
            self.above_since = None;
        } else if firing && self.rmse_gate.is_active() && self.above_since.is_none() {
            self.above_since = Some(now);
        }
        let state = match transition {
            Transition::Fire => AlertState::Firing,
            Transition::Resolve => AlertState::Resolved,
            Transition::None => return None,
        };
        Some(self.alert(Details::RmseAboveThreshold(rmse_details(state, stats, threshold))))
    }

    /// Requests retraining once the RMSE has stayed above the threshold, with the alert on, for
    /// `after`, and is above it now; once per firing.
    fn retrain_request(
        &mut self,
        stats: &ErrorStats,
        threshold: f64,
        min_joined: usize,
        after: Duration,
        now: Instant,
    ) -> Option<Alert> {
        let since = self.above_since?;
        let above = stats.count >= min_joined && stats.rmse.is_some_and(|r| r > threshold);
        if self.retrain_requested || !above || now.duration_since(since) < after {
            return None;
        }
        self.retrain_requested = true;
        let evidence = RetrainEvidence {
            rmse: rmse_details(AlertState::Firing, stats, threshold),
            above_for_s: now.duration_since(since).as_secs_f64(),
        };
        let d = RetrainDetails { reason: RetrainReason::Performance, evidence: Some(evidence) };
        Some(self.alert(Details::RetrainRequested(d)))
    }

    /// Each step's calibrated half width (the conformal quantile of its window's absolute errors)
    /// and coverage. `scratch` is reused across keys.
    fn intervals(&self, cfg: &IntervalsConfig, scratch: &mut Vec<f64>) -> Vec<StepInterval> {
        let aci = cfg.method == IntervalMethod::Aci;
        let empty = RollingError::new(0, Duration::ZERO);
        (0..self.by_step.len())
            .map(|step| {
                scratch.clear();
                // CQR: the signed scores against the served band; otherwise absolute errors.
                let window = if cfg.method == IntervalMethod::Cqr {
                    let w = self.cqr.get(step).unwrap_or(&empty);
                    scratch.extend(w.errors());
                    w
                } else {
                    let w = &self.by_step[step];
                    scratch.extend(w.errors().map(f64::abs));
                    w
                };
                let level = match self.aci.get(step) {
                    Some(a) if aci => a.level(),
                    _ => cfg.level,
                };
                let half_width =
                    if scratch.len() >= cfg.min_residuals { conformal_quantile(scratch, level, aci) } else { None };
                let coverage = self.coverage.get(step);
                StepInterval {
                    half_width,
                    residuals: window.len(),
                    level,
                    coverage: coverage.and_then(Coverage::rate),
                    judged: coverage.map_or(0, Coverage::len),
                }
            })
            .collect()
    }

    /// Feeds the coverage gate: it fires when a step with at least `min` judged intervals covers
    /// less than `level − band`, and resolves when every judged step is back within the band.
    /// Too wide an interval (coverage above the band) is shown in snapshots but does not page:
    /// it is conservative, not wrong, and ACI passes through it after every recovery.
    fn coverage_alert(&mut self, cfg: &IntervalsConfig, min: usize, now: Instant) -> Option<Alert> {
        let steps: Vec<StepCoverage> = self
            .coverage
            .iter()
            .enumerate()
            .filter(|(_, c)| c.len() >= min)
            .filter_map(|(i, c)| Some(StepCoverage { step: i + 1, coverage: c.rate()?, judged: c.len() }))
            .collect();
        let floor = cfg.level - cfg.coverage_band;
        let firing = steps.iter().any(|s| s.coverage < floor);
        let clear = !steps.is_empty() && !firing;
        let state = AlertState::of(self.coverage_gate.update(firing, clear, now))?;
        let below = steps.iter().filter(|s| s.coverage < floor).map(|s| s.step).collect();
        let d = CoverageDetails { state, level: cfg.level, band: cfg.coverage_band, below, steps };
        Some(self.alert(Details::IntervalCoverage(d)))
    }

    fn alert(&self, details: Details) -> Alert {
        Alert::new(self.model.clone(), Some(self.variant), details)
    }
}

/// A quantile forecast's values, step-major, when they match its horizon and levels; else empty.
fn served_quantiles(p: &Prediction) -> Vec<f64> {
    match &p.quantiles {
        Some(q)
            if q.values.len() == p.prediction.len()
                && q.values.iter().all(|step| step.len() == q.levels.len() && step.iter().all(|v| v.is_finite())) =>
        {
            q.values.iter().flatten().copied().collect()
        }
        _ => Vec::new(),
    }
}

/// The interval a forecast was served with, as `(lower, upper)` per step; empty when it carried
/// none, an uncalibrated one, or bounds that do not match its horizon.
fn served_bounds(p: &Prediction) -> Vec<(f64, f64)> {
    match &p.interval {
        Some(i) if i.calibrated && i.lower.len() == p.prediction.len() && i.upper.len() == p.prediction.len() => {
            i.lower.iter().copied().zip(i.upper.iter().copied()).collect()
        }
        _ => Vec::new(),
    }
}

fn rmse_details(state: AlertState, stats: &ErrorStats, threshold: f64) -> RmseDetails {
    RmseDetails { state, rmse: stats.rmse, mae: stats.mae, count: stats.count, threshold }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;
    use crate::event::IntervalIn;

    fn model() -> ModelRef {
        ModelRef { name: "m".into(), version: "1".into() }
    }

    fn prediction(id: &str, value: f64) -> Prediction {
        Prediction {
            id: id.into(),
            series_id: "s".into(),
            timestamp: "2024-01-01T00:00:00Z".into(),
            prediction: vec![value],
            model: model(),
            variant: Variant::Primary,
            latency_ms: 0.0,
            produced_at: "2024-01-01T00:00:00Z".into(),
            warmup: false,
            gap_filled: 0,
            fallback: false,
            interval: None,
            quantiles: None,
        }
    }

    fn actual(id: &str, value: f64) -> Actual {
        Actual { id: id.into(), series_id: "s".into(), timestamp: "2024-01-01T00:00:00Z".into(), actual: vec![value] }
    }

    fn at(offset: i64) -> Source {
        Source { partition: 0, offset }
    }

    fn with_shadow() -> Scoring {
        Scoring::new(&MonitorConfig::default(), model(), None, true, VariantsConfig::default())
    }

    fn kinds(alerts: &[Alert]) -> Vec<AlertKind> {
        alerts.iter().map(Alert::kind).collect()
    }

    #[test]
    fn rmse_alert_fires_then_requests_retraining_once() {
        let cfg = MonitorConfig { min_joined: 2, retrain_after: Duration::from_secs(60), ..MonitorConfig::default() };
        let mut s = Scoring::new(&cfg, model(), Some(1.0), false, VariantsConfig::default());
        let t0 = Instant::now();
        for (i, id) in ["a", "b"].into_iter().enumerate() {
            s.offer_prediction(prediction(id, 3.0), at(i as i64), t0);
            s.offer_actual(actual(id, 1.0), at(i as i64), t0);
        }
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        assert_eq!((stats.len(), stats[0].count, stats[0].rmse), (1, 2, Some(2.0)));
        assert_eq!(kinds(&s.rmse_alerts(&stats, t0)), [AlertKind::RmseAboveThreshold]);
        assert!(s.rmse_alerts(&stats, t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(kinds(&s.rmse_alerts(&stats, t0 + Duration::from_secs(60))), [AlertKind::RetrainRequested]);
        assert!(s.rmse_alerts(&stats, t0 + Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn retraining_waits_for_the_error_to_stay_above_the_threshold() {
        let cfg = MonitorConfig { min_joined: 2, retrain_after: Duration::from_secs(60), ..MonitorConfig::default() };
        let mut s = Scoring::new(&cfg, model(), Some(1.0), false, VariantsConfig::default());
        let stats = |count, rmse| [ErrorStats { count, rmse: Some(rmse), mae: Some(rmse), bias: Some(0.0) }];
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(kinds(&s.rmse_alerts(&stats(10, 2.0), at(0))), [AlertKind::RmseAboveThreshold]);
        // 0.95× keeps the alert on (it clears under 0.9×) but restarts the retraining clock.
        assert!(s.rmse_alerts(&stats(10, 0.95), at(30)).is_empty());
        assert!(s.rmse_alerts(&stats(10, 0.95), at(90)).is_empty(), "not above for 60 s");
        assert!(s.rmse_alerts(&stats(10, 2.0), at(100)).is_empty(), "the clock starts again here");
        // Too few pairs to judge (a reloaded version's window draining) hold the clock, never fire.
        assert!(s.rmse_alerts(&stats(1, 2.0), at(170)).is_empty());
        assert_eq!(kinds(&s.rmse_alerts(&stats(10, 2.0), at(171))), [AlertKind::RetrainRequested]);
        assert!(s.rmse_alerts(&stats(10, 2.0), at(400)).is_empty(), "once per firing");
    }

    #[test]
    fn a_decided_or_promoted_candidate_is_not_decided_about_again() {
        let variants = VariantsConfig {
            candidate: Some(crate::config::CandidateConfig { version: "2".into(), share: 0.5 }),
            decision_min_joined: 3,
            ..VariantsConfig::default()
        };
        let v2 = ModelRef { name: "m".into(), version: "2".into() };
        // The candidate's errors are 4, the primary's 0: the rule rolls it back.
        let scored = || {
            let mut s = Scoring::new(&MonitorConfig::default(), model(), None, false, variants.clone());
            let now = Instant::now();
            for i in 0..3 {
                let (a, b, c) = (format!("p{i}"), format!("c{i}"), format!("q{i}"));
                s.offer_prediction(prediction(&a, 1.0), at(i), now);
                s.offer_actual(actual(&a, 1.0), at(i), now);
                let candidate = Prediction { model: v2.clone(), variant: Variant::Candidate, ..prediction(&b, 5.0) };
                s.offer_prediction(candidate, at(10 + i), now);
                s.offer_actual(actual(&b, 1.0), at(10 + i), now);
                // After a promotion, v2 serves as the primary, exactly.
                s.offer_prediction(Prediction { model: v2.clone(), ..prediction(&c, 1.0) }, at(20 + i), now);
                s.offer_actual(actual(&c, 1.0), at(20 + i), now);
            }
            s
        };
        let decide = |s: &mut Scoring| {
            let stats = s.advance(chrono::Utc::now().timestamp_millis());
            s.decide(&stats).map(|a| a.kind())
        };
        assert_eq!(decide(&mut scored()), Some(AlertKind::ModelRollback), "the control");
        // A new leader whose log holds an operator's promotion of v2 leaves it alone.
        let mut s = scored();
        let promoted = crate::decisions::alert(
            crate::alert::Decision::Promote,
            &v2,
            &model(),
            crate::alert::DecisionSource::Operator,
            None,
            None,
            None,
        );
        s.resume(&[promoted], Instant::now());
        assert_eq!(decide(&mut s), None);
        // A leader that follows the promoted v2 as the primary does not judge it by its old window.
        let mut s = scored();
        s.follow(v2.clone(), None);
        assert_eq!(decide(&mut s), None);
    }

    #[test]
    fn joined_by_time_timestamps_within_the_tolerance_meet_on_the_grid() {
        const HOUR: i64 = 3_600_000;
        let cfg = MonitorConfig { min_joined: 1, ..MonitorConfig::default() };
        let mut s = Scoring::new(&cfg, model(), None, false, VariantsConfig::default())
            .with_time_join(Duration::from_millis(HOUR as u64), 2);
        let stamp = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
        // A grid at half past the hour: on an epoch-aligned grid these would sit on the rounding
        // boundary. An actual before any forecast of its series is taken as stamped.
        let base = 1_700_000_000_000 / HOUR * HOUR + HOUR / 2;
        let early = Actual { id: String::new(), timestamp: stamp(base + 7 * HOUR + 1), ..actual("", 1.0) };
        s.offer_actual(early, at(9), Instant::now());
        let now = Instant::now();
        let forecast =
            Prediction { timestamp: stamp(base + 3_000), prediction: vec![10.0, 20.0], ..prediction("", 0.0) };
        s.offer_prediction(forecast, at(0), now);
        // Step 1 observed 2 s early, step 2 4 s late: each meets its step.
        for (i, (off, value)) in [(-2_000, 11.0), (4_000, 23.0)].into_iter().enumerate() {
            let actual =
                Actual { id: String::new(), timestamp: stamp(base + (i as i64 + 1) * HOUR + off), ..actual("", value) };
            s.offer_actual(actual, at(i as i64), now);
        }
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        assert_eq!(stats[0].count, 2, "both steps joined");
        assert_eq!(stats[0].mae, Some(2.0));
        let mut phases = LruCache::new(NonZeroUsize::MIN);
        assert_eq!(snap(&mut phases, HOUR, "x", HOUR + 7, false), HOUR + 7, "an actual anchors nothing");
        assert_eq!(snap(&mut phases, HOUR, "x", -HOUR - 1, true), -HOUR - 1, "the first forecast sets the phase");
        assert_eq!(snap(&mut phases, HOUR, "x", HOUR + 7, false), HOUR - 1);
    }

    #[test]
    fn no_threshold_no_rmse_alert() {
        let cfg = MonitorConfig { min_joined: 1, ..MonitorConfig::default() };
        let mut s = Scoring::new(&cfg, model(), None, false, VariantsConfig::default());
        let now = Instant::now();
        s.offer_prediction(prediction("a", 100.0), at(0), now);
        s.offer_actual(actual("a", 0.0), at(0), now);
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        assert!(s.rmse_alerts(&stats, now).is_empty());
    }

    #[test]
    fn commit_points_hold_at_what_still_waits_or_is_in_a_window() {
        let cfg = MonitorConfig { window_count: 1, ..MonitorConfig::default() };
        let mut s = Scoring::new(&cfg, model(), None, true, VariantsConfig::default());
        let now = Instant::now();
        s.offer_prediction(prediction("a", 1.0), at(5), now);
        assert_eq!(s.predictions_commit_point(0, 9), 5);
        // The actual completes the primary join; the pair's records stay held while its error
        // is in the window, and the actual still waits for its shadow prediction.
        s.offer_actual(actual("a", 1.0), at(3), now);
        assert_eq!((s.predictions_commit_point(0, 9), s.actuals_commit_point(0, 9)), (5, 3));
        s.offer_shadow_prediction(prediction("a", 2.0), at(7), now);
        assert_eq!(s.shadow_commit_point(0, 9), 7);
        // A newer pair pushes the first out of the primary's one-error window: its prediction is
        // released, but its actual stays held by the shadow's window.
        s.offer_prediction(prediction("b", 1.0), at(8), now);
        s.offer_actual(actual("b", 1.0), at(8), now);
        assert_eq!((s.predictions_commit_point(0, 9), s.actuals_commit_point(0, 9)), (8, 3));
    }

    #[test]
    fn revoked_partitions_stop_holding_the_watermark() {
        let mut s = with_shadow();
        let now = Instant::now();
        s.offer_prediction(prediction("a", 1.0), at(5), now);
        s.offer_shadow_prediction(prediction("b", 1.0), at(6), now);
        s.offer_actual(actual("c", 1.0), at(7), now);
        let points = |s: &Scoring| {
            [0, 1]
                .map(|p| (s.predictions_commit_point(p, 9), s.shadow_commit_point(p, 9), s.actuals_commit_point(p, 9)))
        };
        assert_eq!(points(&s), [(5, 6, 7), (9, 9, 9)]);
        s.drop_predictions(0);
        s.drop_shadow_predictions(0);
        s.drop_actuals(0);
        assert_eq!(points(&s), [(9, 9, 9); 2]);
    }

    #[test]
    fn bad_actuals_are_counted_by_reason_and_never_change_the_error() {
        let mut s = Scoring::new(&MonitorConfig::default(), model(), None, false, VariantsConfig::default());
        let now = Instant::now();
        s.offer_prediction(prediction("good", 3.0), at(0), now);
        s.offer_actual(actual("good", 1.0), at(0), now);
        // 1e200 is finite, but its squared error is not: it would make the RMSE ∞, and once it
        // left the window, ∞ − ∞ = NaN.
        s.offer_prediction(prediction("huge", 3.0), at(1), now);
        s.offer_actual(actual("huge", 1e200), at(1), now);
        s.offer_prediction(prediction("long", 3.0), at(2), now);
        s.offer_actual(Actual { actual: vec![1.0, 2.0], ..actual("long", 0.0) }, at(2), now);
        s.offer_prediction(prediction("empty", 3.0), at(3), now);
        s.offer_actual(Actual { actual: vec![], ..actual("empty", 0.0) }, at(3), now);
        s.offer_prediction(prediction("nan", 3.0), at(4), now);
        s.offer_actual(actual("nan", f64::NAN), at(4), now);
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        assert_eq!((stats[0].count, stats[0].rmse, stats[0].bias), (1, Some(2.0), Some(2.0)));
        let counts = [Rejection::Overflow, Rejection::WrongLength, Rejection::Empty, Rejection::NonFinite]
            .map(|r| s.rejected(r));
        assert_eq!(counts, [1, 1, 1, 1]);
    }

    #[test]
    fn an_idle_key_frees_its_slot_for_a_new_one() {
        let cfg = MonitorConfig {
            join_ttl: Duration::from_secs(1),
            window_duration: Duration::from_secs(1),
            ..MonitorConfig::default()
        };
        let mut s = Scoring::new(&cfg, model(), None, false, VariantsConfig::default());
        let t0 = Instant::now();
        let other = |v: usize| ModelRef { name: "junk".into(), version: v.to_string() };
        for v in 0..MAX_KEYS - 1 {
            s.offer_prediction(Prediction { model: other(v), ..prediction(&format!("j{v}"), 1.0) }, at(0), t0);
        }
        // Full: a new key has no slot while the others are fresh.
        s.offer_prediction(Prediction { model: other(999), ..prediction("late", 1.0) }, at(0), t0);
        assert!(s.take_freed().is_empty());
        let later = t0 + Duration::from_secs(5);
        s.expire(later);
        s.offer_prediction(Prediction { model: other(999), ..prediction("later", 1.0) }, at(0), later);
        let freed = s.take_freed();
        assert_eq!(freed.len(), 1);
        assert_ne!(freed[0].0, model(), "the served primary keeps its slot");
        assert!(s.keys.iter().any(|k| k.model == other(999)));
    }

    #[test]
    fn reports_count_pending_per_key() {
        let mut s = with_shadow();
        let now = Instant::now();
        s.offer_prediction(prediction("a", 1.0), at(0), now);
        s.offer_shadow_prediction(prediction("a", 1.0), at(0), now);
        s.offer_shadow_prediction(prediction("b", 1.0), at(1), now);
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        let pending: Vec<_> = s.reports(&stats).map(|k| (k.variant, k.pending, k.expired)).collect();
        assert_eq!(pending, [(Variant::Primary, 1, 0), (Variant::Shadow, 2, 0)]);
    }

    #[test]
    fn coverage_of_served_intervals_fires_resolves_and_calibrates() {
        let cfg = MonitorConfig { min_joined: 5, alert_cooldown: Duration::ZERO, ..MonitorConfig::default() };
        let intervals = IntervalsConfig { coverage_window: 10, min_residuals: 9, ..IntervalsConfig::default() };
        let mut s = Scoring::new(&cfg, model(), None, false, VariantsConfig::default()).with_intervals(&intervals);
        let now = Instant::now();
        let offer = |s: &mut Scoring, i: i64, error: f64| {
            let mut p = prediction(&format!("e{i}"), 10.0);
            p.interval = Some(IntervalIn { level: 0.9, calibrated: true, lower: vec![9.0], upper: vec![11.0] });
            s.offer_prediction(p, at(2 * i), now);
            s.offer_actual(actual(&format!("e{i}"), 10.0 - error), at(2 * i + 1), now);
        };
        // Ten misses (|error| 2..=11): coverage 0, below the band.
        for i in 0..10 {
            offer(&mut s, i, (i + 2) as f64);
        }
        let fired = s.coverage_alerts(now);
        let Some(Details::IntervalCoverage(d)) = fired.first().map(|a| &a.details) else { panic!("{fired:?}") };
        assert_eq!(
            (d.state, d.below.as_slice(), d.steps[0].coverage, d.steps[0].judged),
            (AlertState::Firing, &[1][..], 0.0, 10)
        );
        // The split-conformal half width over the ten errors: ⌈11 · 0.9⌉ = 10th smallest = 11.
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        let report = s.reports(&stats).next().unwrap();
        assert_eq!((report.intervals[0].half_width, report.intervals[0].residuals), (Some(11.0), 10));
        // Ten hits fill the coverage window: resolved once.
        for i in 10..20 {
            offer(&mut s, i, 0.5);
        }
        assert_eq!(kinds(&s.coverage_alerts(now)), [AlertKind::IntervalCoverage]);
        assert!(s.coverage_alerts(now).is_empty(), "resolved once");
        // A forecast that carried no interval (or an uncalibrated one) is not judged.
        let mut p = prediction("bare", 10.0);
        p.interval = Some(IntervalIn { level: 0.9, calibrated: false, lower: Vec::new(), upper: Vec::new() });
        s.offer_prediction(p, at(100), now);
        s.offer_actual(actual("bare", 0.0), at(101), now);
        let stats = s.advance(chrono::Utc::now().timestamp_millis());
        let report = s.reports(&stats).next().unwrap();
        assert_eq!((report.intervals[0].coverage, report.intervals[0].judged), (Some(1.0), 10));
    }
}
