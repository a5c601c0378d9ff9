//! Per-series window state for models with `window > 1`, bounded by an LRU over series.
//!
//! Raw (un-normalized) values are kept, so a reloaded bundle with a different scaler normalizes
//! the same history its own way. Each entry remembers its partition: on revoke the partition's
//! series are dropped, since the next owner of that partition builds their state.
//!
//! Two orders. Without a bundle `frequency`, a window is the last `T` observations in arrival
//! order. With one ([`EventTime`]), a series lives on a grid of steps anchored at its first
//! observation, and each observation goes to its step by timestamp: late and duplicated arrivals
//! land where they belong, gaps are filled or reset by policy, and the window of an event is the
//! `T` steps ending at the event's own step. Such a series holds `2T - 1` steps, so an
//! observation up to `T - 1` steps behind the newest still finds its whole window.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde::{Deserialize, Serialize};

/// What a second observation for an already-held step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// The first observation stays: an at-least-once producer's retry changes nothing.
    #[default]
    KeepFirst,
    /// The newest observation replaces the held one (a correction).
    Replace,
}

/// What a gap of missing steps does to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// The window restarts after the gap: the event warms up as a new series would.
    #[default]
    Reset,
    /// Each missing step repeats the last value before the gap, up to `max_fill_steps`.
    CarryForward,
    /// Missing steps are interpolated linearly between both sides, up to `max_fill_steps`.
    Linear,
}

/// Event-time windows: the bundle's step and tolerance, and the config's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// One step of the series, in milliseconds (bundle `frequency`).
    pub step_ms: i64,
    /// How far a timestamp may sit from its step's grid point (bundle `frequency_tolerance`).
    pub tolerance_ms: i64,
    pub duplicates: DuplicatePolicy,
    pub gaps: GapPolicy,
    /// Longest gap, in steps, that `carry_forward` or `linear` fill; longer ones reset.
    pub max_fill_steps: usize,
    /// How far ahead of this process's clock a timestamp may be (`windows.max_future`); `None`
    /// for files, where no clock applies.
    pub max_future_ms: Option<i64>,
}

/// The `[windows]` policies of event-time windows (the bundle gives the step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimePolicy {
    pub duplicates: DuplicatePolicy,
    pub gaps: GapPolicy,
    pub max_fill_steps: usize,
    /// How far ahead of the clock a timestamp may be; `None`: no bound (files).
    pub max_future: Option<std::time::Duration>,
}

impl Default for EventTimePolicy {
    fn default() -> Self {
        EventTimePolicy {
            duplicates: DuplicatePolicy::KeepFirst,
            gaps: GapPolicy::Reset,
            max_fill_steps: 3,
            max_future: None,
        }
    }
}

impl EventTime {
    /// Event time for a bundle that declares a `frequency` (and a window to keep); arrival
    /// order (`None`) otherwise.
    pub fn for_bundle(m: &crate::bundle::Manifest, policy: EventTimePolicy) -> Option<EventTime> {
        let step = m.frequency.filter(|_| m.window > 1)?;
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        let tolerance_ms =
            m.frequency_tolerance.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)).unwrap_or(step_ms / 2);
        Some(EventTime {
            step_ms,
            tolerance_ms,
            duplicates: policy.duplicates,
            gaps: policy.gaps,
            max_fill_steps: policy.max_fill_steps,
            max_future_ms: policy.max_future.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        })
    }
}

/// Why an observation was refused a place in its series' window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowRefusal {
    #[error("the observation is {behind} steps behind the newest of series {series:?}, older than its window of {window} steps")]
    Late { series: String, behind: i64, window: usize },
    #[error("the timestamp is {off_ms} ms from the series' grid of {step_ms} ms steps (tolerance {tolerance_ms} ms)")]
    OffGrid { off_ms: i64, step_ms: i64, tolerance_ms: i64 },
    #[error(
        "the timestamp is {ahead_ms} ms ahead of this worker's clock; the limit is {limit_ms} ms (windows.max_future)"
    )]
    Future { ahead_ms: i64, limit_ms: i64 },
}

