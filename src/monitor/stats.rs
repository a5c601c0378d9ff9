//! Drift statistics: pure functions over samples plus two bounded stream samplers.
//!
//! Everything here is deterministic and allocation-light so the monitor can run it on a
//! timer against the live stream without surprises:
//!
//! - [`ks_2samp`]: two-sample Kolmogorov–Smirnov test, numerically matching
//!   `scipy.stats.ks_2samp(a, b, method="asymp")` (two-sided).
//! - [`psi`]: Population Stability Index over reference-quantile bins.
//! - [`benjamini_hochberg`] / [`bonferroni`]: multiple-testing corrections, because the
//!   monitor tests every feature (and every output) at once and would otherwise raise
//!   false drift alarms at the nominal rate times the number of tests.
//! - [`SlidingSample`]: the bounded sample of recent served values that drift is judged on.
//!
//! No function panics on data: empty inputs give `None` (or an empty vector), NaN
//! observations are ignored where documented.

use serde::Serialize;

/// Result of [`ks_2samp`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KsResult {
    /// D = sup_x |F_a(x) − F_b(x)|, in `[0, 1]`.
    pub statistic: f64,
    /// Two-sided p-value under H0 "same continuous distribution", in `[0, 1]`.
    pub p_value: f64,
}

/// Two-sample Kolmogorov–Smirnov test (two-sided).
///
/// Inputs need not be sorted; sorted copies are made (O((n+m) log(n+m)), allocates).
/// NaN values are ignored (they have no place in an ordering); ±∞ are kept, since they
/// order fine. Returns `None` when either sample has no non-NaN value.
///
/// **Statistic.** Both empirical CDFs are evaluated right-continuously at every
/// observed value (`searchsorted(side="right")` in scipy), so tied values are consumed
/// together and ties between the samples never create a spurious jump.
///
/// **p-value.** This reproduces scipy's `method="asymp"`, which is *not* the textbook
/// `kstwobign.sf(sqrt(nm/(n+m))·D)`: scipy (checked against 1.17) evaluates the exact finite-n one-sample
/// Kolmogorov distribution at the effective sample size,
/// `kstwo.sf(D, round(n·m/(n+m)))` (round half to even), using the Simard–L'Ecuyer (2011)
/// dispatch between Ruben–Gambino closed forms, the Durbin matrix (Marsaglia–Tsang–Wang),
/// Pomeranz's recursion, Pelz–Good's asymptotic series and the exact one-sided Smirnov
/// sum. [`kolmogorov_n_sf`] is a port of that dispatch, so the values agree with scipy
/// to ~1e-12 rather than only asymptotically.
///
/// One documented deviation: for n = m = 1 the effective size rounds to 0 and scipy
/// returns NaN; here the p-value is 1.0 (one observation per side is no evidence).
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<KsResult> {
    let a = sorted_without_nan(a);
    let b = sorted_without_nan(b);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let statistic = ks_statistic_sorted(&a, &b);
    // Same float expression as scipy: m ≥ n, en = m*n/(m+n), then np.round (half to even).
    let (m, n) = if a.len() >= b.len() { (a.len() as f64, b.len() as f64) } else { (b.len() as f64, a.len() as f64) };
    let en = (m * n / (m + n)).round_ties_even();
    let p_value = if en < 1.0 { 1.0 } else { kolmogorov_n_sf(en as u64, statistic) };
    Some(KsResult { statistic, p_value })
}

/// D for two sorted, NaN-free, non-empty samples, exactly as scipy computes it
/// (`cdf1 - cdf2` in floating point, taking the larger of the max and −min).
fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_diff, mut min_diff) = (0.0f64, 0.0f64);
    while i < a.len() || j < b.len() {
        // Next distinct value across both samples.
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / na - j as f64 / nb;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    if min_s > max_diff {
        min_s
    } else {
        max_diff
    }
}

