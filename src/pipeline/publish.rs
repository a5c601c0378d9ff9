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
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use crate::event::RejectKind;
use crate::otel::TRACEPARENT;
use crate::telemetry::events::{EventRejected, InternalEvent};
use crate::telemetry::Metrics;

/// A position in the input topic, and the tracker generation it was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputOffset {
    pub partition: i32,
    pub offset: i64,
    /// See [`super::offsets::OffsetTracker`]: a report of an earlier generation stores nothing.
    pub generation: u32,
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
    /// Readiness reads broker liveness from this producer's statistics too.
    health: Arc<super::consumer::ConsumerHealth>,
}

impl DeliveryContext {
    pub fn new(
        completions: SyncSender<Completion>,
        metrics: Arc<Metrics>,
        health: Arc<super::consumer::ConsumerHealth>,
    ) -> Self {
        DeliveryContext { completions, metrics, health }
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::observe_client_error(&error, reason);
    }
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.producer_queue_messages.set(statistics.msg_cnt as i64);
        self.health.observe_producer(&statistics);
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

/// The data path's producer: its thread sleeps until librdkafka has an event, where rdkafka's
/// `ThreadedProducer` spins through the end of every 100 ms poll (`kafka::poller`).
pub type Producer = crate::kafka::PolledProducer<DeliveryContext>;

/// Header names of dead-letter records (contract).
pub mod dlq_headers {
    pub const KIND: &str = "streamcast-error-kind";
    pub const ERROR: &str = "streamcast-error";
    pub const SOURCE_TOPIC: &str = "streamcast-source-topic";
    pub const SOURCE_PARTITION: &str = "streamcast-source-partition";
    pub const SOURCE_OFFSET: &str = "streamcast-source-offset";
    /// Present when the record was cut to fit the producer's limit: what was cut and its
    /// original size in bytes, e.g. `payload=1048576` or `key=600000,payload=600321`.
    pub const TRUNCATED: &str = "streamcast-truncated";
}

/// Longest `streamcast-error` value; a longer reason is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest key a dead-letter record keeps.
pub const MAX_DEAD_LETTER_KEY_BYTES: usize = 1024;
/// Room kept for headers and librdkafka's per-record framing: headers are bounded (the reason
/// by [`MAX_REASON_BYTES`], topic names by Kafka's 249), so 4 KiB always covers them.
const RECORD_OVERHEAD: usize = 4096;

/// A dead-letter record cut to fit the producer's limit.
#[derive(Debug, PartialEq, Eq)]
pub struct BoundedDeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub reason: &'a str,
    /// The [`dlq_headers::TRUNCATED`] value, when anything was cut.
    pub truncated: Option<String>,
}

