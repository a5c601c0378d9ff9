//! Producing predictions and dead-letter records, and routing their delivery reports back to the
//! consumer thread, which stores offsets only for acknowledged records.
//!
//! Sends never wait for the broker: every record carries its input offset as delivery opaque, and
//! librdkafka's delivery callback turns it into a [`Completion`].

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{Origin, Scored};
use crate::event::{now_rfc3339, ModelRef, PredictionOut, RejectKind, Variant};
use crate::inference::batcher::RowStatus;
use crate::inference::breaker::Transition;
use crate::inference::{BatchOutcome, InferenceError, JobSink};
use crate::monitor::alerts::Alert;
use crate::telemetry::Metrics;

/// The partition a shadow record's token carries: its report is informational only.
pub const SHADOW_PARTITION: i32 = -1;

/// The input offset a produced record stands for.
#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub partition: i32,
    pub offset: i64,
}

/// A delivery report for the record standing for one input offset.
#[derive(Debug)]
pub struct Completion {
    pub token: Token,
    pub result: Result<(), KafkaError>,
}

/// librdkafka context that forwards delivery reports to the consumer thread.
pub struct DeliveryContext {
    completions: SyncSender<Completion>,
    metrics: Arc<Metrics>,
}

impl DeliveryContext {
    pub fn new(completions: SyncSender<Completion>, metrics: Arc<Metrics>) -> Self {
        DeliveryContext { completions, metrics }
    }
}

impl ClientContext for DeliveryContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.producer_queue_messages.set(statistics.msg_cnt as i64);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The channel holds at least `max_in_flight` reports, so this never blocks; after shutdown
        // the receiver is gone and the report no longer matters.
        let _ = self.completions.send(Completion { token: *token, result });
    }
}

pub type Producer = ThreadedProducer<DeliveryContext>;

/// Header names of dead-letter records (contract).
pub mod dlq_headers {
    pub const KIND: &str = "streamcast-error-kind";
    pub const ERROR: &str = "streamcast-error";
    pub const SOURCE_TOPIC: &str = "streamcast-source-topic";
    pub const SOURCE_PARTITION: &str = "streamcast-source-partition";
    pub const SOURCE_OFFSET: &str = "streamcast-source-offset";
}

/// W3C trace-context header carried from input to prediction.
pub const TRACEPARENT: &str = "traceparent";

/// Sends records for input offsets; shared by the consumer thread (dead letters) and the
/// inference thread (predictions).
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<Producer>,
    completions: SyncSender<Completion>,
    source_topic: Arc<str>,
    predictions_topic: Arc<str>,
    dlq_topic: Arc<str>,
    shadow_topic: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    pub fn new(
        producer: Arc<Producer>,
        completions: SyncSender<Completion>,
        source_topic: &str,
        predictions_topic: &str,
        dlq_topic: &str,
        shadow_topic: &str,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        Publisher {
            producer,
            completions,
            source_topic: source_topic.into(),
            predictions_topic: predictions_topic.into(),
            dlq_topic: dlq_topic.into(),
            shadow_topic: shadow_topic.into(),
            metrics,
        }
    }

    /// Sends the dead-letter record for an input event: the original key and bytes, unchanged,
    /// with the reason and the source position in headers.
    pub fn dead_letter(&self, token: Token, key: Option<&[u8]>, payload: &[u8], kind: RejectKind, reason: &str) {
        self.metrics.rejected.with_label_values(&[kind.as_str()]).inc();
        let partition = token.partition.to_string();
        let offset = token.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header { key: dlq_headers::KIND, value: Some(kind.as_str()) })
            .insert(Header { key: dlq_headers::ERROR, value: Some(reason) })
            .insert(Header { key: dlq_headers::SOURCE_TOPIC, value: Some(&*self.source_topic) })
            .insert(Header { key: dlq_headers::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: dlq_headers::SOURCE_OFFSET, value: Some(&offset) });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.dlq_topic, Box::new(token)).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.send(record);
    }

    /// Passthrough (benchmark ceiling): the input record, unchanged, to the predictions topic.
    pub fn forward(&self, token: Token, key: Option<&[u8]>, payload: &[u8]) {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.predictions_topic, Box::new(token)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.send(record);
    }

    /// A shadow prediction: to the shadow topic only. Its delivery report carries the event's
    /// token marked as shadow, so it neither stores an offset nor counts as an acknowledgement.
    fn shadow(&self, token: Token, key: &str, payload: &[u8]) {
        let token = Token { partition: SHADOW_PARTITION, offset: token.offset };
        let record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.shadow_topic, Box::new(token)).key(key.as_bytes()).payload(payload);
        self.send(record);
    }

    fn prediction(&self, token: Token, key: &str, payload: &[u8], traceparent: Option<&str>) {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.predictions_topic, Box::new(token)).key(key.as_bytes()).payload(payload);
        if let Some(tp) = traceparent {
            record =
                record.headers(OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(tp) }));
        }
        self.send(record);
    }

    /// Enqueues a record, waiting while librdkafka's queue is full (backpressure). A record the
    /// producer refuses outright is reported as a failed delivery.
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], Box<Token>>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, back)) => {
                    let token = *back.delivery_opaque;
                    let _ = self.completions.send(Completion { token, result: Err(error) });
                    return;
                }
            }
        }
    }
}

