//! The HTTP surface: `/healthz`, `/readyz`, `/metrics` and `/models`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// What `/readyz` checks. Each flag is set by the component that owns the fact.
#[derive(Debug, Default)]
pub struct Readiness {
    pub model_loaded: AtomicBool,
    pub producer_connected: AtomicBool,
    /// Shared with the consumer context, which sets it on the first assignment.
    pub assigned: Arc<AtomicBool>,
}

impl Readiness {
    /// The reasons the worker is not ready; empty when it is.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if !self.model_loaded.load(Ordering::SeqCst) {
            r.push("no model loaded");
        }
        if !self.assigned.load(Ordering::SeqCst) {
            r.push("consumer has no partition assignment yet");
        }
        if !self.producer_connected.load(Ordering::SeqCst) {
            r.push("producer not connected");
        }
        r
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The `/models` document, fixed at start-up.
    pub models: Arc<serde_json::Value>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
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
    Json(s.models.as_ref().clone()).into_response()
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
