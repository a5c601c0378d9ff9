//! The one way alerts leave a process.
//!
//! Sending only enqueues on a producer of the sink's own, so the inference thread and the
//! monitor never wait on the broker, and alert records never share the delivery-report channel
//! that is sized for input offsets.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};

use super::Alert;

/// Publishes alerts to the alerts topic, keyed by model name.
pub struct AlertSink {
    producer: crate::kafka::PolledProducer,
    topic: String,
}

impl AlertSink {
    pub fn new(client: &ClientConfig, topic: &str) -> Result<AlertSink, KafkaError> {
        Ok(AlertSink { producer: client.create()?, topic: topic.to_string() })
    }

    /// Logs the alert at WARN and enqueues it, waiting a little while the queue is full. A
    /// record that still cannot be enqueued is lost, never the log line.
    pub fn send(&self, alert: &Alert) {
        let details = alert.encode_details();
        tracing::warn!(kind = alert.kind().as_str(), model = %alert.model.name, version = %alert.model.version, %details, "Alert.");
        if let Err(error) = self.enqueue(alert) {
            tracing::warn!(%error, kind = alert.kind().as_str(), "Could not enqueue the alert.");
        }
    }

    /// Enqueues without logging; the caller reports failures (`streamcast models promote`).
    pub fn enqueue(&self, alert: &Alert) -> Result<(), KafkaError> {
        let body = alert.encode();
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(self.topic.as_str()).key(alert.model.name.as_str()).payload(&body[..]);
        crate::kafka::send_with_retry(
            |r| self.producer.send(r),
            record,
            || std::thread::sleep(Duration::from_millis(10)),
            Some(100),
        )
        .map_err(|(error, _)| error)
    }

    /// Waits until every enqueued alert was acknowledged, or `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
