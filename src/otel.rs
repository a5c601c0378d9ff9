//! Optional OpenTelemetry export over OTLP/HTTP: one span per processed event following the
//! messaging semantic conventions, and the Prometheus metrics pushed as OTLP metrics.
//!
//! Off unless `telemetry.otlp = "on"`, or `"auto"` (the default) with an endpoint configured
//! (`telemetry.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables). The SDK
//! also reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_*` and `OTEL_METRIC_EXPORT_INTERVAL`.
//!
//! Spans: a `process <input topic>` span (kind CONSUMER) per decoded event, child of the input
//! record's W3C `traceparent` when it has one, from consuming the event to handing its
//! prediction to the producer; and a `send <predictions topic>` span (kind PRODUCER) under it,
//! whose context becomes the prediction record's `traceparent`, so a trace crosses the worker.
//! When export is off no span is created and `traceparent` is copied through unchanged.
//!
//! Metrics: rather than instrumenting twice, every family of the Prometheus registry is bridged
//! to an observable OTLP instrument under the same name (counters as monotonic sums, gauges as
//! gauges, histograms as `<name>_count` and `<name>_sum` sums), read at each export.
//!
//! Export runs on the SDK's own threads with a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, default
//! 2048 spans): when the collector is slow or down, spans are dropped, never the stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, OTEL_EXPORTER_OTLP_ENDPOINT};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, Tracer};
use opentelemetry_sdk::Resource;
use prometheus::proto::MetricType;
use prometheus::Registry;

use crate::config::{OtlpMode, TelemetryConfig};

/// W3C trace-context header carried from input to prediction.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter setup failed (telemetry.otlp_endpoint / OTEL_EXPORTER_OTLP_*): {0}")]
pub struct OtelError(String);

/// What the consumer needs to open spans; set once when export is on.
struct EventTracing {
    tracer: Tracer,
    group: String,
    predictions_topic: String,
}

static TRACING: OnceLock<EventTracing> = OnceLock::new();

/// The running exporters; dropping it without [`Otel::shutdown`] loses the last batch.
pub struct Otel {
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
    bridged: Arc<Mutex<HashSet<String>>>,
    meter: Meter,
}

/// Whether `config` (with the process environment) turns export on.
pub fn enabled(config: &TelemetryConfig) -> bool {
    let env_endpoint =
        [OTEL_EXPORTER_OTLP_ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    let sdk_disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    match config.otlp {
        OtlpMode::Off => false,
        OtlpMode::On => !sdk_disabled,
        OtlpMode::Auto => !sdk_disabled && (!config.otlp_endpoint.is_empty() || env_endpoint),
    }
}

/// Starts the exporters. Builds blocking HTTP clients: call it outside any async runtime.
pub fn start(
    config: &TelemetryConfig,
    group: &str,
    predictions_topic: &str,
    registry: &Registry,
) -> Result<Otel, OtelError> {
    let base = config.otlp_endpoint.trim_end_matches('/');
    let mut spans = opentelemetry_otlp::SpanExporter::builder().with_http();
    let mut metric = opentelemetry_otlp::MetricExporter::builder().with_http();
    if !base.is_empty() {
        spans = spans.with_endpoint(format!("{base}/v1/traces"));
        metric = metric.with_endpoint(format!("{base}/v1/metrics"));
    }
    let spans = spans.build().map_err(|e| OtelError(e.to_string()))?;
    let metric = metric.build().map_err(|e| OtelError(e.to_string()))?;
    let resource = Resource::builder().with_service_name(service_name()).build();
    let traces = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let interval = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(config.otlp_metrics_interval, Duration::from_millis);
    let reader = PeriodicReader::builder(metric).with_interval(interval).build();
    let metrics = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    let meter = metrics.meter("streamcast");
    let _ = TRACING.set(EventTracing {
        tracer: traces.tracer("streamcast"),
        group: group.to_string(),
        predictions_topic: predictions_topic.to_string(),
    });
    let otel = Otel { traces, metrics, bridged: Arc::new(Mutex::new(HashSet::new())), meter };
    otel.bridge(registry);
    tracing::info!(
        endpoint = if base.is_empty() { "from OTEL_EXPORTER_OTLP_* or localhost:4318" } else { base },
        metrics_interval_s = interval.as_secs_f64(),
        "OTLP export on (traces and metrics)."
    );
    Ok(otel)
}

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "streamcast".into())
}

