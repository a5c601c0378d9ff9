//! Kafka client set-up shared by every part of the worker: client configs built from `[kafka]`,
//! the topic check, group-less readers, and the one send-with-retry on a full producer queue.
//!
//! Nothing here knows about events or models; the pipeline, the monitor, the decision follower,
//! the window rebuild, the alert sink and `streamcast produce` all build their clients here.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

/// Errors reaching or checking the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kafka client setup failed: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot reach the Kafka cluster at {servers}: {error}")]
    Unreachable { servers: String, error: KafkaError },
    #[error("topics missing on the cluster: {}; create them with `streamcast topics create --config FILE` or start with `--create-topics`", .0.join(", "))]
    MissingTopics(Vec<String>),
}

impl From<KafkaError> for ClusterError {
    fn from(e: KafkaError) -> Self {
        ClusterError::Client(e)
    }
}

/// Builds a librdkafka client config: streamcast's defaults, then the user's `[kafka]` table.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.kafka_properties() {
        c.set(k, v);
    }
    c
}

/// Prefixes of librdkafka properties that only producers (or only consumers) understand. The
/// `[kafka]` table is shared, and librdkafka warns about every property of the other side.
const PRODUCER_ONLY: [&str; 10] = [
    "linger.ms",
    "acks",
    "request.required.acks",
    "batch.",
    "compression.",
    "compression.codec",
    "message.timeout.ms",
    "queue.buffering.",
    "enable.idempotence",
    "transactional.id",
];
const CONSUMER_ONLY: [&str; 12] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "auto.commit.interval.ms",
    "max.poll.interval.ms",
    "fetch.",
    "group.",
    "partition.assignment.strategy",
    "isolation.level",
    "auto.offset.reset",
    "check.crcs",
    "queued.",
    "enable.partition.eof",
];

fn is_for(key: &str, other_side: &[&str]) -> bool {
    !other_side.iter().any(|p| key.starts_with(p))
}

/// The inference consumer group's config: at-least-once offset handling that `[kafka]` cannot
/// override (config validation refuses those keys).
pub fn group_consumer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Prefetch at most 16 MiB (librdkafka's default is 64 MiB): with large events the prefetch
    // queue, not the in-flight cap, would dominate memory. Plenty for small events.
    c.set("auto.offset.reset", &config.consumer.auto_offset_reset)
        .set("statistics.interval.ms", "5000")
        .set("queued.max.messages.kbytes", "16384");
    for (k, v) in config.kafka_properties().filter(|(k, _)| is_for(k, &PRODUCER_ONLY)) {
        c.set(k, v);
    }
    c.set("group.id", &config.consumer.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

/// The prediction producer's config: every record acknowledged by all in-sync replicas.
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5").set("acks", "all").set("statistics.interval.ms", "5000");
    for (k, v) in config.kafka_properties().filter(|(k, _)| is_for(k, &CONSUMER_ONLY)) {
        c.set(k, v);
    }
    c
}

/// The largest record the producer accepts (`message.max.bytes`, librdkafka's default 1 000 000
/// unless `[kafka]` sets it): key, value and headers together.
pub fn max_record_bytes(config: &Config) -> usize {
    config.kafka.get("message.max.bytes").and_then(|v| v.to_string().trim().parse().ok()).unwrap_or(1_000_000)
}

/// A consumer that is assigned partitions by hand, never subscribed and never committing:
/// `<consumer.group_id>-<purpose>` only names the client to the broker.
pub fn reader_config(config: &Config, purpose: &str) -> ClientConfig {
    let mut c = client_config(config);
    c.set("group.id", format!("{}-{purpose}", config.consumer.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    c
}

/// Assigns every partition of `topic` to `consumer`, each starting at `offset`.
pub fn assign_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offset: Offset,
) -> Result<(), KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), offset)?;
    }
    consumer.assign(&tpl)
}

/// Which of `wanted` do not exist on the cluster.
pub fn missing_topics<C: ConsumerContext, T: Consumer<C>>(
    consumer: &T,
    wanted: &[&str],
    servers: &str,
) -> Result<Vec<String>, ClusterError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|error| ClusterError::Unreachable { servers: servers.to_string(), error })?;
    Ok(wanted
        .iter()
        .filter(|t| {
            !metadata.topics().iter().any(|m| m.name() == **t && m.error().is_none() && !m.partitions().is_empty())
        })
        .map(|t| t.to_string())
        .collect())
}

/// Fails with [`ClusterError::MissingTopics`] unless every topic of `wanted` exists.
pub fn require_topics<C: ConsumerContext, T: Consumer<C>>(
    consumer: &T,
    wanted: &[&str],
    config: &Config,
) -> Result<(), ClusterError> {
    let servers = config.kafka.get("bootstrap.servers").map(|v| v.to_string()).unwrap_or_default();
    let missing = missing_topics(consumer, wanted, &servers)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::MissingTopics(missing))
    }
}

/// Enqueues `record` with `send`, calling `wait` and retrying while the producer's queue is
/// full (backpressure), at most `tries` times when given. Any other refusal is returned with
/// the record, so the caller can report what it stood for.
pub fn send_with_retry<'a, K, P, D>(
    mut send: impl FnMut(BaseRecord<'a, K, P, D>) -> Result<(), (KafkaError, BaseRecord<'a, K, P, D>)>,
    mut record: BaseRecord<'a, K, P, D>,
    mut wait: impl FnMut(),
    tries: Option<usize>,
) -> Result<(), (KafkaError, BaseRecord<'a, K, P, D>)>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    D: rdkafka::util::IntoOpaque,
{
    let mut attempt = 0usize;
    loop {
        match send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if tries.is_none_or(|t| attempt + 1 < t) =>
            {
                attempt += 1;
                record = back;
                wait();
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_and_consumer_keys_are_split() {
        assert!(is_for("bootstrap.servers", &PRODUCER_ONLY) && is_for("bootstrap.servers", &CONSUMER_ONLY));
        assert!(!is_for("linger.ms", &PRODUCER_ONLY));
        assert!(!is_for("fetch.wait.max.ms", &CONSUMER_ONLY));
    }

    #[test]
    fn retries_only_a_full_queue_and_at_most_tries_times() {
        let mut calls = 0;
        let record: BaseRecord<'_, str, str> = BaseRecord::to("t").payload("x");
        let full = || KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        let r = send_with_retry(
            |r| {
                calls += 1;
                Err((full(), r))
            },
            record,
            || {},
            Some(3),
        );
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let record: BaseRecord<'_, str, str> = BaseRecord::to("t").payload("x");
        let r = send_with_retry(
            |r| {
                calls += 1;
                if calls < 5 {
                    Err((full(), r))
                } else {
                    Ok(())
                }
            },
            record,
            || {},
            None,
        );
        assert!(r.is_ok());
        let record: BaseRecord<'_, str, str> = BaseRecord::to("t").payload("x");
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let r = send_with_retry(|r| Err((too_large.clone(), r)), record, || {}, None);
        assert!(matches!(r, Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))));
    }
}