/// How an observation was placed (event-time windows only; arrival order always appends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The newest step of its series (or its first observation).
    #[default]
    Appended,
    /// Behind the newest step, put in place.
    OutOfOrder,
    /// Its step was already observed; the duplicate policy applied.
    Duplicate,
}

/// The state of one step of an event-time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Never observed, or cut off by a reset gap.
    Empty,
    Observed,
    /// Filled in by the gap policy; an observation arriving late replaces it.
    Filled,
}

/// The window of one series: the last `T` observations (arrival order) or the last `2T - 1`
/// steps (event time), oldest first.
#[derive(Debug)]
struct SeriesWindow {
    partition: i32,
    rows: VecDeque<f32>,
    /// Event time only: one state per step, aligned with `rows`.
    steps: VecDeque<Step>,
    /// Event time only: the timestamp of step 0, in ms.
    anchor_ms: i64,
    /// Event time only: the index of the newest step (the back of `steps`).
    newest: i64,
}

/// Bounded per-series windows.
#[derive(Debug)]
pub struct WindowStore {
    window: usize,
    width: usize,
    time: Option<EventTime>,
    series: LruCache<String, SeriesWindow>,
    evicted: u64,
}

/// What [`WindowStore::push`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    /// True when the event's window had fewer than `T` usable steps and the oldest usable one
    /// was repeated to pad.
    pub padded: bool,
    /// True when adding this series evicted the least recently seen one.
    pub evicted: bool,
    /// Steps of the event's window that the gap policy filled in.
    pub gap_filled: usize,
    pub placement: Placement,
    /// Steps this observation's gap filled in (`carry_forward`, `linear`).
    pub filled_now: usize,
    /// True when this observation's gap was too long to fill, or the policy is `reset`.
    pub reset_now: bool,
}

impl Filled {
    /// The `streamcast_window_observations_total` cases this placement counts, with amounts.
    pub fn cases(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let placement = match self.placement {
            Placement::Appended => None,
            Placement::OutOfOrder => Some(("out_of_order", 1)),
            Placement::Duplicate => Some(("duplicate", 1)),
        };
        placement
            .into_iter()
            .chain(self.reset_now.then_some(("gap_reset", 1)))
            .chain((self.filled_now > 0).then_some(("gap_filled_step", self.filled_now as u64)))
    }
}

impl WindowRefusal {
    /// The `streamcast_window_observations_total` case of this refusal.
    pub fn case(&self) -> &'static str {
        match self {
            WindowRefusal::Late { .. } => "late",
            WindowRefusal::OffGrid { .. } => "off_grid",
            WindowRefusal::Future { .. } => "future",
        }
    }
}

impl WindowStore {
    /// Arrival-order windows of `window` observations of `width` values for at most
    /// `max_series` series; event-time windows when `time` is given.
    pub fn new(window: usize, width: usize, max_series: usize, time: Option<EventTime>) -> WindowStore {
        let cap = NonZeroUsize::new(max_series).unwrap_or(NonZeroUsize::MIN);
        WindowStore { window, width, time, series: LruCache::new(cap), evicted: 0 }
    }

