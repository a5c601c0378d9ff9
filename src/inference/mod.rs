//! ONNX Runtime inference: library loading, validated model sessions, and the micro-batching
//! inference thread.
//!
//! - [`runtime`]: finds `libonnxruntime.so` and creates the process-wide environment.
//! - [`model`]: a bundle plus its session; signature and golden checks; CUDA/CPU choice.
//! - [`model_set`]: the primary, candidate and shadow; reloads and variant decisions.
//! - [`fallback`]: what serves when the primary cannot (second bundle or naive forecast).
//! - [`breaker`]: the circuit breaker that decides when the fallback serves, and its alerts.
//! - [`cache`]: the optional LRU of predictions for repeated windows.
//! - [`scorer`]: scores one batch: routing, cache, fallback (the one gather → predict → scatter).
//! - [`batcher`]: the dedicated thread that collects micro-batches for the scorer.

pub mod batcher;
pub mod breaker;
pub mod cache;
pub mod fallback;
pub mod model;
pub mod model_set;
pub mod runtime;
pub mod scorer;

pub use batcher::{BatchOutcome, Batcher, BatchingOptions, Job, JobSink};
pub use model::{Model, Provider, ProviderReport, SessionOptions};
pub use model_set::{ModelSet, VariantControl};
pub use scorer::Scorer;

use crate::bundle::BundleError;

/// Errors at the inference boundary.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// ONNX Runtime itself cannot be loaded or set up.
    #[error("{0}")]
    Runtime(String),
    /// `execution_provider = "cuda"` was asked for and cannot be had.
    #[error("CUDA execution provider requested but unavailable: {0}")]
    Cuda(String),
    /// The bundle failed a check that needs the model (names, shapes, golden cases).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("unexpected tensor shape: {0}")]
    Shape(String),
    #[error("the model produced a non-finite prediction")]
    NonFinite,
    /// The breaker is open: the primary is not being called.
    #[error("the circuit breaker is open")]
    BreakerOpen,
}