/// Cuts a dead-letter record so that it fits `max_record_bytes`: the reason to
/// [`MAX_REASON_BYTES`], the key to [`MAX_DEAD_LETTER_KEY_BYTES`], and the payload to what is
/// left. The original bytes stay in the input topic at the source offset the headers name.
pub fn bound_dead_letter<'a>(
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    reason: &'a str,
    max_record_bytes: usize,
) -> BoundedDeadLetter<'a> {
    let mut cut = Vec::new();
    let key = key.map(|k| {
        if k.len() > MAX_DEAD_LETTER_KEY_BYTES {
            cut.push(format!("key={}", k.len()));
            &k[..MAX_DEAD_LETTER_KEY_BYTES]
        } else {
            k
        }
    });
    let budget = max_record_bytes.saturating_sub(RECORD_OVERHEAD + key.map_or(0, <[u8]>::len));
    let payload = if payload.len() > budget {
        cut.push(format!("payload={}", payload.len()));
        &payload[..budget]
    } else {
        payload
    };
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    BoundedDeadLetter { key, payload, reason: &reason[..end], truncated: (!cut.is_empty()).then(|| cut.join(",")) }
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
    /// The producer's `message.max.bytes`.
    max_record_bytes: usize,
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
        max_record_bytes: usize,
    ) -> Publisher {
        Publisher {
            producer,
            completions,
            source_topic: source_topic.into(),
            predictions_topic: predictions_topic.into(),
            dlq_topic: dlq_topic.into(),
            shadow_topic: shadow_topic.into(),
            metrics,
            max_record_bytes,
        }
    }

    /// Whether a record of this key and value (plus small headers) fits the producer's limit.
    pub fn fits(&self, key: usize, payload: usize) -> bool {
        key + payload + RECORD_OVERHEAD <= self.max_record_bytes
    }

    /// Sends the dead-letter record for an input event: the original key and bytes, unchanged
    /// unless they must be cut to fit the producer's limit, with the reason and the source
    /// position in headers.
    pub fn dead_letter(&self, at: InputOffset, key: Option<&[u8]>, payload: &[u8], kind: RejectKind, reason: &str) {
        EventRejected { kind, reason, partition: at.partition, offset: at.offset }.emit(&self.metrics);
        let d = bound_dead_letter(key, payload, reason, self.max_record_bytes);
        let partition = at.partition.to_string();
        let offset = at.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header { key: dlq_headers::KIND, value: Some(kind.as_str()) })
            .insert(Header { key: dlq_headers::ERROR, value: Some(d.reason) })
            .insert(Header { key: dlq_headers::SOURCE_TOPIC, value: Some(&*self.source_topic) })
            .insert(Header { key: dlq_headers::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: dlq_headers::SOURCE_OFFSET, value: Some(&offset) });
        if let Some(t) = &d.truncated {
            headers = headers.insert(Header { key: dlq_headers::TRUNCATED, value: Some(t.as_str()) });
        }
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.dlq_topic, Box::new(Token::Input(at))).payload(d.payload).headers(headers);
        if let Some(key) = d.key {
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
    /// an acknowledgement. `timestamp_ms` as for [`Publisher::prediction`].
    pub fn shadow(&self, key: &str, payload: &[u8], timestamp_ms: i64) {
        let record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.shadow_topic, Box::new(Token::Shadow))
                .key(key.as_bytes())
                .payload(payload)
                .timestamp(timestamp_ms);
        self.send(record);
    }

    /// A prediction. `timestamp_ms`, the record's timestamp, is its `produced_at`: given, it
    /// spares librdkafka a clock reading per record.
    pub fn prediction(&self, at: InputOffset, key: &str, payload: &[u8], traceparent: Option<&str>, timestamp_ms: i64) {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.predictions_topic, Box::new(Token::Input(at)))
                .key(key.as_bytes())
                .payload(payload)
                .timestamp(timestamp_ms);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_cut_to_fit_and_say_so() {
        let (key, payload) = (vec![b'k'; 600_000], vec![b'p'; 2_000_000]);
        let d = bound_dead_letter(Some(&key), &payload, "bad", 1_000_000);
        assert_eq!(d.key.unwrap().len(), MAX_DEAD_LETTER_KEY_BYTES);
        assert_eq!(d.payload.len(), 1_000_000 - RECORD_OVERHEAD - MAX_DEAD_LETTER_KEY_BYTES);
        assert_eq!(d.truncated.as_deref(), Some("key=600000,payload=2000000"));
        // A 600 KB key alone only costs the key.
        let d = bound_dead_letter(Some(&key), &payload[..600_000], "bad", 1_000_000);
        assert_eq!((d.payload.len(), d.truncated.as_deref()), (600_000, Some("key=600000")));
        assert!(d.key.unwrap().len() + d.payload.len() + RECORD_OVERHEAD <= 1_000_000);

        let small = bound_dead_letter(Some(b"s-1"), b"{}", "bad", 1_000_000);
        assert_eq!(small, BoundedDeadLetter { key: Some(b"s-1"), payload: b"{}", reason: "bad", truncated: None });

        // A reason of multi-byte characters is cut at a character boundary.
        let reason = "é".repeat(MAX_REASON_BYTES);
        let d = bound_dead_letter(None, b"{}", &reason, 1_000_000);
        assert!(d.reason.len() <= MAX_REASON_BYTES && d.reason.len() >= MAX_REASON_BYTES - 1);
        assert!(d.reason.chars().all(|c| c == 'é'));
    }
}
