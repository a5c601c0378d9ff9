//! Scoring one micro-batch: each row by the model it is routed to (primary or candidate), every
//! row also by the shadow, repeated windows from the cache, and rows the primary cannot serve
//! by the fallback while the circuit breaker decides whether the primary is called at all.

use std::time::{Duration, Instant};

use super::batcher::{BatchOutcome, Job, JobSink, RowStatus};
use super::breaker::{Breaker, BreakerReporter, Transition};
use super::cache::PredictionCache;
use super::fallback::FallbackModel;
use super::model_set::{ModelSet, Predict};
use super::InferenceError;

/// Rows of a batch gathered for one model call, and that call's predictions: the one
/// "gather rows → predict → scatter" step every route uses.
#[derive(Default)]
pub struct RowGroup {
    /// Indices into the batch, in order.
    pub rows: Vec<usize>,
    inputs: Vec<f32>,
    outputs: Vec<f32>,
}

impl RowGroup {
    /// Collects the jobs `pick` selects; false when it selected none.
    pub fn gather<O>(&mut self, jobs: &[Job<O>], mut pick: impl FnMut(usize, &Job<O>) -> bool) -> bool {
        self.rows.clear();
        self.inputs.clear();
        for (i, job) in jobs.iter().enumerate() {
            if pick(i, job) {
                self.rows.push(i);
                self.inputs.extend_from_slice(&job.input);
            }
        }
        !self.rows.is_empty()
    }

    /// Runs `model` on the gathered rows; returns how long the call took.
    pub fn predict(&mut self, model: &mut impl Predict) -> Result<Duration, InferenceError> {
        let t = Instant::now();
        model.predict_rows(&self.inputs, self.rows.len(), &mut self.outputs)?;
        Ok(t.elapsed())
    }

    /// `(batch row, its h predictions)` for every gathered row.
    pub fn scattered(&self, h: usize) -> impl Iterator<Item = (usize, &[f32])> {
        self.rows.iter().copied().zip(self.outputs.chunks_exact(h))
    }

    /// Copies every gathered row's predictions to its place in `into` (`h` values a row).
    pub fn scatter(&self, h: usize, into: &mut [f32]) {
        for (i, out) in self.scattered(h) {
            into[i * h..(i + 1) * h].copy_from_slice(out);
        }
    }
}

/// The fallback and the breaker that decides when it serves.
pub struct Guard {
    pub fallback: FallbackModel,
    pub breaker: Breaker,
    /// Logs, counts and alerts on breaker transitions.
    pub reporter: Option<BreakerReporter>,
}

impl Predict for FallbackModel {
    fn predict_rows(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        FallbackModel::predict_rows(self, raw, n, out)
    }
}

/// Scores batches with a [`ModelSet`], a cache and a guarded fallback; owns the batch buffers.
pub struct Scorer {
    models: ModelSet,
    guard: Option<Guard>,
    cache: Option<PredictionCache>,
    outputs: Vec<f32>,
    shadow_outputs: Vec<f32>,
    /// Who served each row of the current batch.
    rows: Vec<RowStatus>,
    group: RowGroup,
    last_warn: Option<Instant>,
}

impl Scorer {
    /// A scorer for `models`. Without a primary, a fallback must be added before scoring.
    pub fn new(models: ModelSet) -> Scorer {
        Scorer {
            models,
            guard: None,
            cache: None,
            outputs: Vec::new(),
            shadow_outputs: Vec::new(),
            rows: Vec::new(),
            group: RowGroup::default(),
            last_warn: None,
        }
    }

    /// Rebuilds the model set (to attach the reload and decision channels).
    pub fn map_models(mut self, f: impl FnOnce(ModelSet) -> ModelSet) -> Scorer {
        self.models = f(self.models);
        self
    }

    /// Serves batches with `fallback` while `breaker` is open, and any row the primary fails.
    pub fn with_fallback(
        mut self,
        fallback: FallbackModel,
        breaker: Breaker,
        reporter: Option<BreakerReporter>,
    ) -> Scorer {
        self.guard = Some(Guard { fallback, breaker, reporter });
        self
    }

    /// Serves repeated windows from a bounded LRU of `capacity` predictions. The cache is not
    /// used while variants score: it is meant for single-model replays.
    pub fn with_cache(mut self, capacity: usize) -> Scorer {
        self.cache = Some(PredictionCache::new(capacity));
        self
    }