/// Publishes the worker's own alerts (breaker, decisions) on a producer of their own: sending
/// only enqueues, so the inference thread never waits on the broker, and alert records never
/// share the delivery-report channel that is sized for input offsets.
pub struct AlertSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl AlertSink {
    pub fn new(config: &crate::config::Config) -> Result<AlertSink, KafkaError> {
        Ok(AlertSink { producer: super::client_config(config).create()?, topic: config.topics.alerts.clone() })
    }

    /// Logs the alert at WARN and enqueues it; a full queue loses the record, never the log.
    pub fn send(&self, alert: &Alert) {
        tracing::warn!(kind = alert.kind, model = %alert.model.name, details = %alert.details, "Alert.");
        let body = serde_json::to_vec(alert).expect("alert serializes");
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(self.topic.as_str()).key(alert.model.name.as_str()).payload(&body[..]);
        if let Err((error, _)) = self.producer.send(record) {
            tracing::warn!(%error, kind = alert.kind, "Could not enqueue the alert.");
        }
    }

    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer as _;
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "Alert producer flush failed.");
        }
    }
}

/// Publishes each scored batch: predictions on success, dead letters when inference failed.
pub struct KafkaSink {
    publisher: Publisher,
    metrics: Arc<Metrics>,
    buf: Vec<u8>,
    alerts: Option<Arc<AlertSink>>,
    /// The primary's name, which keys the breaker's alerts, and the configured fallback.
    model_name: String,
    fallback: Option<ModelRef>,
    /// `fallback_active` is firing (a resolve is owed).
    alert_active: bool,
    last_fired: Option<std::time::Instant>,
    /// A breaker that flaps re-fires at most once per cooldown (`monitor.alert_cooldown`).
    cooldown: Duration,
}

impl KafkaSink {
    pub fn new(publisher: Publisher, metrics: Arc<Metrics>) -> KafkaSink {
        KafkaSink {
            publisher,
            metrics,
            buf: Vec::with_capacity(512),
            alerts: None,
            model_name: String::new(),
            fallback: None,
            alert_active: false,
            last_fired: None,
            cooldown: Duration::ZERO,
        }
    }

    /// Publishes `fallback_active` when the breaker opens and when it closes.
    /// `firing`: a `fallback_active` alert was already published (a primary that failed to load).
    pub fn with_alerts(
        mut self,
        alerts: Arc<AlertSink>,
        model_name: &str,
        fallback: Option<ModelRef>,
        cooldown: Duration,
        firing: bool,
    ) -> KafkaSink {
        self.alerts = Some(alerts);
        self.model_name = model_name.to_string();
        self.fallback = fallback;
        self.cooldown = cooldown;
        self.alert_active = firing;
        self.last_fired = firing.then(std::time::Instant::now);
        self
    }

