//! Producing predictions, shadow predictions and dead-letter records, and routing their delivery
//! reports back to the consumer thread, which stores offsets only for acknowledged records.
//!
//! Sends never wait for the broker: every record carries a [`Token`] as delivery opaque (the
//! input offset it stands for, or "shadow"), and librdkafka's delivery callback turns it into a
//! [`Completion`].

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::event::RejectKind;
use crate::otel::TRACEPARENT;
use crate::telemetry::events::{EventRejected, InternalEvent};
use crate::telemetry::Metrics;

/// A position in the input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputOffset {
    pub partition: i32,
    pub offset: i64,
}

/// What a produced record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The prediction or dead letter of this input record: its acknowledgement lets the
    /// offset be stored.
    Input(InputOffset),
    /// A shadow prediction: best effort, its report only tells whether it was delivered.
    Shadow,
}

/// A delivery report for one produced record.
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
    pub fn dead_letter(&self, at: InputOffset, key: Option<&[u8]>, payload: &[u8], kind: RejectKind, reason: &str) {
        EventRejected { kind, reason, partition: at.partition, offset: at.offset }.emit(&self.metrics);
        let partition = at.partition.to_string();
        let offset = at.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header { key: dlq_headers::KIND, value: Some(kind.as_str()) })
            .insert(Header { key: dlq_headers::ERROR, value: Some(reason) })
            .insert(Header { key: dlq_headers::SOURCE_TOPIC, value: Some(&*self.source_topic) })
            .insert(Header { key: dlq_headers::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: dlq_headers::SOURCE_OFFSET, value: Some(&offset) });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.dlq_topic, Box::new(Token::Input(at))).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.send(record);
    }

    /// Passthrough (benchmark ceiling): the input record, unchanged, to the predictions topic.
    pub fn forward(&self, at: InputOffset, key: Option<&[u8]>, payload: &[u8]) {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.predictions_topic, Box::new(Token::Input(at))).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.send(record);
    }

    /// A shadow prediction: to the shadow topic only. It neither stores an offset nor counts as
    /// an acknowledgement.
    pub fn shadow(&self, key: &str, payload: &[u8]) {
        let record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.shadow_topic, Box::new(Token::Shadow))
                .key(key.as_bytes())
                .payload(payload);
        self.send(record);
    }

    pub fn prediction(&self, at: InputOffset, key: &str, payload: &[u8], traceparent: Option<&str>) {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.predictions_topic, Box::new(Token::Input(at)))
                .key(key.as_bytes())
                .payload(payload);
        if let Some(tp) = traceparent {
            record =
                record.headers(OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(tp) }));
        }
        self.send(record);
    }

    /// Enqueues a record, waiting while librdkafka's queue is full (backpressure). A record the
    /// producer refuses outright is reported as a failed delivery.
    fn send(&self, record: BaseRecord<'_, [u8], [u8], Box<Token>>) {
        let wait = || std::thread::sleep(Duration::from_millis(1));
        if let Err((error, back)) = crate::kafka::send_with_retry(|r| self.producer.send(r), record, wait, None) {
            let token = *back.delivery_opaque;
            let _ = self.completions.send(Completion { token, result: Err(error) });
        }
    }
}