fn sorted_without_nan(x: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = x.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// Population Stability Index of `current` against `reference`, Σ (c − r)·ln(c / r).
///
/// Binning (identical to the numpy implementation in `scripts/make_drift_fixtures.py`):
/// - edges are the reference quantiles at i/bins, i = 1..bins−1, with numpy's default
///   `linear` interpolation (`np.quantile`);
/// - duplicate edges are removed (`np.unique`): with a heavily tied reference several
///   quantiles coincide, and keeping them would create bins that are empty by
///   construction on both sides, which inflates PSI through the epsilon floor below;
/// - bins are right-closed: (−∞, e1], (e1, e2], …, (e_{k−1}, +∞), so a value equal to
///   an edge (common with ties) belongs to the bin that edge closes.
///
/// Proportions are floored at [`PSI_EPSILON`] (1e-4) before the logarithm, so a bin that
/// is empty on one side contributes a large but finite amount instead of ∞. They are not
/// renormalised after flooring (the usual convention, and what the fixture checks).
///
/// Non-finite values (NaN, ±∞) are ignored on both sides: interpolated quantiles are
/// undefined next to infinities. Returns `None` if `bins == 0` or either side has no
/// finite value. `bins == 1` gives 0.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Option<f64> {
    if bins == 0 {
        return None;
    }
    let mut sorted_ref: Vec<f64> = reference.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted_ref.is_empty() || !current.iter().any(|x| x.is_finite()) {
        return None;
    }
    sorted_ref.sort_unstable_by(f64::total_cmp);

    let mut edges: Vec<f64> = (1..bins).map(|i| quantile_linear(&sorted_ref, i as f64 / bins as f64)).collect();
    edges.sort_unstable_by(f64::total_cmp);
    edges.dedup();

    let k = edges.len() + 1;
    let mut ref_counts = vec![0u64; k];
    let mut cur_counts = vec![0u64; k];
    // Number of edges strictly below x == index of the right-closed bin holding x.
    let bin_of = |x: f64| edges.partition_point(|&e| e < x);
    for &x in &sorted_ref {
        ref_counts[bin_of(x)] += 1;
    }
    let mut n_cur = 0u64;
    for &x in current.iter().filter(|x| x.is_finite()) {
        cur_counts[bin_of(x)] += 1;
        n_cur += 1;
    }
    let n_ref = sorted_ref.len() as f64;
    let n_cur = n_cur as f64;
    let total = ref_counts
        .iter()
        .zip(&cur_counts)
        .map(|(&r, &c)| {
            let p_ref = (r as f64 / n_ref).max(PSI_EPSILON);
            let p_cur = (c as f64 / n_cur).max(PSI_EPSILON);
            (p_cur - p_ref) * (p_cur / p_ref).ln()
        })
        .sum();
    Some(total)
}

/// Floor applied to bin proportions in [`psi`] so empty bins give a finite term.
///
/// 1e-4 is small next to any bin a monitor would configure (≤ 100 bins → ≥ 1 % each)
/// but caps a single empty bin's contribution at about p·ln(p/1e-4) rather than ∞.
pub const PSI_EPSILON: f64 = 1e-4;

/// `np.quantile(sorted, q)` with the default `method="linear"`, including numpy's
/// two-sided lerp (it interpolates from the upper neighbour when the weight is ≥ 0.5),
/// so edges are bit-identical to numpy's and ties at an edge land in the same bin.
fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index < 0.0 {
        return sorted[0];
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let lo = sorted[prev as usize];
    let hi = sorted[prev as usize + 1];
    let diff = hi - lo;
    if gamma >= 0.5 {
        hi - diff * (1.0 - gamma)
    } else {
        lo + diff * gamma
    }
}