impl Otel {
    /// Bridges every family of `registry` not bridged yet. Called at start and again once the
    /// worker and monitor registered theirs (families of label vectors appear with their first
    /// sample).
    pub fn bridge(&self, registry: &Registry) {
        let mut bridged = self.bridged.lock().unwrap_or_else(|e| e.into_inner());
        for family in registry.gather() {
            let name = family.name().to_string();
            if !bridged.insert(name.clone()) {
                continue;
            }
            let help = family.help().to_string();
            let kind = family.get_field_type();
            let reg = registry.clone();
            match kind {
                MetricType::COUNTER => {
                    let n = name.clone();
                    let _ = self
                        .meter
                        .f64_observable_counter(name)
                        .with_description(help)
                        .with_callback(move |o| {
                            observe(&reg, &n, |m| m.get_counter().get_value(), |v, a| o.observe(v, a))
                        })
                        .build();
                }
                MetricType::GAUGE => {
                    let n = name.clone();
                    let _ = self
                        .meter
                        .f64_observable_gauge(name)
                        .with_description(help)
                        .with_callback(move |o| {
                            observe(&reg, &n, |m| m.get_gauge().get_value(), |v, a| o.observe(v, a))
                        })
                        .build();
                }
                MetricType::HISTOGRAM => {
                    let (n, reg2) = (name.clone(), reg.clone());
                    let _ = self
                        .meter
                        .u64_observable_counter(format!("{name}_count"))
                        .with_description(help.clone())
                        .with_callback(move |o| {
                            observe(
                                &reg,
                                &n,
                                |m| m.get_histogram().get_sample_count() as f64,
                                |v, a| o.observe(v as u64, a),
                            )
                        })
                        .build();
                    let n = name.clone();
                    let _ = self
                        .meter
                        .f64_observable_counter(format!("{name}_sum"))
                        .with_description(help)
                        .with_callback(move |o| {
                            observe(&reg2, &n, |m| m.get_histogram().get_sample_sum(), |v, a| o.observe(v, a))
                        })
                        .build();
                }
                _ => {}
            }
        }
    }

    /// Exports what is buffered and stops the exporters (blocking; outside async code).
    pub fn shutdown(self) {
        if let Err(error) = self.traces.shutdown() {
            tracing::warn!(%error, "OTLP trace export shutdown failed.");
        }
        if let Err(error) = self.metrics.shutdown() {
            tracing::warn!(%error, "OTLP metric export shutdown failed.");
        }
    }
}

/// Reports every sample of family `name` with its labels as attributes.
fn observe(
    registry: &Registry,
    name: &str,
    value: impl Fn(&prometheus::proto::Metric) -> f64,
    mut emit: impl FnMut(f64, &[KeyValue]),
) {
    for family in registry.gather().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let attrs: Vec<KeyValue> =
                m.get_label().iter().map(|l| KeyValue::new(l.name().to_string(), l.value().to_string())).collect();
            emit(value(m), &attrs);
        }
    }
}

struct OneHeader<'a>(Option<&'a str>);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACEPARENT {
            self.0
        } else {
            None
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The `process` span of one event, held in its context so child spans have a local parent.
/// It ends when dropped.
pub struct EventSpan {
    cx: Context,
}

impl std::fmt::Debug for EventSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSpan").field("span", self.cx.span().span_context()).finish()
    }
}

impl Drop for EventSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// Opens the `process` span of a consumed record, or `None` when export is off (the common case
/// costs one atomic load). `topic` is asked for only then: librdkafka's topic name is a C string,
/// measured and checked for UTF-8 on every call.
pub fn process_span<'a>(
    topic: impl FnOnce() -> &'a str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    traceparent: Option<&str>,
) -> Option<EventSpan> {
    let t = TRACING.get()?;
    let topic = topic();
    let parent = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    let mut attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.destination.name", topic.to_string()),
        KeyValue::new("messaging.destination.partition.id", partition.to_string()),
        KeyValue::new("messaging.consumer.group.name", t.group.clone()),
        KeyValue::new("messaging.kafka.offset", offset),
    ];
    if let Some(k) = key {
        attributes.push(KeyValue::new("messaging.kafka.message.key", String::from_utf8_lossy(k).into_owned()));
    }
    let span: Span = t
        .tracer
        .span_builder(format!("process {topic}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .start_with_context(&t.tracer, &parent);
    Some(EventSpan { cx: parent.with_span(span) })
}

/// The `send` span of a prediction record; ends when dropped, after the record was enqueued.
pub struct SendSpan {
    cx: Context,
}

impl SendSpan {
    /// The W3C `traceparent` of this span, for the prediction record's header.
    pub fn traceparent(&self) -> String {
        let span = self.cx.span();
        let sc = span.span_context();
        format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
    }
}

impl Drop for SendSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

impl EventSpan {
    /// The event's `id`, once decoded (`messaging.message.id`: Kafka has no broker-side message
    /// id, and the event id is what joins the prediction and the actual).
    pub fn set_message_id(&self, id: &str) {
        self.cx.span().set_attribute(KeyValue::new("messaging.message.id", id.to_string()));
    }

    /// Records how the event was scored and opens the `send` span of its prediction.
    pub fn send(&self, model: &crate::event::ModelRef, variant: &str, fallback: bool, key: &str) -> SendSpan {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("streamcast.model.name", model.name.clone()));
        span.set_attribute(KeyValue::new("streamcast.model.version", model.version.clone()));
        span.set_attribute(KeyValue::new("streamcast.variant", variant.to_string()));
        span.set_attribute(KeyValue::new("streamcast.fallback", fallback));
        let t = TRACING.get().expect("a span exists only when tracing is set");
        let send: Span = t
            .tracer
            .span_builder(format!("send {}", t.predictions_topic))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.destination.name", t.predictions_topic.clone()),
                KeyValue::new("messaging.kafka.message.key", key.to_string()),
            ])
            .start_with_context(&t.tracer, &self.cx);
        SendSpan { cx: self.cx.with_span(send) }
    }

    /// Marks the event as failed: dead-lettered with `kind` (`error.type`).
    pub fn failed(&self, kind: &str, reason: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", kind.to_string()));
        span.set_status(opentelemetry::trace::Status::error(reason.to_string()));
    }
}
