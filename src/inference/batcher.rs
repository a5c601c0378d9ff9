//! The inference thread: collects jobs into micro-batches (up to `max_batch_size`, waiting at
//! most `max_wait` after the first job) and scores each batch with one ONNX Runtime call.
//!
//! It runs on a dedicated OS thread, never on an async worker, and reads from a bounded channel,
//! so a slow model backs up into the consumer instead of into memory.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::{InferenceError, Model};
use crate::event::ModelRef;

/// One window to score, with whatever its origin needs to route the result.
#[derive(Debug)]
pub struct Job<O> {
    /// `T·F` raw values, time-major.
    pub input: Vec<f32>,
    pub origin: O,
}

/// Receives the results of each batch, in the order the jobs arrived.
pub trait JobSink<O> {
    fn batch(&mut self, outcome: BatchOutcome<'_, O>);
}

/// The result of one batch.
pub struct BatchOutcome<'a, O> {
    pub jobs: &'a mut Vec<Job<O>>,
    /// `jobs.len() · H` predictions, or the error that failed the whole batch.
    pub result: Result<&'a [f32], &'a InferenceError>,
    pub model: &'a ModelRef,
    pub horizon: usize,
    pub inference_time: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchingOptions {
    pub max_batch_size: usize,
    pub max_wait: Duration,
}

/// Owns the model and the reusable batch buffers.
pub struct Batcher {
    model: Model,
    options: BatchingOptions,
    inputs: Vec<f32>,
    outputs: Vec<f32>,
    /// Validated, warmed-up replacement models from the registry watcher.
    reloads: Option<Receiver<Model>>,
}

impl Batcher {
    pub fn new(model: Model, options: BatchingOptions) -> Batcher {
        Batcher { model, options, inputs: Vec::new(), outputs: Vec::new(), reloads: None }
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
                from = %self.model.model_ref().version,
                to = %next.model_ref().version,
                model = %next.model_ref().name,
                "Model swapped."
            );
            self.model = next;
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
            self.score(&mut batch, sink);
            batch.clear();
            if disconnected {
                return;
            }
        }
    }

    /// Scores one batch and hands it to `sink`.
    pub fn score<O, S: JobSink<O>>(&mut self, batch: &mut Vec<Job<O>>, sink: &mut S) {
        self.inputs.clear();
        for job in batch.iter() {
            self.inputs.extend_from_slice(&job.input);
        }
        let start = Instant::now();
        let result = self.model.predict(&self.inputs, batch.len(), &mut self.outputs);
        let inference_time = start.elapsed();
        let horizon = self.model.horizon();
        let outcome = BatchOutcome {
            jobs: batch,
            result: match &result {
                Ok(()) => Ok(&self.outputs),
                Err(e) => Err(e),
            },
            model: self.model.model_ref(),
            horizon,
            inference_time,
        };
        sink.batch(outcome);
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
}
