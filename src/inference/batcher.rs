//! The inference thread: collects jobs into micro-batches (up to `max_batch_size`, waiting at
//! most `max_wait` after the first job) and scores each batch with one ONNX Runtime call.
//!
//! It runs on a dedicated OS thread, never on an async worker, and reads from a bounded channel,
//! so a slow model backs up into the consumer instead of into memory.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::breaker::{Breaker, FallbackModel, Transition};
use super::cache::PredictionCache;
use super::{InferenceError, Model};
use crate::event::ModelRef;

/// One window to score, with whatever its origin needs to route the result.
#[derive(Debug)]
pub struct Job<O> {
    /// `T·F` raw values, time-major.
    pub input: Vec<f32>,
    /// Routed to the A/B candidate (ignored when none is configured).
    pub candidate: bool,
    pub origin: O,
}

/// Receives the results of each batch, in the order the jobs arrived.
pub trait JobSink<O> {
    /// A batch is about to be scored (for an in-flight gauge).
    fn batch_started(&mut self) {}
    fn batch(&mut self, outcome: BatchOutcome<'_, O>);
}

/// How one row of a batch was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// By the model it was routed to (primary or candidate).
    Model,
    /// By the fallback.
    Fallback,
    /// By nothing: a non-finite output and no (working) fallback.
    Failed,
}

/// The result of one batch.
pub struct BatchOutcome<'a, O> {
    pub jobs: &'a mut Vec<Job<O>>,
    /// `jobs.len() · H` predictions (rows marked `Failed` in `rows` hold garbage), or the error
    /// that failed the whole batch.
    pub result: Result<&'a [f32], &'a InferenceError>,
    /// Per job, when `result` is `Ok`: who served it.
    pub rows: &'a [RowStatus],
    pub model: &'a ModelRef,
    pub horizon: usize,
    pub inference_time: Duration,
    /// Cache hits and misses of this batch (both zero without a cache).
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// The candidate's model when one is configured: jobs with `candidate` were scored by it.
    pub candidate: Option<&'a ModelRef>,
    /// The shadow model and its predictions for every job (`jobs.len() · H`), when configured.
    pub shadow: Option<(&'a ModelRef, &'a [f32])>,
    /// The fallback, which served the rows marked `Fallback`.
    pub fallback: Option<&'a ModelRef>,
    /// The breaker changed state with this batch, with the primary's last error if any.
    pub breaker: Option<(Transition, Option<String>)>,
}

/// A label-driven decision about the A/B candidate, applied between two batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantControl {
    /// Stop routing to the candidate of this version: its series go back to the primary.
    Rollback { candidate_version: String },
    /// The candidate of this version becomes the primary for all series.
    Promote { candidate_version: String },
}

#[derive(Debug, Clone, Copy)]
pub struct BatchingOptions {
    pub max_batch_size: usize,
    pub max_wait: Duration,
}

/// Owns the model and the reusable batch buffers.
pub struct Batcher {
    /// The primary; `None` while a primary that failed to load is replaced by the fallback.
    model: Option<Model>,
    horizon: usize,
    /// The primary came back (a reload after a failed load): report the breaker closed.
    recovered: bool,
    options: BatchingOptions,
    inputs: Vec<f32>,
    outputs: Vec<f32>,
    /// Validated, warmed-up replacement models from the registry watcher.
    reloads: Option<Receiver<Model>>,
    cache: Option<PredictionCache>,
    candidate: Option<Model>,
    shadow: Option<Model>,
    shadow_outputs: Vec<f32>,
    /// Rows of the current batch that missed the cache, and their inputs.
    misses: Vec<usize>,
    miss_inputs: Vec<f32>,
    miss_outputs: Vec<f32>,
    /// The fallback and the breaker that decides when it serves.
    fallback: Option<(FallbackModel, Breaker)>,
    controls: Option<Receiver<VariantControl>>,
    /// Who served each row of the current batch.
    rows: Vec<RowStatus>,
    /// The primary's own inference time in the current batch (what the budget judges).
    primary_time: Duration,
    /// The shadow scored the current batch.
    shadow_ok: bool,
    /// False after a rollback: the candidate stays loaded (a later promotion can still apply)
    /// but gets no rows.
    candidate_active: bool,
    /// The primary a promotion replaced, kept so a rollback of that promotion can restore it.
    demoted: Option<Model>,
    last_warn: Option<Instant>,
}

