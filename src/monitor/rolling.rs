//! Rolling forecast-error metrics (RMSE, MAE, bias) over a bounded recent window.
//!
//! Each joined (prediction, actual) pair contributes one error `e = prediction − actual`;
//! a forecast with horizon H > 1 contributes one error per step that has been joined.
//! The metrics are kept incrementally so `push` is O(1) amortised for in-order data and
//! never allocates once the window has reached its steady-state size.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// Summary of the errors currently in a [`RollingError`] window.
///
/// With `count == 0` every metric is `None` (never NaN), so callers cannot mistake "no
/// data yet" for a perfect model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorStats {
    pub count: usize,
    /// sqrt(mean(e²)).
    pub rmse: Option<f64>,
    /// mean(|e|).
    pub mae: Option<f64>,
    /// mean(e): positive means the model over-forecasts.
    pub bias: Option<f64>,
}

/// Running sums are recomputed from the retained entries after this many evictions.
///
/// Subtracting evicted values from running sums accumulates rounding error. A full
/// recomputation every 1024 evictions costs O(window / 1024) amortised per push and bounds
/// that drift to what 1024 updates can accumulate since the last exact state (~1e-13
/// relative). The other source of error, one evicted outlier (say 1e9 among errors of
/// order 1) cancelling every significant digit the small errors had, is handled separately
/// by recomputing as soon as such a dominant error leaves.
pub const RECOMPUTE_EVERY: u32 = 1024;

/// See `evict_front`: an evicted e² above this multiple of the remaining Σe² forces an
/// immediate recomputation.
const DOMINANCE: f64 = (1u64 << 20) as f64;

/// Errors are pre-reserved up to this many entries; beyond it the window grows on demand
/// (so `max_count = usize::MAX`, "time window only", does not try to reserve the world).
const PREALLOCATE_LIMIT: usize = 1 << 16;

/// Incremental RMSE / MAE / bias over a count window **and** a time window.
///
/// **Window semantics.** An error is in the window iff it is *both*
/// - within `duration` of the newest event time seen so far
///   (`at_ms >= newest_ms − duration`, inclusive), and
/// - among the `max_count` most recent errors, where "recent" orders by event time and,
///   for equal event times, by arrival.
///
/// Taking the intersection means both limits are hard caps: `max_count` bounds memory and
/// the statistical weight of a burst, `duration` guarantees that a stalled series stops
/// reporting stale accuracy. (A union would let an old burst linger for `max_count`
/// entries after the series went quiet.)
///
/// **Out-of-order event times.** Time eviction is relative to the newest event time seen,
/// never to the wall clock (use [`advance`](Self::advance) to expire a quiet window).
/// A late error is inserted at its event-time position (a short scan from the back); one
/// that is already outside the window when it arrives (older than `newest − duration`,
/// or older than every retained error while the count window is full) is dropped and
/// `push` returns `false`. Because entries are kept sorted by event time, evicting from
/// the front is exact for both windows.
///
/// `max_count == 0` keeps nothing. `Duration::ZERO` keeps only errors at the newest
/// timestamp. Durations beyond `i64::MAX` ms saturate.
#[derive(Debug, Clone)]
pub struct RollingError {
    max_count: usize,
    duration_ms: i64,
    /// (event time ms, error), non-decreasing in time; ties in arrival order.
    entries: VecDeque<(i64, f64)>,
    newest_ms: Option<i64>,
    sum: f64,
    sum_sq: f64,
    sum_abs: f64,
    evictions_since_recompute: u32,
}

impl RollingError {
    pub fn new(max_count: usize, duration: Duration) -> Self {
        let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self {
            max_count,
            duration_ms,
            entries: VecDeque::with_capacity(max_count.min(PREALLOCATE_LIMIT)),
            newest_ms: None,
            sum: 0.0,
            sum_sq: 0.0,
            sum_abs: 0.0,
            evictions_since_recompute: 0,
        }
    }

