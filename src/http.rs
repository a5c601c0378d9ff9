//! The HTTP surface: `/healthz`, `/readyz`, `/metrics`, `/models` and `POST /predict`.
//!
//! `/predict` goes through the same decoder, bundle scaler and inference thread as the stream:
//! its events are queued next to streamed ones and scored in the same micro-batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::value::RawValue;

use crate::event::{EventValues, FeatureSchema, InputEvent, Prediction, Variant};
use crate::pipeline::consumer::ConsumerHealth;
use crate::pipeline::{GateError, RequestGate};
use crate::served::SharedServedModels;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// What `/readyz` checks. Each fact is written by the component that owns it.
#[derive(Debug)]
pub struct Readiness {
    /// The primary model serves (false while the fallback stands in for one that failed to load).
    pub model_loaded: Arc<AtomicBool>,
    /// The inference consumer's partitions and broker liveness; `None` in a monitor-only process.
    pub consumer: Option<Arc<ConsumerHealth>>,
}

impl Readiness {
    /// The reasons the worker is not ready; empty when it is.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if !self.model_loaded.load(Ordering::SeqCst) {
            r.push("the primary model is not loaded (the fallback serves)");
        }
        if let Some(c) = &self.consumer {
            if !c.broker_up() {
                r.push("no broker connection is up");
            }
            if !c.assigned_once.load(Ordering::SeqCst) {
                r.push("consumer has no partition assignment yet");
            } else if c.partitions.load(Ordering::SeqCst) == 0 {
                r.push("idle: this replica holds no input partition (more replicas than partitions)");
            }
        }
        r
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// What `/models` shows; the registry watcher and the decision follower keep it current.
    pub models: SharedServedModels,
    /// The way into the inference thread; `None` in a monitor-only process.
    pub requests: Option<Arc<RequestGate>>,
    pub schema: Arc<FeatureSchema>,
    pub max_body_bytes: usize,
    /// `http.request_timeout`.
    pub request_timeout: std::time::Duration,
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/predict", post(predict).layer(DefaultBodyLimit::max(limit)))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/models", get(models))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let reasons = s.readiness.reasons();
    if reasons.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false, "reasons": reasons}))).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn models(State(s): State<AppState>) -> Response {
    let doc = s.models.read().unwrap_or_else(|e| e.into_inner()).clone();
    Json(doc).into_response()
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>, index: Option<usize>) -> Response {
    let mut body = serde_json::json!({"error": message.into(), "kind": kind});
    if let Some(i) = index {
        body["index"] = i.into();
    }
    (status, Json(body)).into_response()
}

/// `POST /predict`: one InputEvent or an array of them, each with a full `window` when the model
/// needs one (this path keeps no per-series state). Answers with Predictions in the same order.
async fn predict(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let received = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "oversized" } else { "invalid_body" };
            return error(status, kind, rejection.body_text(), None);
        }
    };
    let Some(gate) = &s.requests else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process runs no inference (--role monitor)",
            None,
        );
    };
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let raws: Vec<&RawValue> = if batch {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, "invalid_json", format!("not a JSON array of events: {e}"), None)
            }
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => vec![v],
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", format!("not valid JSON: {e}"), None),
        }
    };
    if raws.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_body", "the array holds no events", None);
    }
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let event = match InputEvent::decode(raw.get().as_bytes(), &s.schema) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.kind.as_str(), e.reason, batch.then_some(i)),
        };
        let input = match &event.values {
            EventValues::Window(w) => w.clone(),
            EventValues::Observation(o) if s.schema.window == 1 => o.clone(),
            EventValues::Observation(_) => {
                let msg = format!(
                    "this model needs a `window` of {} observations per event on /predict (the HTTP path keeps no per-series state)",
                    s.schema.window
                );
                return error(StatusCode::BAD_REQUEST, "window_length", msg, batch.then_some(i));
            }
        };
        events.push((event, input));
    }
    let (events, inputs): (Vec<InputEvent>, Vec<Vec<f32>>) = events.into_iter().unzip();
    // All or nothing: a request that does not fit /predict's share queues nothing.
    let replies = match gate.submit_all(inputs) {
        Ok(replies) => replies,
        Err(GateError::Full) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the inference queue is full (http.max_in_flight); retry later",
                None,
            )
        }
        Err(GateError::Closed) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the worker is shutting down", None)
        }
    };
    let deadline = tokio::time::Instant::from_std(received + s.request_timeout);
    let mut out = Vec::with_capacity(replies.len());
    for (i, (event, rx)) in events.into_iter().zip(replies).enumerate() {
        let Ok(reply) = tokio::time::timeout_at(deadline, rx).await else {
            let msg = format!("no prediction within http.request_timeout ({:?})", s.request_timeout);
            return error(StatusCode::GATEWAY_TIMEOUT, "timeout", msg, None);
        };
        match reply {
            Ok(Ok(scored)) => out.push(Prediction {
                id: event.id,
                series_id: event.series_id,
                timestamp: event.timestamp,
                prediction: scored.prediction.iter().map(|v| f64::from(*v)).collect(),
                model: scored.model,
                variant: Variant::Primary,
                latency_ms: received.elapsed().as_secs_f64() * 1e3,
                produced_at: scored.produced_at,
                warmup: false,
                gap_filled: 0,
                fallback: scored.fallback,
                interval: scored.interval,
                // `/predict` answers with the point forecast and its interval only.
                quantiles: None,
            }),
            Ok(Err(reason)) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "inference_error", reason, batch.then_some(i))
            }
            Err(_) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the worker is shutting down", None)
            }
        }
    }
    if batch {
        Json(out).into_response()
    } else {
        Json(out.pop().expect("one event")).into_response()
    }
}

/// Binds `addr` and serves until shutdown. Returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, state: AppState, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.wait().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "HTTP server failed.");
        }
    });
    Ok(local)
}