/// Benjamini–Hochberg adjusted p-values (false discovery rate), in input order.
///
/// Same values as `scipy.stats.false_discovery_control(ps)` and statsmodels
/// `multipletests(ps, method="fdr_bh")`: sort ascending, p_(i)·m/i, running minimum from
/// the largest down (so the result is monotone in the raw p-value), clip to 1.
/// Rejecting where the adjusted value is ≤ q controls the FDR at q across all features.
///
/// Inputs are clamped to `[0, 1]` and NaN is treated as 1 (no evidence), so the output is
/// always a valid probability. Empty input gives an empty vector.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| sanitize_p(p_values[i]).total_cmp(&sanitize_p(p_values[j])));
    let mut adjusted = vec![0.0; m];
    let mut running_min = 1.0f64;
    for (rank0, &idx) in order.iter().enumerate().rev() {
        let scaled = sanitize_p(p_values[idx]) * m as f64 / (rank0 + 1) as f64;
        running_min = running_min.min(scaled);
        adjusted[idx] = running_min;
    }
    adjusted
}

/// Bonferroni adjusted p-values: min(p·m, 1), in input order.
///
/// Controls the family-wise error rate; more conservative than
/// [`benjamini_hochberg`]. Same NaN/clamping rules.
pub fn bonferroni(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len() as f64;
    p_values.iter().map(|&p| (sanitize_p(p) * m).min(1.0)).collect()
}

fn sanitize_p(p: f64) -> f64 {
    if p.is_nan() {
        1.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

// ---------------------------------------------------------------------------------------
// Stream samples
// ---------------------------------------------------------------------------------------

/// The most recent `capacity` values of a stream, in a ring buffer.
///
/// This is the sample the monitor uses for drift verdicts: drift is a statement about
/// what the model is seeing *now*, and a window of the latest values reacts to a change
/// within `capacity` observations, whereas a uniform sample of the whole stream would keep
/// diluting it with old data. `push` never allocates: the buffer is reserved at construction.
#[derive(Debug, Clone)]
pub struct SlidingSample {
    values: Vec<f64>,
    capacity: usize,
    next: usize,
    seen: u64,
}

impl SlidingSample {
    /// Reserve room for `capacity` values. `capacity == 0` keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self { values: Vec::with_capacity(capacity), capacity, next: 0, seen: 0 }
    }

    /// Append one observation, overwriting the oldest once full. Values are stored as
    /// given, NaN included (the statistics drop NaN).
    pub fn push(&mut self, x: f64) {
        if self.capacity > 0 {
            if self.values.len() < self.capacity {
                self.values.push(x);
            } else {
                self.values[self.next] = x;
            }
            self.next = if self.next + 1 == self.capacity { 0 } else { self.next + 1 };
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// The last `min(seen, capacity)` values in storage (not arrival) order: the
    /// statistics are order-free, so no rotation is done. Use
    /// [`iter_chronological`](Self::iter_chronological) when order matters.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The retained values, oldest first.
    pub fn iter_chronological(&self) -> impl Iterator<Item = f64> + '_ {
        let split = if self.values.len() < self.capacity { 0 } else { self.next };
        self.values[split..].iter().chain(&self.values[..split]).copied()
    }

    /// Number of values pushed since construction or the last `clear`.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Drop all values and reset `seen`; keeps the allocation.
    pub fn clear(&mut self) {
        self.values.clear();
        self.next = 0;
        self.seen = 0;
    }
}

// ---------------------------------------------------------------------------------------
// Kolmogorov distribution for finite n (port of scipy.stats._ksstats)
// ---------------------------------------------------------------------------------------

const E128: i32 = 128;
const EP128: f64 = 3.402_823_669_209_385e38; // 2^128
const EM128: f64 = 2.938_735_877_055_719e-39; // 2^-128
const LOG_2PI: f64 = 1.837_877_066_409_345_5;
const SQRT_2PI: f64 = 2.506_628_274_631_000_7;
const MIN_LOG: f64 = -708.0;
/// cephes MINLOG = ln(2^-1022).
const CEPHES_MINLOG: f64 = -7.083_964_185_322_641e2;
const SMIRNOV_MAX_COMPUTE_N: u64 = 1_000_000;

/// Survival function P(D_n > x) of the two-sided one-sample Kolmogorov–Smirnov statistic
/// for sample size `n` — scipy's `kstwo.sf(x, n)`, ported branch for branch from
/// `scipy/stats/_ksstats.py::_kolmogn(n, x, cdf=False)` (Simard & L'Ecuyer 2011).
///
/// The same selection of method by (n, n·x²) is kept on purpose: every method is only
/// accurate in its region, and matching scipy's choice is what makes the results agree
/// to ~1e-12 instead of "roughly". `n == 0` returns NaN (scipy does too); NaN `x` gives NaN.
pub fn kolmogorov_n_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    // rv_continuous support is (0.5/n, 1): at or below the lower end sf = 1.
    let nf = n as f64;
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.5 / nf {
        return 1.0;
    }
    clip_prob(kolmogn_sf(n, x))
}

fn clip_prob(p: f64) -> f64 {
    if p.is_nan() {
        p
    } else {
        p.clamp(0.0, 1.0)
    }
}

fn kolmogn_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben–Gambino: 1/2n <= x <= 1/n, cdf = n!/n^n (2t−1)^n.
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            let mut prod = 1.0;
            for i in 1..=n {
                prod *= i as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            prod
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return 1.0 - cdf;
    }
    if t >= nf - 1.0 {
        // Ruben–Gambino upper tail.
        return 2.0 * (1.0 - x).powf(nf);
    }
    if x >= 0.5 {
        // D_n+ and D_n- cannot both exceed 0.5: sf is exactly twice the one-sided one.
        return 2.0 * smirnov_sf(n, x);
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return 1.0 - kolmogn_dmtw_cdf(n, x);
        }
        if nxsquared <= 4.0 {
            return 1.0 - kolmogn_pomeranz_cdf(n, x);
        }
        return 2.0 * smirnov_sf(n, x);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return 2.0 * smirnov_sf(n, x);
    }
    let cdf =
        if n <= 100_000 && nf * x.powf(1.5) <= 1.4 { kolmogn_dmtw_cdf(n, x) } else { kolmogn_pelz_good_cdf(nf, x) };
    1.0 - cdf
}