    fn on_breaker(&mut self, transition: Transition, error: Option<&str>, primary: &ModelRef) {
        let (state, details) = match transition {
            Transition::Opened { failures, batches } => {
                tracing::error!(failures, batches, error, "Circuit breaker opened: the fallback serves every batch.");
                ("firing", serde_json::json!({"failed_batches": failures, "batches": batches}))
            }
            Transition::Reopened => {
                tracing::warn!(error, "Half-open probe failed: the circuit breaker is open again.");
                self.metrics.breaker_transitions.with_label_values(&["open"]).inc();
                return;
            }
            Transition::Closed => {
                tracing::info!("Circuit breaker closed: the primary serves again.");
                ("resolved", serde_json::json!({}))
            }
        };
        let open = state == "firing";
        self.metrics.fallback_active.set(i64::from(open));
        self.metrics.breaker_transitions.with_label_values(&[if open { "open" } else { "closed" }]).inc();
        // Hysteresis for the alert: one firing and one resolve per episode, and a breaker that
        // keeps flapping re-fires at most once per cooldown (the gauge shows every flap).
        let publish = if open {
            !self.alert_active && self.last_fired.is_none_or(|t| t.elapsed() >= self.cooldown)
        } else {
            self.alert_active
        };
        if !publish {
            return;
        }
        self.alert_active = open;
        if open {
            self.last_fired = Some(std::time::Instant::now());
        }
        let Some(alerts) = &self.alerts else { return };
        let mut details = details;
        details["state"] = state.into();
        details["primary"] = serde_json::to_value(primary).expect("serializes");
        details["fallback"] = serde_json::to_value(&self.fallback).expect("serializes");
        if let Some(e) = error {
            details["last_error"] = e.into();
        }
        alerts.send(&Alert {
            kind: "fallback_active",
            model: ModelRef { name: self.model_name.clone(), version: primary.version.clone() },
            variant: Some("primary"),
            at: now_rfc3339(),
            details,
        });
    }
}

impl JobSink<Origin> for KafkaSink {
    fn batch_started(&mut self) {
        self.metrics.in_flight_batches.inc();
    }

    fn batch(&mut self, outcome: BatchOutcome<'_, Origin>) {
        if let Some((transition, error)) = &outcome.breaker {
            self.on_breaker(*transition, error.as_deref(), outcome.model);
        }
        self.publish_batch(outcome);
        self.metrics.in_flight_batches.dec();
    }
}

