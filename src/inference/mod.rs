//! ONNX Runtime inference: library loading, validated model sessions, and the micro-batching
//! inference thread.
//!
//! - [`runtime`]: finds `libonnxruntime.so` and creates the process-wide environment.
//! - [`model`]: a bundle plus its session; signature and golden checks; CUDA/CPU choice.
//! - [`breaker`]: the circuit breaker and the fallback (second bundle or naive forecast).
//! - [`cache`]: the optional LRU of predictions for repeated windows.
//! - [`batcher`]: the dedicated thread that owns a [`model::Model`] and scores micro-batches.

pub mod batcher;
pub mod breaker;
pub mod cache;
pub mod model;
pub mod runtime;

pub use batcher::{BatchOutcome, Batcher, BatchingOptions, Job, JobSink, VariantControl};
pub use model::{Model, Provider, ProviderReport, SessionOptions};

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