/// log(n!/n^n) via Stirling with the n·ln(n) term removed up front (no cancellation).
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // Verbatim from scipy (B_{2j}/(2j)/(2j−1)), hence the extra digits.
    #[allow(clippy::excessive_precision)]
    const STIRLING: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let z = rn / n;
    let poly = STIRLING.iter().fold(0.0, |acc, &c| acc * z + c);
    n.ln() / 2.0 - n + LOG_2PI / 2.0 + rn * poly
}

/// x·2^e without intermediate overflow/underflow of 2^e itself.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    const STEP: i64 = 1000;
    let up = 2f64.powi(STEP as i32);
    let down = 2f64.powi(-STEP as i32);
    while e > STEP && x.is_finite() && x != 0.0 {
        x *= up;
        e -= STEP;
    }
    while e < -STEP && x != 0.0 {
        x *= down;
        e += STEP;
    }
    x * 2f64.powi(e as i32)
}

/// Durbin's matrix method, Marsaglia–Tsang–Wang evaluation: P(D_n <= d).
/// O(m² log n) memory/time with m = 2⌈nd⌉−1; only used where m is small.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    let mut v = vec![0.0; m];
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] = (1.0 - h.powi(j as i32)) * fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }

    let mut hpwr = vec![0.0; m * m];
    for i in 0..m {
        hpwr[i * m + i] = 1.0;
    }
    let mut tmp = vec![0.0; m * m];
    let mut nn = n;
    let mut expnt: i64 = 0;
    let mut hexpnt: i64 = 0;
    while nn > 0 {
        if nn % 2 == 1 {
            matmul(&hpwr, &hm, &mut tmp, m);
            std::mem::swap(&mut hpwr, &mut tmp);
            expnt += hexpnt;
        }
        matmul(&hm, &hm, &mut tmp, m);
        std::mem::swap(&mut hm, &mut tmp);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > EP128 {
            hm.iter_mut().for_each(|x| *x /= EP128);
            hexpnt += E128 as i64;
        }
        nn /= 2;
    }

    let mut p = hpwr[(k - 1) * m + (k - 1)];
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= E128 as i64;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    clip_prob(p)
}