    /// Places `obs`, observed at `timestamp_ms`, in the series' window and writes the model
    /// input for this event (`T·F` raw values, oldest first) into `out`.
    ///
    /// While a series has fewer than `T` usable steps the window is left-padded by repeating
    /// its oldest usable observation, so every event gets a prediction; the prediction is marked
    /// `warmup`. Arrival order ignores `timestamp_ms` and never refuses.
    pub fn push(
        &mut self,
        partition: i32,
        series_id: &str,
        timestamp_ms: i64,
        obs: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<Filled, WindowRefusal> {
        debug_assert_eq!(obs.len(), self.width);
        let (window, width, time) = (self.window, self.width, self.time);
        let steps_held = if time.is_some() { 2 * window - 1 } else { window };
        // Before the series is looked up: one far-future observation would otherwise move its
        // newest step years ahead (or anchor a new series' grid there), and every real one after
        // it would be refused as late, rebuild after rebuild.
        if let Some(limit_ms) = time.and_then(|t| t.max_future_ms) {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let ahead_ms = timestamp_ms.saturating_sub(now_ms);
            if ahead_ms > limit_ms {
                return Err(WindowRefusal::Future { ahead_ms, limit_ms });
            }
        }
        let mut evicted = false;
        let entry = match self.series.get_mut(series_id) {
            Some(entry) => entry,
            None => {
                let fresh = SeriesWindow {
                    partition,
                    rows: VecDeque::with_capacity(steps_held * width),
                    steps: VecDeque::new(),
                    anchor_ms: timestamp_ms,
                    newest: 0,
                };
                if let Some((_, _)) = self.series.push(series_id.to_string(), fresh) {
                    evicted = true;
                    self.evicted += 1;
                }
                let entry = self.series.get_mut(series_id).expect("just inserted");
                if time.is_some() {
                    entry.rows.resize(steps_held * width, 0.0);
                    entry.steps.resize(steps_held, Step::Empty);
                }
                entry
            }
        };
        entry.partition = partition;
        let Some(t) = time else {
            let cap = window * width;
            if entry.rows.len() == cap {
                entry.rows.drain(..width);
            }
            entry.rows.extend(obs.iter().copied());
            out.clear();
            let held = entry.rows.len() / width;
            let missing = window - held;
            let (a, b) = entry.rows.as_slices();
            for _ in 0..missing {
                // The oldest observation sits at the front of the ring.
                out.extend((0..width).map(|i| entry.rows[i]));
            }
            out.extend_from_slice(a);
            out.extend_from_slice(b);
            return Ok(Filled { padded: missing > 0, evicted, ..Filled::default() });
        };

        // The step of this timestamp on the series' grid.
        let since = timestamp_ms - entry.anchor_ms;
        let step = (since as f64 / t.step_ms as f64).round() as i64;
        let off_ms = since - step * t.step_ms;
        if off_ms.abs() > t.tolerance_ms {
            return Err(WindowRefusal::OffGrid { off_ms, step_ms: t.step_ms, tolerance_ms: t.tolerance_ms });
        }
        let held = steps_held as i64;
        let mut filled = Filled { evicted, ..Filled::default() };
        if step > entry.newest {
            let ahead = step - entry.newest;
            let gap = (ahead - 1) as usize;
            // The last observed (or filled) values before the gap, for the fill.
            let before: Vec<f32> = if gap > 0 {
                let at = (steps_held - 1) * width;
                (0..width).map(|i| entry.rows[at + i]).collect()
            } else {
                Vec::new()
            };
            let shift = ahead.min(held) as usize;
            entry.rows.drain(..shift * width);
            entry.rows.extend(std::iter::repeat_n(0.0, shift * width));
            entry.steps.drain(..shift);
            entry.steps.extend(std::iter::repeat_n(Step::Empty, shift));
            entry.newest = step;
            if gap > 0 {
                let fill = t.gaps != GapPolicy::Reset && gap <= t.max_fill_steps;
                if fill {
                    // Gap steps newest-gap .. newest-1, those still held.
                    for j in 1..=gap {
                        let pos = steps_held as i64 - 1 - (ahead - j as i64);
                        if pos < 0 {
                            continue;
                        }
                        let pos = pos as usize;
                        for i in 0..width {
                            entry.rows[pos * width + i] = match t.gaps {
                                GapPolicy::Linear => {
                                    let w = j as f32 / ahead as f32;
                                    before[i] + (obs[i] - before[i]) * w
                                }
                                _ => before[i],
                            };
                        }
                        entry.steps[pos] = Step::Filled;
                    }
                    filled.filled_now = gap;
                } else {
                    filled.reset_now = true;
                }
            }
        } else if step <= entry.newest - window as i64 {
            return Err(WindowRefusal::Late { series: series_id.to_string(), behind: entry.newest - step, window });
        }
        let pos = (steps_held as i64 - 1 - (entry.newest - step)) as usize;
        if entry.steps[pos] == Step::Observed {
            filled.placement = Placement::Duplicate;
            if t.duplicates == DuplicatePolicy::Replace {
                entry.rows.range_mut(pos * width..(pos + 1) * width).zip(obs).for_each(|(r, o)| *r = *o);
            }
        } else {
            if step < entry.newest {
                filled.placement = Placement::OutOfOrder;
            }
            entry.rows.range_mut(pos * width..(pos + 1) * width).zip(obs).for_each(|(r, o)| *r = *o);
            entry.steps[pos] = Step::Observed;
        }

        // The event's window: the `T` steps ending at its own step, cut after the last empty one.
        let end = pos + 1;
        let begin = end.saturating_sub(window);
        let usable = (begin..end).rev().take_while(|&p| entry.steps[p] != Step::Empty).last().unwrap_or(pos);
        let missing = window - (end - usable);
        filled.padded = missing > 0;
        filled.gap_filled = (usable..end).filter(|&p| entry.steps[p] == Step::Filled).count();
        out.clear();
        for _ in 0..missing {
            out.extend((0..width).map(|i| entry.rows[usable * width + i]));
        }
        out.extend(entry.rows.range(usable * width..end * width).copied());
        Ok(filled)
    }

    /// Drops the state of series last seen on any of `partitions`; returns how many were dropped.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let doomed: Vec<String> =
            self.series.iter().filter(|(_, w)| partitions.contains(&w.partition)).map(|(k, _)| k.clone()).collect();
        for k in &doomed {
            self.series.pop(k);
        }
        doomed.len()
    }