impl Batcher {
    pub fn new(model: Model, options: BatchingOptions) -> Batcher {
        let mut b = Batcher::new_empty(model.horizon(), options);
        b.model = Some(model);
        b
    }

    /// Serves batches with `fallback` while `breaker` is open, and any batch the primary fails.
    pub fn with_fallback(mut self, fallback: FallbackModel, breaker: Breaker) -> Batcher {
        self.fallback = Some((fallback, breaker));
        self
    }

    /// A batcher whose primary failed to load: `fallback` serves every batch until the registry
    /// hands over a valid version.
    pub fn without_primary(fallback: FallbackModel, breaker: Breaker, options: BatchingOptions) -> Batcher {
        let horizon = fallback.horizon();
        let mut b = Batcher::new_empty(horizon, options);
        b.fallback = Some((fallback, breaker));
        b
    }

    fn new_empty(horizon: usize, options: BatchingOptions) -> Batcher {
        Batcher {
            model: None,
            horizon,
            recovered: false,
            options,
            inputs: Vec::new(),
            outputs: Vec::new(),
            reloads: None,
            cache: None,
            candidate: None,
            shadow: None,
            shadow_outputs: Vec::new(),
            misses: Vec::new(),
            miss_inputs: Vec::new(),
            miss_outputs: Vec::new(),
            fallback: None,
            controls: None,
            rows: Vec::new(),
            primary_time: Duration::ZERO,
            shadow_ok: false,
            candidate_active: true,
            demoted: None,
            last_warn: None,
        }
    }

    fn primary_version(&self) -> &str {
        self.model.as_ref().map_or("(none)", |m| m.model_ref().version.as_str())
    }

    /// Accepts rollback and promotion decisions about the candidate.
    pub fn with_controls(mut self, controls: Receiver<VariantControl>) -> Batcher {
        self.controls = Some(controls);
        self
    }

    /// Applies pending decisions, in order, so the latest one wins (an operator can undo an
    /// automatic decision). A decision naming another version than the configured candidate is
    /// ignored, and repeating one changes nothing: replaying the decision log is harmless.
    ///
    /// Split (candidate gets its share) → rollback → candidate loaded but idle; → promote →
    /// candidate is the primary, the old primary kept; rollback then restores it.
    fn apply_controls(&mut self) {
        let Some(rx) = &self.controls else { return };
        let pending: Vec<VariantControl> = rx.try_iter().collect();
        for control in pending {
            let (VariantControl::Rollback { candidate_version: v } | VariantControl::Promote { candidate_version: v }) =
                &control;
            let is_candidate = self.candidate.as_ref().is_some_and(|c| c.model_ref().version == *v);
            let is_promoted =
                self.demoted.is_some() && self.model.as_ref().is_some_and(|m| m.model_ref().version == *v);
            match control {
                VariantControl::Rollback { .. } if is_candidate && self.candidate_active => {
                    self.candidate_active = false;
                    tracing::warn!(candidate = %v, primary = %self.primary_version(), "Candidate rolled back: its series are served by the primary again.");
                }
                VariantControl::Rollback { .. } if is_promoted => {
                    let previous = self.demoted.take().expect("checked above");
                    tracing::warn!(candidate = %v, primary = %previous.model_ref().version, "Promotion rolled back: the previous primary serves every series again.");
                    self.candidate = self.model.replace(previous);
                    self.candidate_active = false;
                }
                VariantControl::Promote { .. } if is_candidate => {
                    tracing::warn!(from = %self.primary_version(), to = %v, "Candidate promoted: it now serves every series as the primary.");
                    self.recovered |= self.model.is_none();
                    self.demoted = std::mem::replace(&mut self.model, self.candidate.take());
                    self.candidate_active = false;
                }
                _ => continue,
            }
            if let Some(m) = &self.model {
                self.horizon = m.horizon();
            }
        }
    }