/// out = a·b for row-major m×m matrices.
fn matmul(a: &[f64], b: &[f64], out: &mut [f64], m: usize) {
    out.iter_mut().for_each(|x| *x = 0.0);
    for i in 0..m {
        for l in 0..m {
            let ail = a[i * m + l];
            if ail == 0.0 {
                continue;
            }
            let brow = &b[l * m..(l + 1) * m];
            let orow = &mut out[i * m..(i + 1) * m];
            for (o, &bv) in orow.iter_mut().zip(brow) {
                *o += ail * bv;
            }
        }
    }
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pomeranz (1974) recursion: P(D_n <= x). Used for n <= 140 in the middle range.
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let ni = n as i64;
    let nf = n as f64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![0.0; npwrs];
    let mut twogpower = vec![0.0; npwrs];
    let mut onem2gpower = vec![0.0; npwrs];
    gpower[0] = 1.0;
    twogpower[0] = 1.0;
    onem2gpower[0] = 1.0;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }

    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt: i64 = 0;
    let (mut j1, _) = pomeranz_j1j2(0, ni, ll, ceilf, roundf);
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        let (nj1, j2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            // conv = np.convolve(V0[k1-V0s : k1-V0s+ln2], pwrs[:ln2]) ("full" mode);
            // only entries conv_start .. conv_start+conv_len are used.
            let a_start = (k1 - v0s).max(0) as usize;
            let a_end = ((k1 - v0s + ln2).max(0) as usize).min(npwrs);
            let a = &v0[a_start.min(a_end)..a_end];
            let b = &pwrs[..(ln2 as usize).min(npwrs)];
            let conv_start = j1 - k1;
            let conv_len = j2 - j1 + 1;
            for out_idx in 0..conv_len.max(0) {
                let kk = conv_start + out_idx;
                if kk < 0 || out_idx as usize >= npwrs {
                    continue;
                }
                let kk = kk as usize;
                let lo = kk.saturating_sub(b.len().saturating_sub(1));
                let hi = kk.min(a.len().saturating_sub(1));
                let mut s = 0.0;
                if !a.is_empty() {
                    for ai in lo..=hi {
                        s += a[ai] * b[kk - ai];
                    }
                }
                v1[out_idx as usize] = s;
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < EM128 {
                v1.iter_mut().for_each(|x| *x *= EP128);
                expnt -= E128 as i64;
            }
            v1s = v0s + j1 - k1;
        }
    }

    let idx = ni - v1s;
    let mut ans = if idx >= 0 && (idx as usize) < npwrs { v1[idx as usize] } else { 0.0 };
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += E128 as i64;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    clip_prob(ans)
}

/// Pelz–Good (1976) asymptotic series for P(D_n <= x), accurate for large n, small x.
fn kolmogn_pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let z = n.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z * z, z.powi(3), z.powi(4), z.powi(6));

    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < MIN_LOG {
        return 0.0;
    }
    let q = qlog.exp();

    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powi(8);

    let mut kk = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (msquared, mfour, msix) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * k) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msquared,
            k2a + k2b * msquared + k2c * mfour,
            k3a + k3b * msquared + k3c * mfour + k3d * msix,
        ];
        for (acc, c) in kk.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let denom = [z, 6.0 * zfour, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, d) in kk.iter_mut().zip(denom) {
        *acc = *acc * q * SQRT_2PI / d;
    }

    let q2 = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let ksq = kf * kf;
        let qp = q2.powf(ksq);
        let kspi = PI * kf;
        k2extra += ksq * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    kk[2] += k2extra * pi2 * SQRT_2PI / (-36.0 * zthree);
    kk[3] += k3extra * pi2 * SQRT_2PI / (216.0 * zsix);
    for (i, acc) in kk.iter_mut().enumerate() {
        *acc /= n.powf(i as f64 / 2.0);
    }
    kk.iter().sum()
}

