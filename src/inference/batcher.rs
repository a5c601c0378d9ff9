//! The inference thread: collects jobs into micro-batches and scores each batch with one ONNX
//! Runtime call.
//!
//! Batching adapts to the load with no tuning, like Triton's dynamic batcher with a small queue
//! delay. A job that finds the thread idle and the queue otherwise empty is scored at once.
//! When more were queued behind it (a burst is arriving), the batch stays open in steps as long
//! as one model call has recently taken, and starts after a step in which none came: waiting
//! longer than the call it saves costs more latency than it is worth. Under load the queue
//! fills while the previous batch runs, so batches grow to `max_batch_size` by themselves.
//! `max_wait` is only the upper bound on how long the first job of a batch waits.
//!
//! It runs on a dedicated OS thread, never on an async worker, and reads from a bounded channel,
//! so a slow model backs up into the consumer instead of into memory. What a batch is scored
//! with is the [`Scorer`]'s business; the batcher only batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::scorer::Scorer;
use super::InferenceError;
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
    /// Values per job in `result` (and `shadow`): the forecast steps, times the quantile levels
    /// of a quantile bundle.
    pub horizon: usize,
    /// A quantile bundle's levels: each row is then `horizon / Q` steps of `Q` increasing
    /// quantiles, the 0.5 level being the point forecast.
    pub quantiles: Option<&'a [f64]>,
    pub inference_time: Duration,
    /// Cache hits and misses of this batch (both zero without a cache).
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// The candidate's model when one is active: jobs with `candidate` were scored by it.
    pub candidate: Option<&'a ModelRef>,
    /// The shadow model and its predictions for every job (`jobs.len() · H`), when configured.
    pub shadow: Option<(&'a ModelRef, &'a [f32])>,
    /// The fallback, which served the rows marked `Fallback`.
    pub fallback: Option<&'a ModelRef>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchingOptions {
    pub max_batch_size: usize,
    pub max_wait: Duration,
}

impl From<&crate::config::BatchingConfig> for BatchingOptions {
    fn from(b: &crate::config::BatchingConfig) -> Self {
        BatchingOptions { max_batch_size: b.max_batch_size, max_wait: Duration::from_millis(b.max_wait_ms) }
    }
}

/// How often an idle inference thread applies pending reloads and decisions.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Collects jobs into micro-batches and hands each to its scorer.
pub struct Batcher {
    options: BatchingOptions,
    scorer: Scorer,
}

impl Batcher {
    pub fn new(scorer: Scorer, options: BatchingOptions) -> Batcher {
        Batcher { options, scorer }
    }

    /// Runs until every sender of `jobs` is dropped and the queue is drained.
    pub fn run<O, S: JobSink<O>>(mut self, jobs: Receiver<Job<O>>, sink: &mut S) {
        let mut batch: Vec<Job<O>> = Vec::with_capacity(self.options.max_batch_size);
        let mut call = CallTime::default();
        loop {
            // Idle, reloads and decisions are still applied: their senders must never wait on
            // traffic (a SIGTERM on an idle topic would otherwise wait on them forever).
            match jobs.recv_timeout(IDLE_TICK) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {
                    self.scorer.apply_pending();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let disconnected = self.collect(&jobs, &mut batch, call.linger());
            self.scorer.apply_pending();
            call.observe(self.scorer.score(&mut batch, sink));
            batch.clear();
            if disconnected {
                return;
            }
        }
    }

    /// Adds jobs to `batch` (which holds the first) until it is full, or nothing but the first
    /// was queued, or no job came during a `linger`, or `max_wait` has passed since the first;
    /// true if the senders are gone.
    ///
    /// It sleeps and then takes what came, rather than blocking on the channel for each job:
    /// a receiver blocked on the channel must be woken by the sender for every job, one futex
    /// call on the consumer thread per event.
    fn collect<O>(&self, jobs: &Receiver<Job<O>>, batch: &mut Vec<Job<O>>, linger: Duration) -> bool {
        let deadline = Instant::now() + self.options.max_wait;
        // A lone job goes at once: nothing says more are coming.
        let mut before_sleep = 1;
        loop {
            while batch.len() < self.options.max_batch_size {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return true,
                }
            }
            if batch.len() == self.options.max_batch_size || batch.len() == before_sleep {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || linger.is_zero() {
                return false;
            }
            before_sleep = batch.len();
            std::thread::sleep(linger.min(left));
        }
    }
}

/// A running average of how long one batch's model calls take: how long a batch is worth
/// holding open for one more job.
#[derive(Debug, Default)]
struct CallTime {
    /// Exponentially weighted, in nanoseconds; zero before the first batch.
    average_ns: f64,
}

impl CallTime {
    /// The weight of the newest batch: about the last ten batches count.
    const WEIGHT: f64 = 0.1;

