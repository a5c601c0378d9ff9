//! streamcast: serve time-series ONNX models on Kafka.
//!
//! Follow one event: `pipeline::consumer` consumes it, [`event`] decodes it, [`window`]
//! completes it, `inference::batcher` batches it and `inference::scorer` normalizes
//! ([`normalize`]) and scores it, `pipeline::dispatch` publishes the prediction through
//! `pipeline::publish`, and the delivery report lets `pipeline::consumer` store the offset. No
//! module imports a module that imports it back (`scripts/module_cycles.py`, run by `make test`).
//!
//! # Layout
//! - [`config`]: typed TOML config with environment overrides; errors name the key.
//! - [`shutdown`]: the shutdown signal shared by all threads and tasks.
//! - [`startup_pages`]: hands the kernel back the code pages only start-up ran.
//! - [`event`]: InputEvent / Prediction / Actual types mirroring `schemas/`; decode errors;
//!   `event::scan`, the one-pass decoder for valid events (serde decodes the rest).
//! - [`bundle`]: model bundles: load, validate, resolve `latest`, stay inside the root.
//! - [`builder`]: `streamcast models build`: a bundle from an ONNX file, its scaler and a
//!   reference CSV, staged, validated and then published.
//! - [`normalize`]: scalers; pure, in-place transforms.
//! - [`window`]: bounded per-series window state.
//! - [`inference`]: ONNX Runtime loading, model sessions, the model set (primary, candidate,
//!   shadow), fallback and breaker, cache, the scorer and the micro-batching thread.
//! - [`loader`]: loading the primary, variants and fallback at start-up.
//! - [`kafka`]: Kafka client configs, topic checks, group-less readers, the one send-with-retry;
//!   `kafka::poller`, a producer served by a thread that sleeps until librdkafka has an event.
//! - [`pipeline`]: consumer loop, offset tracking, dispatch by origin, producer and dead letters.
//! - [`alert`]: typed `alerts` messages, damping (gate), and the one alert sink.
//! - [`monitor`]: the side task: actuals join, rolling error, drift, alerts, retraining triggers.
//! - [`interval`]: calibrated prediction intervals: the conformal rule, ACI, CQR, coverage, and
//!   the follower that brings the monitor's calibration to every worker replica.
//! - [`decisions`]: label-driven rollback/promotion of the A/B candidate: the rule, and the
//!   follower that applies published decisions on every replica.
//! - [`produce`]: `streamcast produce`: send a CSV/Parquet/JSONL file (and delayed actuals) to Kafka.
//! - [`model_store`]: model roots in object storage (S3, GCS, Azure, `file://`), pulled into a
//!   local cache that everything else reads as a directory root.
//! - [`registry`]: watches the model root; validates and hands new versions to the inference thread.
//! - [`serve`]: `streamcast run`: wires the model, pipeline, HTTP server and signals.
//! - [`served`]: what `/models` shows, kept current on reloads and decisions.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, `/models`, `/predict`.
//! - [`telemetry`]: logging, Prometheus metrics, and typed telemetry events.
//! - [`otel`]: optional OTLP export: messaging-convention spans per event, bridged metrics.
//! - [`topics`]: topic creation.
//! - [`batch`]: `streamcast predict`: batch prediction over a file, no Kafka.
//! - [`table`]: input files (CSV, JSONL, Parquet) read as events, for `produce` and `predict`.
//! - [`gpu_check`]: `streamcast models gpu-check`: CUDA against CPU, agreement and batch timings.
//! - [`demo`]: `streamcast demo`, the embedded default on an in-process broker.

pub mod alert;
pub mod batch;
pub mod builder;
pub mod bundle;
pub mod config;
pub mod decisions;
pub mod demo;
pub mod event;
pub mod gpu_check;
pub mod http;
pub mod inference;
pub mod interval;
pub mod kafka;
pub mod loader;
pub mod model_store;
pub mod monitor;
pub mod normalize;
pub mod otel;
pub mod pipeline;
pub mod produce;
pub mod registry;
pub mod serve;
pub mod served;
pub mod shutdown;
pub mod startup_pages;
pub mod table;
pub mod telemetry;
pub mod topics;
pub mod window;