    /// Add one error observed at event time `at_ms` (Unix epoch milliseconds).
    ///
    /// Returns `false` if the error was not retained: it is non-finite or its square would
    /// overflow the running sums (a NaN or ∞ would poison them; the caller should count these
    /// separately), it falls
    /// outside the window on arrival (see the type docs), or `max_count == 0`.
    pub fn push(&mut self, at_ms: i64, error: f64) -> bool {
        // An error whose square would overflow the running sums is refused too: ∞ − ∞ = NaN
        // once it left the window.
        if !error.is_finite() || !(self.sum_sq + error * error).is_finite() || self.max_count == 0 {
            return false;
        }
        let newest = self.newest_ms.map_or(at_ms, |n| n.max(at_ms));
        let cutoff = newest.saturating_sub(self.duration_ms);
        if at_ms < cutoff {
            return false;
        }
        if self.entries.len() >= self.max_count {
            // Full: the new error displaces the oldest, unless it is older still.
            match self.entries.front() {
                Some(&(oldest, _)) if at_ms < oldest => return false,
                _ => self.evict_front(),
            }
        }
        self.newest_ms = Some(newest);
        // Insert after every entry with time <= at_ms: O(1) for in-order data.
        let mut pos = self.entries.len();
        while pos > 0 && self.entries[pos - 1].0 > at_ms {
            pos -= 1;
        }
        self.entries.insert(pos, (at_ms, error));
        self.sum += error;
        self.sum_sq += error * error;
        self.sum_abs += error.abs();
        self.evict_older_than(cutoff);
        true
    }

    /// Move the notion of "newest event time" forward without adding an error (e.g. from
    /// a watermark or the wall clock), expiring what falls out of the time window.
    /// Times earlier than the current newest are ignored.
    pub fn advance(&mut self, now_ms: i64) {
        let newest = self.newest_ms.map_or(now_ms, |n| n.max(now_ms));
        self.newest_ms = Some(newest);
        self.evict_older_than(newest.saturating_sub(self.duration_ms));
    }