    /// Serves repeated windows from a bounded LRU of `capacity` predictions.
    pub fn with_cache(mut self, capacity: usize) -> Batcher {
        self.cache = Some(PredictionCache::new(capacity));
        self
    }

    /// Scores jobs routed to the candidate with `candidate`, and every job also with `shadow`.
    /// The cache is not used with variants: it is meant for single-model replays.
    pub fn with_variants(mut self, candidate: Option<Model>, shadow: Option<Model>) -> Batcher {
        self.candidate = candidate;
        self.shadow = shadow;
        self
    }

    /// Cache hits and misses so far (zero without a cache).
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.as_ref().map_or((0, 0), |c| (c.hits, c.misses))
    }

    /// Accepts replacement models on `reloads`; each is swapped in between two batches, so no
    /// batch is scored by two models and no event waits for a load.
    pub fn with_reloads(mut self, reloads: Receiver<Model>) -> Batcher {
        self.reloads = Some(reloads);
        self
    }

    fn swap_if_reloaded(&mut self) {
        let Some(rx) = &self.reloads else { return };
        while let Ok(next) = rx.try_recv() {
            tracing::info!(
                from = %self.primary_version(),
                to = %next.model_ref().version,
                model = %next.model_ref().name,
                "Model swapped."
            );
            self.recovered |= self.model.is_none();
            self.horizon = next.horizon();
            self.model = Some(next);
        }
    }

    /// Runs until every sender of `jobs` is dropped and the queue is drained.
    pub fn run<O, S: JobSink<O>>(mut self, jobs: Receiver<Job<O>>, sink: &mut S) {
        let mut batch: Vec<Job<O>> = Vec::with_capacity(self.options.max_batch_size);
        loop {
            match jobs.recv() {
                Ok(first) => batch.push(first),
                Err(_) => return,
            }
            let deadline = Instant::now() + self.options.max_wait;
            let mut disconnected = false;
            while batch.len() < self.options.max_batch_size {
                let left = deadline.saturating_duration_since(Instant::now());
                // Take whatever is already queued even when the wait is over.
                let next = if left.is_zero() {
                    jobs.try_recv().map_err(|e| match e {
                        TryRecvError::Empty => RecvTimeoutError::Timeout,
                        TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    })
                } else {
                    jobs.recv_timeout(left)
                };
                match next {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            self.swap_if_reloaded();
            self.apply_controls();
            self.score(&mut batch, sink);
            batch.clear();
            if disconnected {
                return;
            }
        }
    }

    /// Scores one batch and hands it to `sink`.
    pub fn score<O, S: JobSink<O>>(&mut self, batch: &mut Vec<Job<O>>, sink: &mut S) {
        sink.batch_started();
        let start = Instant::now();
        let (hits0, misses0) = self.cache_counts();
        let (n, h) = (batch.len(), self.horizon);
        let mut breaker_transition = None;
        if std::mem::take(&mut self.recovered) {
            if let Some((_, breaker)) = self.fallback.as_mut() {
                breaker.reset();
                breaker_transition = Some((Transition::Closed, None));
            }
        }
        let use_primary =
            self.model.is_some() && self.fallback.as_mut().is_none_or(|(_, breaker)| breaker.allow_primary(start));
        self.primary_time = Duration::ZERO;
        self.shadow_ok = false;
        let mut result = if use_primary { self.score_primary(batch) } else { Err(InferenceError::BreakerOpen) };
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
        let failed = self.rows.iter().filter(|r| **r == RowStatus::Failed).count();
        if let Some((fallback, breaker)) = self.fallback.as_mut() {
            if use_primary {
                // Judged on the primary's own call: an error, no usable row at all, or over budget.
                let good = result.is_ok() && failed < n && breaker.within_budget(self.primary_time);
                if let Some(t) = breaker.record(good, Instant::now()) {
                    let error = match &result {
                        Err(e) => Some(e.to_string()),
                        Ok(()) if failed == n => Some(InferenceError::NonFinite.to_string()),
                        Ok(()) => Some(format!("the primary took {:?}, over the batch budget", self.primary_time)),
                    };
                    breaker_transition = Some((t, error.filter(|_| !good)));
                }
            }
            if failed > 0 {
                if let Err(error) = &result {
                    if use_primary && self.last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        self.last_warn = Some(Instant::now());
                        tracing::warn!(%error, batch = n, "Primary inference failed; the fallback serves this batch.");
                    }
                }
                self.outputs.resize(n * h, f32::NAN);
                self.misses.clear();
                self.miss_inputs.clear();
                for (i, job) in batch.iter().enumerate() {
                    if self.rows[i] == RowStatus::Failed {
                        self.misses.push(i);
                        self.miss_inputs.extend_from_slice(&job.input);
                    }
                }
                match fallback.predict_rows(&self.miss_inputs, self.misses.len(), &mut self.miss_outputs) {
                    Ok(()) => {
                        for (k, &i) in self.misses.iter().enumerate() {
                            let out = &self.miss_outputs[k * h..(k + 1) * h];
                            if out.iter().all(|v| v.is_finite()) {
                                self.outputs[i * h..(i + 1) * h].copy_from_slice(out);
                                self.rows[i] = RowStatus::Fallback;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "The fallback failed too."),
                }
                if self.rows.iter().any(|r| *r != RowStatus::Failed) {
                    result = Ok(());
                }
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
            model: match (&self.model, &self.fallback) {
                (Some(m), _) => m.model_ref(),
                (None, Some((f, _))) => f.model_ref(),
                (None, None) => unreachable!("a batcher without a primary always has a fallback"),
            },
            horizon: h,
            inference_time,
            cache_hits: hits1 - hits0,
            cache_misses: misses1 - misses0,
            candidate: self.candidate.as_ref().filter(|_| self.candidate_active).map(Model::model_ref),
            shadow: self.shadow.as_ref().filter(|_| self.shadow_ok).map(|m| (m.model_ref(), &self.shadow_outputs[..])),
            fallback: self.fallback.as_ref().map(|(f, _)| f.model_ref()),
            breaker: breaker_transition,
        };
        sink.batch(outcome);
    }

    /// The primary's (and the variants') predictions for one batch, through the cache if any.
    /// Sets `primary_time` to the primary's own call.
    fn score_primary<O>(&mut self, batch: &mut [Job<O>]) -> Result<(), InferenceError> {
        let variants = self.active_candidate().is_some() || self.shadow.is_some();
        match self.cache.is_some() && !variants {
            false if variants => self.score_variants(batch),
            false => {
                self.inputs.clear();
                for job in batch.iter() {
                    self.inputs.extend_from_slice(&job.input);
                }
                let model = self.model.as_mut().expect("scored only with a primary");
                let t = Instant::now();
                let r = model.predict_rows(&self.inputs, batch.len(), &mut self.outputs);
                self.primary_time = t.elapsed();
                r
            }
            true => self.score_cached(batch),
        }
    }

    fn active_candidate(&self) -> Option<&Model> {
        self.candidate.as_ref().filter(|_| self.candidate_active)
    }

    /// Scores candidate-routed rows with the candidate, the others with the primary, and all rows
    /// with the shadow, each model in one call. A candidate that fails hands its rows to the
    /// primary (they go out as primary predictions); a shadow that fails only loses its output.
    fn score_variants<O>(&mut self, batch: &mut [Job<O>]) -> Result<(), InferenceError> {
        let h = self.horizon;
        self.outputs.clear();
        self.outputs.resize(batch.len() * h, 0.0);
        let has_candidate = self.active_candidate().is_some();
        if let Some(candidate) = self.candidate.as_mut().filter(|_| self.candidate_active) {
            self.misses.clear();
            self.miss_inputs.clear();
            for (i, job) in batch.iter().enumerate() {
                if job.candidate {
                    self.misses.push(i);
                    self.miss_inputs.extend_from_slice(&job.input);
                }
            }
            if !self.misses.is_empty() {
                match candidate.predict_rows(&self.miss_inputs, self.misses.len(), &mut self.miss_outputs) {
                    Ok(()) => {
                        for (k, &i) in self.misses.iter().enumerate() {
                            self.outputs[i * h..(i + 1) * h].copy_from_slice(&self.miss_outputs[k * h..(k + 1) * h]);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, rows = self.misses.len(), "Candidate inference failed; the primary scores its rows.");
                        for &i in &self.misses {
                            batch[i].candidate = false;
                        }
                    }
                }
            }
        }
        self.misses.clear();
        self.miss_inputs.clear();
        for (i, job) in batch.iter().enumerate() {
            if !(has_candidate && job.candidate) {
                self.misses.push(i);
                self.miss_inputs.extend_from_slice(&job.input);
            }
        }
        if !self.misses.is_empty() {
            let model = self.model.as_mut().expect("scored only with a primary");
            let t = Instant::now();
            let r = model.predict_rows(&self.miss_inputs, self.misses.len(), &mut self.miss_outputs);
            self.primary_time = t.elapsed();
            r?;
            for (k, &i) in self.misses.iter().enumerate() {
                self.outputs[i * h..(i + 1) * h].copy_from_slice(&self.miss_outputs[k * h..(k + 1) * h]);
            }
        }
        self.shadow_outputs.clear();
        if let Some(shadow) = self.shadow.as_mut() {
            self.inputs.clear();
            for job in batch.iter() {
                self.inputs.extend_from_slice(&job.input);
            }
            match shadow.predict_rows(&self.inputs, batch.len(), &mut self.shadow_outputs) {
                Ok(()) if self.shadow_outputs.iter().all(|v| v.is_finite()) => self.shadow_ok = true,
                Ok(()) => tracing::debug!("Shadow produced non-finite predictions; its batch output is dropped."),
                Err(error) => tracing::warn!(%error, "Shadow inference failed; its batch output is dropped."),
            }
        }
        Ok(())
    }

    /// Fills `outputs` from the cache where it can and runs the model on the rest only.
    fn score_cached<O>(&mut self, batch: &[Job<O>]) -> Result<(), InferenceError> {
        let h = self.horizon;
        // Owned: the model is borrowed mutably to run the misses while the version is in use.
        let version = self.primary_version().to_string();
        let cache = self.cache.as_mut().expect("called only with a cache");
        self.outputs.clear();
        self.outputs.resize(batch.len() * h, 0.0);
        self.misses.clear();
        self.miss_inputs.clear();
        for (i, job) in batch.iter().enumerate() {
            match cache.get(&version, &job.input) {
                Some(hit) => self.outputs[i * h..(i + 1) * h].copy_from_slice(hit),
                None => {
                    self.misses.push(i);
                    self.miss_inputs.extend_from_slice(&job.input);
                }
            }
        }
        if self.misses.is_empty() {
            return Ok(());
        }
        let model = self.model.as_mut().expect("scored only with a primary");
        let t = Instant::now();
        let r = model.predict_rows(&self.miss_inputs, self.misses.len(), &mut self.miss_outputs);
        self.primary_time = t.elapsed();
        r?;
        for (k, &i) in self.misses.iter().enumerate() {
            let out = &self.miss_outputs[k * h..(k + 1) * h];
            self.outputs[i * h..(i + 1) * h].copy_from_slice(out);
            if out.iter().all(|v| v.is_finite()) {
                cache.put(&version, &batch[i].input, out);
            }
        }
        Ok(())
    }

    /// The primary; `None` while the fallback stands in for a primary that failed to load.
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::inference::SessionOptions;

    struct Collect(Vec<Vec<f32>>);
    impl JobSink<()> for Collect {
        fn batch(&mut self, outcome: BatchOutcome<'_, ()>) {
            let out = outcome.result.expect("inference works");
            self.0.extend(out.chunks(outcome.horizon).map(<[f32]>::to_vec));
        }
    }

    fn batcher(cache: Option<usize>) -> Batcher {
        let bundle = Bundle::load(std::path::Path::new("models/co2-gru/1")).unwrap();
        let model = Model::load(bundle, SessionOptions::default()).unwrap();
        let b = Batcher::new(model, BatchingOptions { max_batch_size: 8, max_wait: Duration::from_millis(1) });
        match cache {
            Some(n) => b.with_cache(n),
            None => b,
        }
    }

    fn window(shift: f32) -> Vec<f32> {
        (0..16).flat_map(|t| [340.0 + shift + t as f32 * 0.1, 0.5, -0.5]).collect()
    }

    /// Which model version served each job.
    struct Served(Vec<String>);
    impl JobSink<()> for Served {
        fn batch(&mut self, o: BatchOutcome<'_, ()>) {
            assert!(o.rows.iter().all(|r| *r == RowStatus::Model));
            for job in o.jobs.iter() {
                let m = match (job.candidate, o.candidate) {
                    (true, Some(c)) => c,
                    _ => o.model,
                };
                self.0.push(m.version.clone());
            }
        }
    }

    #[test]
    fn decisions_apply_in_order_and_a_rollback_undoes_a_promotion() {
        let load = |v: &str| {
            let dir = format!("models/co2-mlp/{v}");
            Model::load(Bundle::load(std::path::Path::new(&dir)).unwrap(), SessionOptions::default()).unwrap()
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let options = BatchingOptions { max_batch_size: 8, max_wait: Duration::from_millis(1) };
        let mut b = Batcher::new(load("1"), options).with_variants(Some(load("2")), None).with_controls(rx);
        let round = |b: &mut Batcher, controls: &[VariantControl]| {
            for c in controls {
                tx.send(c.clone()).unwrap();
            }
            b.apply_controls();
            let mut sink = Served(Vec::new());
            let window: Vec<f32> = (0..24).flat_map(|t| [340.0 + t as f32, 0.5, -0.5]).collect();
            let mut jobs = vec![
                Job { input: window.clone(), candidate: true, origin: () },
                Job { input: window, candidate: false, origin: () },
            ];
            b.score(&mut jobs, &mut sink);
            sink.0
        };
        let (rollback, promote) = (
            VariantControl::Rollback { candidate_version: "2".into() },
            VariantControl::Promote { candidate_version: "2".into() },
        );
        assert_eq!(round(&mut b, &[]), ["2", "1"], "split: each row by its routed model");
        assert_eq!(round(&mut b, std::slice::from_ref(&rollback)), ["1", "1"]);
        assert_eq!(round(&mut b, std::slice::from_ref(&promote)), ["2", "2"], "an operator's later promotion wins");
        assert_eq!(round(&mut b, std::slice::from_ref(&promote)), ["2", "2"], "repeats change nothing");
        assert_eq!(
            round(&mut b, std::slice::from_ref(&rollback)),
            ["1", "1"],
            "rolling a promotion back restores the primary"
        );
        let other = VariantControl::Promote { candidate_version: "3".into() };
        assert_eq!(round(&mut b, &[other]), ["1", "1"], "decisions about other versions are ignored");
        assert_eq!(round(&mut b, &[rollback, promote]), ["2", "2"], "several pending: applied in order");
    }

    #[test]
    fn cache_counts_hits_and_misses_and_returns_the_uncached_values() {
        let jobs =
            |ws: &[f32]| ws.iter().map(|s| Job { input: window(*s), candidate: false, origin: () }).collect::<Vec<_>>();
        let mut plain = batcher(None);
        let mut cached = batcher(Some(100));
        let (mut a, mut b) = (Collect(Vec::new()), Collect(Vec::new()));
        for batch in [[0.0, 1.0, 0.0], [1.0, 2.0, 0.0], [3.0, 3.0, 2.0]] {
            plain.score(&mut jobs(&batch), &mut a);
            cached.score(&mut jobs(&batch), &mut b);
        }
        // Lookups happen before a batch runs: repeats inside one batch miss, later ones hit.
        // Batch 1: 0 miss, 1 miss, 0 miss. Batch 2: 1 hit, 2 miss, 0 hit. Batch 3: 3 miss, 3 miss, 2 hit.
        assert_eq!(cached.cache_counts(), (3, 6));
        assert_eq!(a.0, b.0, "cached predictions equal uncached ones bit for bit");
    }
}