    /// How many series held were last seen on one of `partitions`.
    pub fn count_on(&self, partitions: &[i32]) -> usize {
        self.series.iter().filter(|(_, w)| partitions.contains(&w.partition)).count()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series evicted by the LRU cap since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_padding_then_slides() {
        let mut s = WindowStore::new(3, 2, 10, None);
        let mut out = Vec::new();
        assert!(s.push(0, "a", 0, &[1.0, 10.0], &mut out).unwrap().padded);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 1.0, 10.0]);
        assert!(s.push(0, "a", 0, &[2.0, 20.0], &mut out).unwrap().padded);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 2.0, 20.0]);
        assert!(!s.push(0, "a", 0, &[3.0, 30.0], &mut out).unwrap().padded);
        assert_eq!(out, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        assert!(!s.push(0, "a", 0, &[4.0, 40.0], &mut out).unwrap().padded);
        assert_eq!(out, vec![2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    }

    #[test]
    fn series_are_independent() {
        let mut s = WindowStore::new(2, 1, 10, None);
        let mut out = Vec::new();
        s.push(0, "a", 0, &[1.0], &mut out).unwrap();
        s.push(0, "b", 0, &[5.0], &mut out).unwrap();
        s.push(0, "a", 0, &[2.0], &mut out).unwrap();
        assert_eq!(out, vec![1.0, 2.0]);
        s.push(0, "b", 0, &[6.0], &mut out).unwrap();
        assert_eq!(out, vec![5.0, 6.0]);
    }

    #[test]
    fn lru_cap_evicts_least_recent_series() {
        let mut s = WindowStore::new(2, 1, 2, None);
        let mut out = Vec::new();
        s.push(0, "a", 0, &[1.0], &mut out).unwrap();
        s.push(0, "b", 0, &[1.0], &mut out).unwrap();
        s.push(0, "a", 0, &[2.0], &mut out).unwrap();
        assert!(s.push(0, "c", 0, &[1.0], &mut out).unwrap().evicted);
        assert_eq!((s.len(), s.evicted()), (2, 1));
        // `b` was evicted, so it starts over padded.
        assert!(s.push(0, "b", 0, &[9.0], &mut out).unwrap().padded);
    }

    const WEEK: i64 = 7 * 86_400_000;

    fn timed(window: usize, gaps: GapPolicy, duplicates: DuplicatePolicy) -> WindowStore {
        let time = EventTime {
            step_ms: WEEK,
            tolerance_ms: 86_400_000,
            duplicates,
            gaps,
            max_fill_steps: 2,
            max_future_ms: Some(86_400_000),
        };
        WindowStore::new(window, 1, 10, Some(time))
    }

    /// Pushes (week, value) pairs and returns each event's model input and result.
    fn feed(s: &mut WindowStore, obs: &[(i64, f32)]) -> Vec<Result<(Vec<f32>, Filled), WindowRefusal>> {
        let mut out = Vec::new();
        obs.iter().map(|&(w, v)| s.push(0, "a", 1_000 + w * WEEK, &[v], &mut out).map(|f| (out.clone(), f))).collect()
    }

    #[test]
    fn in_order_event_time_matches_arrival_order() {
        let obs: Vec<(i64, f32)> = (0..8).map(|w| (w, w as f32 * 1.5)).collect();
        let mut arrival = WindowStore::new(3, 1, 10, None);
        let mut out = Vec::new();
        let want: Vec<Vec<f32>> = obs
            .iter()
            .map(|&(_, v)| {
                arrival.push(0, "a", 0, &[v], &mut out).unwrap();
                out.clone()
            })
            .collect();
        let got = feed(&mut timed(3, GapPolicy::Reset, DuplicatePolicy::KeepFirst), &obs);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g.as_ref().unwrap().0, w);
        }
    }

    #[test]
    fn an_out_of_order_observation_is_put_in_place() {
        // Week 3 arrives after week 4: week 4 sees a one-step gap (filled linearly); week 3 then
        // gets its own clean window, and so does every later week.
        let got = feed(
            &mut timed(3, GapPolicy::Linear, DuplicatePolicy::KeepFirst),
            &[(0, 0.0), (1, 1.0), (2, 2.0), (4, 4.5), (3, 3.0), (5, 5.0), (6, 6.0)],
        );
        let (input, f) = got[3].clone().unwrap();
        assert_eq!((input, f.gap_filled, f.filled_now), (vec![2.0, 3.25, 4.5], 1, 1));
        let (input, f) = got[4].clone().unwrap();
        assert_eq!(
            (input, f.placement, f.gap_filled, f.padded),
            (vec![1.0, 2.0, 3.0], Placement::OutOfOrder, 0, false)
        );
        assert_eq!(got[5].clone().unwrap().0, vec![3.0, 4.5, 5.0]);
        assert_eq!(got[6].clone().unwrap().0, vec![4.5, 5.0, 6.0]);
    }

    #[test]
    fn duplicates_keep_the_first_or_replace_it() {
        let obs = [(0, 1.0), (1, 2.0), (1, 9.0), (2, 3.0)];
        let keep = feed(&mut timed(3, GapPolicy::Reset, DuplicatePolicy::KeepFirst), &obs);
        assert_eq!(keep[2].clone().unwrap().1.placement, Placement::Duplicate);
        assert_eq!(keep[2].clone().unwrap().0, vec![1.0, 1.0, 2.0]);
        assert_eq!(keep[3].clone().unwrap().0, vec![1.0, 2.0, 3.0]);
        let replace = feed(&mut timed(3, GapPolicy::Reset, DuplicatePolicy::Replace), &obs);
        assert_eq!(replace[2].clone().unwrap().0, vec![1.0, 1.0, 9.0]);
        assert_eq!(replace[3].clone().unwrap().0, vec![1.0, 9.0, 3.0]);
    }

    #[test]
    fn a_far_future_observation_is_refused_before_it_can_move_a_series() {
        let mut s = timed(3, GapPolicy::Reset, DuplicatePolicy::KeepFirst);
        let mut out = Vec::new();
        feed(&mut s, &[(0, 0.0), (1, 1.0)]);
        let now = chrono::Utc::now().timestamp_millis();
        for series in ["a", "new"] {
            let far = s.push(0, series, now + 365 * 86_400_000, &[9.0], &mut out);
            assert!(matches!(far, Err(WindowRefusal::Future { limit_ms: 86_400_000, .. })), "{far:?}");
        }
        assert_eq!(s.len(), 1, "no series was created for the refused observation");
        // Series `a` goes on from week 2, as if the observation had never come.
        assert_eq!(feed(&mut s, &[(2, 2.0)])[0].clone().unwrap().0, vec![0.0, 1.0, 2.0]);
        // Within the bound (clock skew), a new series starts as usual.
        assert!(s.push(0, "soon", now + 3_600_000, &[1.0], &mut out).is_ok());
        // Without a bound (files), the same observation is taken.
        let mut files = WindowStore::new(3, 1, 10, s.time.map(|t| EventTime { max_future_ms: None, ..t }));
        assert!(files.push(0, "a", now + 365 * 86_400_000, &[9.0], &mut out).is_ok());
    }

    #[test]
    fn too_late_and_off_grid_observations_are_refused() {
        let mut s = timed(3, GapPolicy::Reset, DuplicatePolicy::KeepFirst);
        let got = feed(&mut s, &[(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (5, 5.0), (3, 3.5), (2, 2.0)]);
        // Week 3 is two steps behind week 5, inside a 3-step window: a duplicate. Week 2 is 3
        // behind: late.
        assert_eq!(got[5].clone().unwrap().1.placement, Placement::Duplicate);
        assert!(matches!(got[6], Err(WindowRefusal::Late { behind: 3, window: 3, .. })), "{:?}", got[6]);
        let mut out = Vec::new();
        let off = s.push(0, "a", 1_000 + 6 * WEEK + 2 * 86_400_000, &[1.0], &mut out);
        assert!(matches!(off, Err(WindowRefusal::OffGrid { off_ms: 172_800_000, .. })), "{off:?}");
        // Within the tolerance, a timestamp belongs to the nearest step.
        assert!(s.push(0, "a", 1_000 + 6 * WEEK - 3_600_000, &[6.0], &mut out).is_ok());
        // Week 4 was never seen (the reset policy leaves it empty): the window restarts at 5.
        assert_eq!(out, vec![5.0, 5.0, 6.0]);
    }

    #[test]
    fn gaps_reset_carry_forward_or_interpolate_up_to_the_limit() {
        let obs = [(0, 1.0), (1, 2.0), (3, 4.0), (4, 5.0)];
        let reset = feed(&mut timed(3, GapPolicy::Reset, DuplicatePolicy::KeepFirst), &obs);
        let (input, f) = reset[2].clone().unwrap();
        assert_eq!((input, f.padded, f.reset_now), (vec![4.0, 4.0, 4.0], true, true));
        assert_eq!(reset[3].clone().unwrap().0, vec![4.0, 4.0, 5.0]);
        let carry = feed(&mut timed(3, GapPolicy::CarryForward, DuplicatePolicy::KeepFirst), &obs);
        assert_eq!(carry[2].clone().unwrap().0, vec![2.0, 2.0, 4.0]);
        let linear = feed(&mut timed(3, GapPolicy::Linear, DuplicatePolicy::KeepFirst), &obs);
        let (input, f) = linear[3].clone().unwrap();
        assert_eq!((input, f.gap_filled), (vec![3.0, 4.0, 5.0], 1));
        // Three missing steps exceed max_fill_steps (2): the window resets.
        let long = feed(&mut timed(3, GapPolicy::Linear, DuplicatePolicy::KeepFirst), &[(0, 1.0), (4, 5.0)]);
        let (input, f) = long[1].clone().unwrap();
        assert_eq!((input, f.padded, f.filled_now, f.reset_now), (vec![5.0, 5.0, 5.0], true, 0, true));
    }

    #[test]
    fn revoked_partitions_lose_their_series() {
        let mut s = WindowStore::new(2, 1, 10, None);
        let mut out = Vec::new();
        s.push(0, "a", 0, &[1.0], &mut out).unwrap();
        s.push(1, "b", 0, &[1.0], &mut out).unwrap();
        s.push(2, "c", 0, &[1.0], &mut out).unwrap();
        assert_eq!(s.drop_partitions(&[0, 2]), 2);
        assert_eq!(s.len(), 1);
    }
}