impl KafkaSink {
    fn publish_batch(&mut self, outcome: BatchOutcome<'_, Origin>) {
        let n = outcome.jobs.len();
        let h = outcome.horizon;
        self.metrics.batch_size.observe(n as f64);
        self.metrics.inference_duration.observe(outcome.inference_time.as_secs_f64());
        self.metrics.cache_hits.inc_by(outcome.cache_hits);
        self.metrics.cache_misses.inc_by(outcome.cache_misses);
        let predictions = match outcome.result {
            // Every job must get its own row; anything else is a bug, and zipping would silently
            // leave jobs without a record (and their offsets stuck).
            Ok(p) if p.len() == n * h && outcome.rows.len() == n => p,
            Ok(p) => {
                let reason = format!(
                    "{} predictions and {} row states for {n} events of horizon {h}",
                    p.len(),
                    outcome.rows.len()
                );
                tracing::error!(%reason, "Inference output does not match its batch; dead-lettering the batch.");
                self.fail_all(outcome.jobs, &reason);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, batch = n, "Inference failed; dead-lettering the batch.");
                self.fail_all(outcome.jobs, &error.to_string());
                return;
            }
        };
        // One timestamp per batch: every prediction of a batch is produced at the same moment.
        let produced_at = now_rfc3339();
        let mut streamed = [0u64; 2];
        let mut by_fallback = 0u64;
        let shadow = outcome.shadow;
        for (row, (job, prediction)) in outcome.jobs.drain(..).zip(predictions.chunks_exact(h)).enumerate() {
            let (model, variant) = match (job.candidate, outcome.candidate) {
                (true, Some(candidate)) => (candidate, Variant::Candidate),
                _ => (outcome.model, Variant::Primary),
            };
            // The routed variant stays; the model that actually answered may be the fallback.
            let (model, fallback) = match (outcome.rows[row], outcome.fallback) {
                (RowStatus::Fallback, Some(f)) => (f, true),
                (RowStatus::Failed, _) | (RowStatus::Fallback, None) => {
                    self.fail_one(job.origin, &InferenceError::NonFinite.to_string());
                    continue;
                }
                (RowStatus::Model, _) => (model, false),
            };
            let mut o = match job.origin {
                Origin::Stream(o) => o,
                Origin::Request(r) => {
                    let _ = r.reply.send(Ok(Scored {
                        prediction: prediction.to_vec(),
                        model: model.clone(),
                        produced_at: produced_at.clone(),
                        fallback,
                    }));
                    continue;
                }
            };
            let latency = o.received.elapsed();
            PredictionOut {
                id: &o.id,
                series_id: &o.series_id,
                timestamp: &o.timestamp,
                prediction,
                model,
                variant,
                latency_ms: latency.as_secs_f64() * 1e3,
                produced_at: &produced_at,
                warmup: o.warmup,
                fallback,
            }
            .encode(&mut self.buf);
            // With OTLP export on, the record carries the `send` span's context (same trace).
            let send = o.span.as_ref().map(|span| span.send(model, variant.as_str(), fallback, &o.series_id));
            let traceparent = match &send {
                Some(send) => Some(send.traceparent()),
                None => o.traceparent.take(),
            };
            self.publisher.prediction(o.token, &o.series_id, &self.buf, traceparent.as_deref());
            drop(send);
            self.metrics.end_to_end_latency.observe(latency.as_secs_f64());
            streamed[usize::from(variant == Variant::Candidate)] += 1;
            by_fallback += u64::from(fallback);
            if let Some((shadow_model, outputs)) = shadow {
                PredictionOut {
                    id: &o.id,
                    series_id: &o.series_id,
                    timestamp: &o.timestamp,
                    prediction: &outputs[row * h..(row + 1) * h],
                    model: shadow_model,
                    variant: Variant::Shadow,
                    latency_ms: latency.as_secs_f64() * 1e3,
                    produced_at: &produced_at,
                    warmup: o.warmup,
                    fallback: false,
                }
                .encode(&mut self.buf);
                self.publisher.shadow(o.token, &o.series_id, &self.buf);
                self.metrics.predictions.with_label_values(&["shadow"]).inc();
            }
        }
        self.metrics.predictions.with_label_values(&["primary"]).inc_by(streamed[0]);
        self.metrics.predictions.with_label_values(&["candidate"]).inc_by(streamed[1]);
        self.metrics.fallback_predictions.inc_by(by_fallback);
    }

    /// Dead-letters (or answers with an error) every job of a batch that produced nothing.
    fn fail_all(&mut self, jobs: &mut Vec<crate::inference::Job<Origin>>, reason: &str) {
        for job in jobs.drain(..) {
            self.fail_one(job.origin, reason);
        }
    }

    fn fail_one(&mut self, origin: Origin, reason: &str) {
        match origin {
            Origin::Stream(o) => {
                if let Some(span) = &o.span {
                    span.failed(RejectKind::InferenceError.as_str(), reason);
                }
                self.publisher.dead_letter(
                    o.token,
                    Some(o.series_id.as_bytes()),
                    &o.payload,
                    RejectKind::InferenceError,
                    reason,
                );
            }
            Origin::Request(r) => {
                let _ = r.reply.send(Err(reason.to_string()));
            }
        }
    }
}