/// One-sided Smirnov survival function P(D_n^+ > x) — `scipy.special.smirnov(n, x)`.
///
/// Same special cases as xsf's `_smirnov`; the general case is the Birnbaum–Tingey sum
/// x·Σ_{v=0}^{⌊n(1−x)⌋} C(n,v)(x+v/n)^{v−1}(1−x−v/n)^{n−v}. All terms are positive, so
/// evaluating each in log space with an error-free n·x (FMA) keeps ~1e-13 relative
/// accuracy without xsf's double-double arithmetic.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    // n·x = nx_hi + nx_lo exactly.
    let nx_hi = nf * x;
    let nx_lo = nf.mul_add(x, -nx_hi);
    let mut nxfl = nx_hi.floor();
    let mut alpha = (nx_hi - nxfl) + nx_lo;
    if alpha < 0.0 {
        nxfl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        nxfl += 1.0;
        alpha = 0.0;
    }
    if nxfl == 0.0 || (nxfl == 1.0 && alpha == 0.0) {
        // x <= 1/n: cdf = x(1+x)^(n−1).
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return clip_prob(1.0 - cdf);
    }
    if -2.0 * nf * x * x < CEPHES_MINLOG {
        return 0.0;
    }
    if nxfl >= nf - 1.0 {
        return clip_prob((1.0 - x).powf(nf));
    }
    if n > SMIRNOV_MAX_COMPUTE_N {
        // xsf's approximation for huge n: p ≈ exp(−(6nx+1)²/18n).
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        let sf = if logp < -std::f64::consts::LN_2 { logp.exp() } else { 1.0 - (-logp.exp_m1()) };
        return clip_prob(sf);
    }
    // Terms v = 0..=⌊n(1−x)⌋ = n − ⌊nx⌋ − 1 (when n(1−x) is an integer its term is 0 and
    // is skipped, exactly as in xsf).
    let last = ((nf - nxfl - 1.0) as u64).min(n - 1);
    let ln_n = nf.ln();
    let ln_x = x.ln();
    let mut ln_binom = 0.0f64;
    let mut sum = 0.0f64;
    for v in 0..=last {
        let vf = v as f64;
        // 1 − x − v/n = ((n − v) − n·x)/n, and x + v/n = (n·x + v)/n, both without cancellation.
        let upper = ((nf - vf) - nx_hi) - nx_lo;
        if upper <= 0.0 {
            break;
        }
        let lower = (nx_hi + vf) + nx_lo;
        let ln_term = ln_x
            + ln_binom
            + (nf - vf) * (upper.ln() - ln_n)
            + if v == 0 { -ln_x } else { (vf - 1.0) * (lower.ln() - ln_n) };
        let term = ln_term.exp();
        sum += term;
        // Terms are unimodal in v; once past the mode and negligible, stop (as xsf does).
        let remaining = (last - v) as f64;
        if term != 0.0 && 4.0 * remaining * term < f64::EPSILON * sum && v != last {
            break;
        }
        ln_binom += ((nf - vf) / (vf + 1.0)).ln();
    }
    clip_prob(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const FIXTURE: &str = include_str!("../../tests/fixtures/drift/ks_psi.json");

    #[derive(Deserialize)]
    struct Fixture {
        psi_epsilon: f64,
        ks_psi: Vec<KsPsiCase>,
        kstwo_sf: Vec<KstwoRow>,
        multiple_testing: Vec<MultipleTestingCase>,
    }

    #[derive(Deserialize)]
    struct KsPsiCase {
        name: String,
        a: Vec<f64>,
        b: Vec<f64>,
        bins: usize,
        ks_statistic: f64,
        ks_p_value: f64,
        kstwo_n: u64,
        psi: f64,
    }

    #[derive(Deserialize)]
    struct KstwoRow {
        n: u64,
        x: f64,
        sf: f64,
    }

    #[derive(Deserialize)]
    struct MultipleTestingCase {
        p_values: Vec<f64>,
        bh: Vec<f64>,
        bonferroni: Vec<f64>,
    }

    fn fixture() -> Fixture {
        serde_json::from_str(FIXTURE).expect("fixture parses")
    }

    #[test]
    fn fixture_epsilon_matches() {
        assert_eq!(fixture().psi_epsilon, PSI_EPSILON);
    }

    #[test]
    fn ks_matches_scipy_asymp() {
        for case in fixture().ks_psi {
            let r = ks_2samp(&case.a, &case.b).expect("non-empty");
            assert!(
                (r.statistic - case.ks_statistic).abs() <= 1e-9,
                "{}: D {} vs {}",
                case.name,
                r.statistic,
                case.ks_statistic
            );
            assert!(
                (r.p_value - case.ks_p_value).abs() <= 1e-6,
                "{}: p {} vs {}",
                case.name,
                r.p_value,
                case.ks_p_value
            );
            // Tighter than required: the port should track scipy closely, relatively too.
            let rel = (r.p_value - case.ks_p_value).abs() / case.ks_p_value.max(1e-300);
            assert!(rel <= 1e-8 || (r.p_value - case.ks_p_value).abs() <= 1e-15, "{}: rel {rel}", case.name);
            // Symmetric in the two samples.
            let s = ks_2samp(&case.b, &case.a).unwrap();
            assert_eq!(s.statistic, r.statistic, "{}", case.name);
            assert_eq!(s.p_value, r.p_value, "{}", case.name);
            let (m, n) = (case.a.len().max(case.b.len()) as f64, case.a.len().min(case.b.len()) as f64);
            assert_eq!((m * n / (m + n)).round_ties_even() as u64, case.kstwo_n, "{}", case.name);
        }
    }

    #[test]
    fn kstwo_sf_matches_scipy_on_every_branch() {
        let mut worst = (0.0f64, 0u64, 0.0f64);
        for row in fixture().kstwo_sf {
            let got = kolmogorov_n_sf(row.n, row.x);
            let err = (got - row.sf).abs();
            assert!(err <= 1e-10, "n={} x={} got {got} want {}", row.n, row.x, row.sf);
            if row.sf > 1e-300 && row.sf < 1.0 {
                let rel = err / row.sf;
                assert!(rel <= 1e-8, "n={} x={} rel {rel}: got {got} want {}", row.n, row.x, row.sf);
            }
            if err > worst.0 {
                worst = (err, row.n, row.x);
            }
        }
        eprintln!("kstwo worst abs error {:e} at n={} x={}", worst.0, worst.1, worst.2);
    }

    #[test]
    fn psi_matches_numpy() {
        for case in fixture().ks_psi {
            let got = psi(&case.a, &case.b, case.bins).expect("non-empty");
            assert!((got - case.psi).abs() <= 1e-9, "{}: psi {got} vs {}", case.name, case.psi);
        }
    }

    #[test]
    fn multiple_testing_matches_scipy_statsmodels() {
        for case in fixture().multiple_testing {
            let bh = benjamini_hochberg(&case.p_values);
            let bonf = bonferroni(&case.p_values);
            assert_eq!(bh.len(), case.bh.len());
            for (g, w) in bh.iter().zip(&case.bh) {
                assert!((g - w).abs() <= 1e-12, "bh {g} vs {w}");
            }
            for (g, w) in bonf.iter().zip(&case.bonferroni) {
                assert!((g - w).abs() <= 1e-12, "bonferroni {g} vs {w}");
            }
            // Monotone in the raw p-values.
            for i in 0..bh.len() {
                for j in 0..bh.len() {
                    if case.p_values[i] <= case.p_values[j] {
                        assert!(bh[i] <= bh[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        assert_eq!(ks_2samp(&[], &[1.0]), None);
        assert_eq!(ks_2samp(&[1.0], &[]), None);
        assert_eq!(ks_2samp(&[f64::NAN], &[1.0]), None);
        // n = m = 1: scipy gives NaN, we give 1.
        assert_eq!(ks_2samp(&[1.0], &[2.0]), Some(KsResult { statistic: 1.0, p_value: 1.0 }));
        // NaN is ignored.
        assert_eq!(ks_2samp(&[1.0, f64::NAN, 2.0], &[1.0, 2.0]).unwrap().statistic, 0.0);
        // Infinities order fine.
        let r = ks_2samp(&[f64::NEG_INFINITY, 0.0, f64::INFINITY], &[0.0, 1.0, 2.0]).unwrap();
        assert!(r.statistic > 0.0 && r.p_value.is_finite());

        assert_eq!(psi(&[], &[1.0], 10), None);
        assert_eq!(psi(&[1.0], &[], 10), None);
        assert_eq!(psi(&[1.0], &[1.0], 0), None);
        assert_eq!(psi(&[f64::NAN], &[1.0], 10), None);
        assert_eq!(psi(&[1.0, 2.0], &[5.0], 1), Some(0.0));
        // Constant reference: all edges dedup to one, two bins, finite PSI.
        let p = psi(&[3.0; 100], &[3.0, 4.0], 10).unwrap();
        let want = (0.5 - 1.0) * (0.5f64).ln() + (0.5 - PSI_EPSILON) * (0.5 / PSI_EPSILON).ln();
        assert!((p - want).abs() < 1e-12, "{p} vs {want}");
        assert_eq!(psi(&[3.0; 100], &[3.0; 7], 10), Some(0.0));

        assert!(benjamini_hochberg(&[]).is_empty());
        assert!(bonferroni(&[]).is_empty());
        assert_eq!(benjamini_hochberg(&[f64::NAN, 0.01]), vec![1.0, 0.02]);
        assert_eq!(bonferroni(&[f64::NAN, 0.01, -1.0, 0.6]), vec![1.0, 0.04, 0.0, 1.0]);
    }

    #[test]
    fn kolmogorov_n_sf_edges() {
        assert!(kolmogorov_n_sf(0, 0.3).is_nan());
        assert!(kolmogorov_n_sf(10, f64::NAN).is_nan());
        assert_eq!(kolmogorov_n_sf(10, 0.0), 1.0);
        assert_eq!(kolmogorov_n_sf(10, 0.05), 1.0);
        assert_eq!(kolmogorov_n_sf(10, 1.0), 0.0);
        assert_eq!(kolmogorov_n_sf(10, 2.0), 0.0);
        // Monotone non-increasing in x across all branch boundaries.
        for &n in &[2u64, 7, 50, 140, 141, 1000, 20_000] {
            let mut prev = 1.0;
            for i in 0..=2000 {
                let x = i as f64 / 2000.0;
                let p = kolmogorov_n_sf(n, x);
                assert!((0.0..=1.0).contains(&p), "n={n} x={x} p={p}");
                assert!(p <= prev + 1e-9, "n={n} x={x}: {p} > {prev}");
                prev = p;
            }
        }
    }

    #[test]
    fn sliding_sample_keeps_latest() {
        let mut s = SlidingSample::new(3);
        assert!(s.is_empty());
        s.push(1.0);
        s.push(2.0);
        assert_eq!(s.iter_chronological().collect::<Vec<_>>(), vec![1.0, 2.0]);
        for x in 3..=7 {
            s.push(x as f64);
        }
        let mut v = s.values().to_vec();
        v.sort_by(f64::total_cmp);
        assert_eq!(v, vec![5.0, 6.0, 7.0]);
        assert_eq!(s.iter_chronological().collect::<Vec<_>>(), vec![5.0, 6.0, 7.0]);
        assert_eq!(s.seen(), 7);
        s.clear();
        assert!(s.is_empty());
        s.push(9.0);
        assert_eq!(s.values(), &[9.0]);
        let mut z = SlidingSample::new(0);
        z.push(1.0);
        assert!(z.values().is_empty());
        assert_eq!(z.seen(), 1);
    }
}