    fn observe(&mut self, took: Duration) {
        let ns = took.as_nanos() as f64;
        self.average_ns =
            if self.average_ns == 0.0 { ns } else { self.average_ns + Self::WEIGHT * (ns - self.average_ns) };
    }

    fn linger(&self) -> Duration {
        Duration::from_nanos(self.average_ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::inference::model_set::{ModelSet, VariantControl};
    use crate::inference::{Model, SessionOptions};

    struct Collect(Vec<Vec<f32>>);
    impl JobSink<()> for Collect {
        fn batch(&mut self, outcome: BatchOutcome<'_, ()>) {
            let out = outcome.result.expect("inference works");
            self.0.extend(out.chunks(outcome.horizon).map(<[f32]>::to_vec));
        }
    }

    fn scorer(cache: Option<usize>) -> Scorer {
        let bundle = Bundle::load(std::path::Path::new("models/co2-gru/1")).unwrap();
        let model = Model::load(bundle, SessionOptions::default()).unwrap();
        let s = Scorer::new(ModelSet::new(Some(model)));
        match cache {
            Some(n) => s.with_cache(n),
            None => s,
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
        let models = ModelSet::new(Some(load("1"))).with_variants(Some(load("2")), None).with_controls(rx);
        let mut b = Scorer::new(models);
        let round = |b: &mut Scorer, controls: &[VariantControl]| {
            for c in controls {
                tx.send(c.clone()).unwrap();
            }
            b.apply_pending();
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

    /// The size of every batch the sink was handed.
    struct Sizes(std::sync::mpsc::Sender<usize>);
    impl JobSink<()> for Sizes {
        fn batch(&mut self, o: BatchOutcome<'_, ()>) {
            let _ = self.0.send(o.jobs.len());
        }
    }

    fn batcher(max_wait: Duration) -> Batcher {
        Batcher::new(scorer(None), BatchingOptions { max_batch_size: 64, max_wait })
    }

    #[test]
    fn an_idle_batcher_starts_a_lone_job_at_once_whatever_max_wait_says() {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (sizes, scored) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || batcher(Duration::from_secs(3600)).run(rx, &mut Sizes(sizes)));
        for _ in 0..3 {
            tx.send(Job { input: window(0.0), candidate: false, origin: () }).unwrap();
            // With max_wait as a fixed delay this would take an hour.
            assert_eq!(scored.recv_timeout(Duration::from_secs(60)), Ok(1));
        }
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn queued_jobs_go_in_full_batches() {
        let (tx, rx) = std::sync::mpsc::sync_channel(200);
        for i in 0..150 {
            tx.send(Job { input: window(i as f32), candidate: false, origin: () }).unwrap();
        }
        drop(tx);
        let (sizes, scored) = std::sync::mpsc::channel();
        batcher(Duration::from_secs(3600)).run(rx, &mut Sizes(sizes));
        assert_eq!(scored.try_iter().collect::<Vec<_>>(), [64, 64, 22]);
    }

    #[test]
    fn the_linger_follows_recent_model_calls() {
        let mut c = CallTime::default();
        assert_eq!(c.linger(), Duration::ZERO, "no wait before the first batch");
        c.observe(Duration::from_micros(100));
        assert_eq!(c.linger(), Duration::from_micros(100));
        for _ in 0..100 {
            c.observe(Duration::from_micros(20));
        }
        assert!(c.linger() < Duration::from_micros(21), "{:?}", c.linger());
    }

    #[test]
    fn cache_counts_hits_and_misses_and_returns_the_uncached_values() {
        let jobs =
            |ws: &[f32]| ws.iter().map(|s| Job { input: window(*s), candidate: false, origin: () }).collect::<Vec<_>>();
        let mut plain = scorer(None);
        let mut cached = scorer(Some(100));
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