    /// Current metrics. O(1).
    pub fn snapshot(&self) -> ErrorStats {
        let count = self.entries.len();
        if count == 0 {
            return ErrorStats { count, rmse: None, mae: None, bias: None };
        }
        let n = count as f64;
        // Clamp at 0: after subtractions the sums of non-negative terms can dip below 0 by
        // rounding (bounded by RECOMPUTE_EVERY), and sqrt of that would be NaN.
        ErrorStats {
            count,
            rmse: Some((self.sum_sq.max(0.0) / n).sqrt()),
            mae: Some(self.sum_abs.max(0.0) / n),
            bias: Some(self.sum / n),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The errors in the window, oldest first.
    pub fn errors(&self) -> impl Iterator<Item = f64> + '_ {
        self.entries.iter().map(|&(_, e)| e)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Newest event time seen (pushed or advanced to), if any.
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// Forget everything, including the newest time; keeps the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.newest_ms = None;
        self.reset_sums();
    }

    fn evict_older_than(&mut self, cutoff: i64) {
        while matches!(self.entries.front(), Some(&(t, _)) if t < cutoff) {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        let Some((_, e)) = self.entries.pop_front() else { return };
        if self.entries.is_empty() {
            // Exact state for free.
            self.reset_sums();
            return;
        }
        self.sum -= e;
        self.sum_sq -= e * e;
        self.sum_abs -= e.abs();
        self.evictions_since_recompute += 1;
        // Also recompute at once when the evicted error dominated what remains: the
        // subtraction has then cancelled most significant digits of the sums (an outlier
        // leaving a window of ordinary errors). Each trigger needs an error ≥ 2^10 times the
        // RMS of everything after it, which the f64 range allows only a few hundred times
        // in a row, so the cost stays amortised O(1) per push.
        if self.evictions_since_recompute >= RECOMPUTE_EVERY || e * e > DOMINANCE * self.sum_sq.abs() {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        let (mut sum, mut sum_sq, mut sum_abs) = (0.0, 0.0, 0.0);
        for &(_, e) in &self.entries {
            sum += e;
            sum_sq += e * e;
            sum_abs += e.abs();
        }
        self.sum = sum;
        self.sum_sq = sum_sq;
        self.sum_abs = sum_abs;
        self.evictions_since_recompute = 0;
    }

    fn reset_sums(&mut self) {
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.sum_abs = 0.0;
        self.evictions_since_recompute = 0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_whose_square_overflows_is_refused_and_the_window_stays_finite() {
        let mut r = RollingError::new(2, Duration::from_secs(3600));
        assert!(r.push(0, 1.0));
        assert!(!r.push(1, 1e200), "1e200² overflows");
        assert!(r.push(2, 3.0));
        assert!(r.push(3, 5.0));
        let s = r.snapshot();
        assert_eq!(s.count, 2);
        assert_eq!(s.rmse, Some(((9.0 + 25.0) / 2.0f64).sqrt()));
    }

    use super::*;

    /// Small deterministic xorshift64* for test streams.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Straightforward model of the documented semantics: keep every finite error ever
    /// pushed; the window is the max_count greatest by (time, arrival) among those with
    /// time >= newest − duration.
    struct Reference {
        max_count: usize,
        duration_ms: i64,
        all: Vec<(i64, usize, f64)>,
        newest: Option<i64>,
        arrivals: usize,
    }

    impl Reference {
        fn new(max_count: usize, duration: Duration) -> Self {
            let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            Self { max_count, duration_ms, all: Vec::new(), newest: None, arrivals: 0 }
        }
        fn push(&mut self, at: i64, e: f64) {
            if !e.is_finite() {
                return;
            }
            self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
            self.all.push((at, self.arrivals, e));
            self.arrivals += 1;
        }
        fn advance(&mut self, now: i64) {
            self.newest = Some(self.newest.map_or(now, |n| n.max(now)));
        }
        fn window_entries(&self) -> Vec<(i64, usize, f64)> {
            let Some(newest) = self.newest else { return Vec::new() };
            let cutoff = newest.saturating_sub(self.duration_ms);
            let mut w: Vec<_> = self.all.iter().filter(|(t, _, _)| *t >= cutoff).copied().collect();
            w.sort_by_key(|&(t, a, _)| (t, a));
            let skip = w.len().saturating_sub(self.max_count);
            w.split_off(skip)
        }
        fn window(&self) -> Vec<f64> {
            self.window_entries().iter().map(|&(_, _, e)| e).collect()
        }
        /// Forget entries outside the window, only to keep long tests fast. Sound because
        /// nothing can re-enter: the cutoff never decreases, and an entry outside the count
        /// window has a time <= every retained one, so it is also outside any later window.
        fn prune(&mut self) {
            self.all = self.window_entries();
        }
        fn snapshot(&self) -> ErrorStats {
            let w = self.window();
            if w.is_empty() {
                return ErrorStats { count: 0, rmse: None, mae: None, bias: None };
            }
            let n = w.len() as f64;
            ErrorStats {
                count: w.len(),
                rmse: Some((w.iter().map(|e| e * e).sum::<f64>() / n).sqrt()),
                mae: Some(w.iter().map(|e| e.abs()).sum::<f64>() / n),
                bias: Some(w.iter().sum::<f64>() / n),
            }
        }
    }

    fn close(a: Option<f64>, b: Option<f64>, scale: f64) -> bool {
        match (a, b) {
            (None, None) => true,
            // Relative to the largest |error| currently in the window: a dominant error
            // that has left must not leave rounding garbage behind.
            (Some(x), Some(y)) => (x - y).abs() <= 1e-11 * scale,
            _ => false,
        }
    }

    fn assert_matches(got: ErrorStats, want: ErrorStats, scale: f64, ctx: &str) {
        assert_eq!(got.count, want.count, "{ctx}: count");
        assert!(close(got.rmse, want.rmse, scale), "{ctx}: rmse {:?} vs {:?}", got.rmse, want.rmse);
        assert!(close(got.mae, want.mae, scale), "{ctx}: mae {:?} vs {:?}", got.mae, want.mae);
        assert!(close(got.bias, want.bias, scale), "{ctx}: bias {:?} vs {:?}", got.bias, want.bias);
    }

    fn run_stream(seed: u64, max_count: usize, duration: Duration, steps: usize, disorder_ms: i64, outliers: bool) {
        let mut rng = Rng(seed | 1);
        let mut got = RollingError::new(max_count, duration);
        let mut want = Reference::new(max_count, duration);
        let mut clock = 1_700_000_000_000i64;
        for step in 0..steps {
            clock += rng.below(50) as i64; // bursts share timestamps (step 0)
            let jitter = if disorder_ms > 0 { rng.below(disorder_ms as u64) as i64 } else { 0 };
            let at = clock - jitter;
            let mut e = (rng.unit() - 0.45) * 10.0;
            if outliers && rng.below(500) == 0 {
                e *= 1e8;
            }
            if rng.below(1000) == 0 {
                e = f64::NAN;
            }
            got.push(at, e);
            want.push(at, e);
            if rng.below(200) == 0 {
                let now = clock + rng.below(3 * duration.as_millis().min(10_000) as u64 + 1) as i64;
                got.advance(now);
                want.advance(now);
            }
            if step % 7 == 0 || step + 1 == steps {
                let ctx = format!("seed={seed} max_count={max_count} dur={duration:?} step={step}");
                let scale = want.window().iter().fold(0.0f64, |m, e| m.max(e.abs()));
                assert_matches(got.snapshot(), want.snapshot(), scale, &ctx);
                assert_eq!(got.len(), want.window().len(), "{ctx}");
                want.prune();
            }
        }
    }

    #[test]
    fn matches_recomputation_in_order() {
        for (seed, max_count, ms) in [(1, 100, 60_000), (2, 10, 1_000), (3, 5_000, 2_000), (4, 1, 10_000)] {
            run_stream(seed, max_count, Duration::from_millis(ms), 6_000, 0, false);
        }
    }

    #[test]
    fn matches_recomputation_out_of_order() {
        for (seed, max_count, ms, disorder) in
            [(11, 100, 5_000, 3_000), (12, 2_000, 1_500, 2_000), (13, 50, 100_000, 500), (14, 300, 800, 5_000)]
        {
            run_stream(seed, max_count, Duration::from_millis(ms), 6_000, disorder, false);
        }
    }

    #[test]
    fn matches_recomputation_with_outliers_and_many_evictions() {
        // > RECOMPUTE_EVERY evictions many times over, with 1e8-sized outliers leaving.
        run_stream(21, 3_000, Duration::from_millis(u64::MAX / 4), 20_000, 0, true);
        run_stream(22, 200, Duration::from_millis(3_000), 20_000, 1_000, true);
    }

    #[test]
    fn extreme_configurations() {
        run_stream(31, usize::MAX, Duration::from_millis(2_000), 3_000, 700, false);
        run_stream(32, 64, Duration::MAX, 3_000, 700, false);
        run_stream(33, 64, Duration::ZERO, 3_000, 0, false);
        run_stream(34, 0, Duration::from_secs(10), 100, 0, false);
    }

    #[test]
    fn empty_and_single() {
        let mut r = RollingError::new(10, Duration::from_secs(60));
        assert_eq!(r.snapshot(), ErrorStats { count: 0, rmse: None, mae: None, bias: None });
        assert!(r.is_empty());
        assert!(r.push(1_000, -2.0));
        assert_eq!(r.snapshot(), ErrorStats { count: 1, rmse: Some(2.0), mae: Some(2.0), bias: Some(-2.0) });
        assert!(!r.push(2_000, f64::NAN));
        assert!(!r.push(2_000, f64::INFINITY));
        assert_eq!(r.len(), 1);
        // Expire via advance.
        r.advance(61_001);
        assert_eq!(r.snapshot().count, 0);
        assert_eq!(r.snapshot().rmse, None);
        r.clear();
        assert_eq!(r.newest_ms(), None);
        let mut z = RollingError::new(0, Duration::from_secs(1));
        assert!(!z.push(0, 1.0));
        assert_eq!(z.snapshot().count, 0);
    }

    #[test]
    fn late_and_tied_arrivals() {
        let mut r = RollingError::new(3, Duration::from_millis(100));
        assert!(r.push(1_000, 1.0));
        assert!(r.push(1_050, 2.0));
        // Late but inside the time window: kept, in time order.
        assert!(r.push(1_010, 3.0));
        assert_eq!(r.snapshot().count, 3);
        // Full, and older than the oldest retained (1_000): dropped.
        assert!(!r.push(990, 4.0));
        // Equal to the oldest retained: newer by arrival, so it displaces it.
        assert!(r.push(1_000, 5.0));
        assert_eq!(r.snapshot().bias, Some((5.0 + 3.0 + 2.0) / 3.0));
        // Newest jumps: 1_000 and 1_010 fall out of [1_020, 1_120].
        assert!(r.push(1_120, 6.0));
        assert_eq!(r.snapshot().bias, Some((2.0 + 6.0) / 2.0));
        // Older than newest − duration: dropped on push.
        assert!(!r.push(1_019, 7.0));
        // Exactly at the cutoff is inside (inclusive).
        assert!(r.push(1_020, 8.0));
        assert_eq!(r.snapshot().count, 3);
    }

    #[test]
    fn steady_state_push_does_not_allocate() {
        let mut r = RollingError::new(1_000, Duration::from_secs(3_600));
        let cap = r.entries.capacity();
        for i in 0..10_000 {
            // Some disorder, to go through the insertion path too.
            r.push(i * 10 - (i % 3) * 7, (i % 17) as f64 - 8.0);
        }
        assert_eq!(r.len(), 1_000);
        assert_eq!(r.entries.capacity(), cap);
    }

    #[test]
    fn recompute_bounds_cancellation() {
        // A huge error enters and leaves; the small ones after it must be exact-ish.
        let mut r = RollingError::new(2, Duration::MAX);
        r.push(0, 1e12);
        for i in 1..=(RECOMPUTE_EVERY as i64 + 5) {
            r.push(i, 1e-3);
        }
        let s = r.snapshot();
        assert!((s.bias.unwrap() - 1e-3).abs() < 1e-15, "{s:?}");
        assert!((s.rmse.unwrap() - 1e-3).abs() < 1e-15, "{s:?}");
    }
}