    /// Cache hits and misses so far (zero without a cache).
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.as_ref().map_or((0, 0), |c| (c.hits, c.misses))
    }

    /// Applies reloads and decisions that arrived since the last batch.
    pub fn apply_pending(&mut self) {
        if self.models.apply_pending() {
            if let Some(g) = self.guard.as_mut() {
                g.breaker.reset();
                let primary = self.models.primary_ref().expect("a primary just recovered");
                if let Some(r) = g.reporter.as_mut() {
                    r.report(Transition::Closed, None, primary);
                }
            }
        }
    }

    /// Values per row of a batch's output: the primary's width, or the fallback's without one.
    fn width(&self) -> usize {
        match (self.models.width(), &self.guard) {
            (Some(h), _) => h,
            (None, Some(g)) => g.fallback.width(),
            (None, None) => unreachable!("a scorer without a primary always has a fallback"),
        }
    }

    /// Scores one batch and hands it to `sink`; returns how long scoring took (the model calls,
    /// without the sink's work).
    pub fn score<O, S: JobSink<O>>(&mut self, batch: &mut Vec<Job<O>>, sink: &mut S) -> Duration {
        sink.batch_started();
        let start = Instant::now();
        let (hits0, misses0) = self.cache_counts();
        let (n, h) = (batch.len(), self.width());
        let use_primary =
            self.models.primary().is_some() && self.guard.as_mut().is_none_or(|g| g.breaker.allow_primary(start));
        let mut primary_time = Duration::ZERO;
        let mut shadow_ok = false;
        let mut result = if use_primary {
            self.score_primary(batch, h, &mut primary_time, &mut shadow_ok)
        } else {
            Err(InferenceError::BreakerOpen)
        };
        // A non-finite output fails its row only: one broken series must not take its batch
        // neighbours to the dead-letter topic (or to the fallback) with it.
        self.rows.clear();
        match &result {
            Ok(()) => self.rows.extend(self.outputs.chunks_exact(h).map(|row| {
                if row.iter().all(|v| v.is_finite()) {
                    RowStatus::Model
                } else {
                    RowStatus::Failed
                }
            })),
            Err(_) => self.rows.resize(n, RowStatus::Failed),
        }
        if self.guard.is_some() {
            if use_primary {
                self.judge_primary(&result, primary_time);
            }
            if self.serve_failed_rows(batch, &result, use_primary, h) {
                result = Ok(());
            }
        }
        let inference_time = start.elapsed();
        let (hits1, misses1) = self.cache_counts();
        let outcome = BatchOutcome {
            jobs: batch,
            result: match &result {
                Ok(()) => Ok(&self.outputs),
                Err(e) => Err(e),
            },
            rows: &self.rows,
            model: match (self.models.primary_ref(), &self.guard) {
                (Some(m), _) => m,
                (None, Some(g)) => g.fallback.model_ref(),
                (None, None) => unreachable!("a scorer without a primary always has a fallback"),
            },
            horizon: h,
            quantiles: self.models.quantiles(),
            inference_time,
            cache_hits: hits1 - hits0,
            cache_misses: misses1 - misses0,
            candidate: self.models.candidate().map(|m| m.model_ref()),
            shadow: self.models.shadow().filter(|_| shadow_ok).map(|m| (m.model_ref(), &self.shadow_outputs[..])),
            fallback: self.guard.as_ref().map(|g| g.fallback.model_ref()),
        };
        sink.batch(outcome);
        inference_time
    }

    /// Feeds the breaker the primary's own call: an error, no usable row at all, or over budget.
    fn judge_primary(&mut self, result: &Result<(), InferenceError>, took: Duration) {
        let failed = self.rows.iter().filter(|r| **r == RowStatus::Failed).count();
        let n = self.rows.len();
        let g = self.guard.as_mut().expect("judged only with a fallback");
        let good = result.is_ok() && failed < n && g.breaker.within_budget(took);
        let Some(t) = g.breaker.record(good, Instant::now()) else { return };
        let error = match result {
            _ if good => None,
            Err(e) => Some(e.to_string()),
            Ok(()) if failed == n => Some(InferenceError::NonFinite.to_string()),
            Ok(()) => Some(format!("the primary took {took:?}, over the batch budget")),
        };
        let primary = self.models.primary_ref().expect("judged only when the primary ran");
        if let Some(r) = g.reporter.as_mut() {
            r.report(t, error.as_deref(), primary);
        }
    }

    /// Scores the rows nothing served with the fallback. True when any row is now served.
    fn serve_failed_rows<O>(
        &mut self,
        batch: &[Job<O>],
        result: &Result<(), InferenceError>,
        use_primary: bool,
        h: usize,
    ) -> bool {
        let g = self.guard.as_mut().expect("called only with a fallback");
        if !self.group.gather(batch, |i, _| self.rows[i] == RowStatus::Failed) {
            return false;
        }
        if let Err(error) = result {
            if use_primary && self.last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.last_warn = Some(Instant::now());
                tracing::warn!(%error, batch = batch.len(), "Primary inference failed; the fallback serves this batch.");
            }
        }
        self.outputs.resize(batch.len() * h, f32::NAN);
        // A naive fallback next to a quantile primary gives one value per step: it stands for
        // every quantile of its step (the dispatcher then publishes no quantiles for the row).
        let fw = g.fallback.width();
        let per_step = h / fw.max(1);
        match self.group.predict(&mut g.fallback) {
            Ok(_) => {
                for (i, out) in self.group.scattered(fw) {
                    if out.iter().all(|v| v.is_finite()) {
                        let row = &mut self.outputs[i * h..(i + 1) * h];
                        for (chunk, v) in row.chunks_exact_mut(per_step).zip(out) {
                            chunk.fill(*v);
                        }
                        self.rows[i] = RowStatus::Fallback;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "The fallback failed too."),
        }
        self.rows.iter().any(|r| *r != RowStatus::Failed)
    }

    /// The primary's (and the variants') predictions for one batch, through the cache if any.
    fn score_primary<O>(
        &mut self,
        batch: &mut [Job<O>],
        h: usize,
        primary_time: &mut Duration,
        shadow_ok: &mut bool,
    ) -> Result<(), InferenceError> {
        self.outputs.clear();
        self.outputs.resize(batch.len() * h, 0.0);
        if self.models.has_variants() {
            self.score_candidate(batch, h);
            *primary_time = self.score_primary_rows(batch, h, |_, job| !job.candidate)?;
            *shadow_ok = self.score_shadow(batch);
            Ok(())
        } else if self.cache.is_some() {
            self.score_cached(batch, h, primary_time)
        } else {
            *primary_time = self.score_primary_rows(batch, h, |_, _| true)?;
            Ok(())
        }
    }

    /// Scores the rows `pick` selects with the primary; returns its call's time.
    fn score_primary_rows<O>(
        &mut self,
        batch: &[Job<O>],
        h: usize,
        pick: impl FnMut(usize, &Job<O>) -> bool,
    ) -> Result<Duration, InferenceError> {
        if !self.group.gather(batch, pick) {
            return Ok(Duration::ZERO);
        }
        let model = self.models.primary_mut().expect("scored only with a primary");
        let took = self.group.predict(model)?;
        self.group.scatter(h, &mut self.outputs);
        Ok(took)
    }

    /// Scores candidate-routed rows with the candidate. A candidate that fails hands its rows to
    /// the primary (they go out as primary predictions).
    fn score_candidate<O>(&mut self, batch: &mut [Job<O>], h: usize) {
        let Some(candidate) = self.models.candidate_mut() else {
            // No active candidate: every row is the primary's.
            for job in batch.iter_mut() {
                job.candidate = false;
            }
            return;
        };
        if !self.group.gather(batch, |_, job| job.candidate) {
            return;
        }
        match self.group.predict(candidate) {
            Ok(_) => self.group.scatter(h, &mut self.outputs),
            Err(error) => {
                tracing::warn!(%error, rows = self.group.rows.len(), "Candidate inference failed; the primary scores its rows.");
                for &i in &self.group.rows {
                    batch[i].candidate = false;
                }
            }
        }
    }

    /// Scores every row with the shadow; a shadow that fails only loses its output.
    fn score_shadow<O>(&mut self, batch: &[Job<O>]) -> bool {
        self.shadow_outputs.clear();
        let Some(shadow) = self.models.shadow_mut() else { return false };
        self.group.gather(batch, |_, _| true);
        match self.group.predict(shadow) {
            Ok(_) if self.group.outputs.iter().all(|v| v.is_finite()) => {
                std::mem::swap(&mut self.shadow_outputs, &mut self.group.outputs);
                true
            }
            Ok(_) => {
                tracing::debug!("Shadow produced non-finite predictions; its batch output is dropped.");
                false
            }
            Err(error) => {
                tracing::warn!(%error, "Shadow inference failed; its batch output is dropped.");
                false
            }
        }
    }

    /// Fills `outputs` from the cache where it can and runs the primary on the rest only.
    fn score_cached<O>(
        &mut self,
        batch: &[Job<O>],
        h: usize,
        primary_time: &mut Duration,
    ) -> Result<(), InferenceError> {
        let model = self.models.primary_mut().expect("scored only with a primary");
        // Owned: the model is borrowed mutably to run the misses while the version is in use.
        let version = model.model_ref().version.clone();
        let cache = self.cache.as_mut().expect("called only with a cache");
        let outputs = &mut self.outputs;
        let any_miss = self.group.gather(batch, |i, job| match cache.get(&version, &job.input) {
            Some(hit) => {
                outputs[i * h..(i + 1) * h].copy_from_slice(hit);
                false
            }
            None => true,
        });
        if !any_miss {
            return Ok(());
        }
        *primary_time = self.group.predict(model)?;
        for (i, out) in self.group.scattered(h) {
            self.outputs[i * h..(i + 1) * h].copy_from_slice(out);
            if out.iter().all(|v| v.is_finite()) {
                cache.put(&version, &batch[i].input, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::config::FallbackKind;
    use crate::inference::breaker::BreakerOptions;
    use crate::inference::fallback::Naive;
    use crate::inference::{BatchOutcome, Model, SessionOptions};

    /// `co2-flaky` predicts NaN once co2 exceeds 900 ppm (`scripts/make_fault_fixture.py`).
    fn flaky() -> Model {
        let dir = std::path::Path::new("tests/fixtures/models/co2-flaky/1");
        Model::load(Bundle::load(dir).unwrap(), SessionOptions::default()).unwrap()
    }

    fn window(co2: f32) -> Vec<f32> {
        (0..24).flat_map(|t| [co2 + t as f32 * 0.1, 0.5, -0.5]).collect()
    }

    #[derive(Default)]
    struct Rows(Vec<(RowStatus, Option<f32>, String)>);
    impl JobSink<()> for Rows {
        fn batch(&mut self, o: BatchOutcome<'_, ()>) {
            for (i, status) in o.rows.iter().enumerate() {
                let value = o.result.ok().map(|p| p[i * o.horizon]);
                let served = match status {
                    RowStatus::Fallback => o.fallback.unwrap().version.clone(),
                    _ => o.model.version.clone(),
                };
                self.0.push((*status, value.filter(|_| *status != RowStatus::Failed), served));
            }
        }
    }

    fn poisoned_batch() -> Vec<Job<()>> {
        [350.0, 950.0, 360.0].iter().map(|c| Job { input: window(*c), candidate: false, origin: () }).collect()
    }

    #[test]
    fn a_non_finite_row_fails_alone_or_goes_to_the_fallback() {
        let mut alone = Scorer::new(ModelSet::new(Some(flaky())));
        let mut rows = Rows::default();
        alone.score(&mut poisoned_batch(), &mut rows);
        let status: Vec<RowStatus> = rows.0.iter().map(|r| r.0).collect();
        assert_eq!(status, [RowStatus::Model, RowStatus::Failed, RowStatus::Model], "neighbours keep their rows");

        let manifest = flaky().bundle().manifest.clone();
        let naive = Naive::for_manifest(&manifest, FallbackKind::LastValue, 0).unwrap();
        let options = BreakerOptions::from(&crate::config::FallbackConfig::default());
        let mut guarded = Scorer::new(ModelSet::new(Some(flaky()))).with_fallback(
            FallbackModel::Naive(naive),
            Breaker::new(options),
            None,
        );
        let mut rows = Rows::default();
        guarded.score(&mut poisoned_batch(), &mut rows);
        assert_eq!(rows.0[1].0, RowStatus::Fallback);
        // Last value of the poisoned window: its newest co2, 950 + 23 · 0.1.
        assert!((rows.0[1].1.unwrap() - 952.3).abs() < 1e-3, "{:?}", rows.0[1]);
        assert_eq!(rows.0[1].2, "fallback-last_value");
        assert_eq!((rows.0[0].0, rows.0[2].0), (RowStatus::Model, RowStatus::Model));
        assert!(rows.0[0].1.unwrap().is_finite());
    }

    #[test]
    fn without_a_primary_the_fallback_serves_every_row_until_a_reload() {
        let manifest = flaky().bundle().manifest.clone();
        let naive = Naive::for_manifest(&manifest, FallbackKind::LastValue, 0).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let options = BreakerOptions::from(&crate::config::FallbackConfig::default());
        let mut s = Scorer::new(ModelSet::new(None).with_reloads(rx)).with_fallback(
            FallbackModel::Naive(naive),
            Breaker::new(options),
            None,
        );
        let mut rows = Rows::default();
        s.score(&mut poisoned_batch(), &mut rows);
        assert!(rows.0.iter().all(|r| r.0 == RowStatus::Fallback), "{:?}", rows.0);
        tx.send(flaky()).unwrap();
        s.apply_pending();
        let mut rows = Rows::default();
        s.score(&mut poisoned_batch(), &mut rows);
        let status: Vec<RowStatus> = rows.0.iter().map(|r| r.0).collect();
        assert_eq!(status, [RowStatus::Model, RowStatus::Fallback, RowStatus::Model]);
    }
}
