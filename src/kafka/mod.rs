//! Kafka client set-up shared by every part of the worker: client configs built from `[kafka]`,
//! the topic check, group-less readers, and the one send-with-retry on a full producer queue.
//!
//! Nothing here knows about events or models; the pipeline, the monitor, the decision follower,
//! the window rebuild, the alert sink and `streamcast produce` all build their clients here.
//! `poller` is a producer served by a thread that sleeps until librdkafka has an event for it
//! (the alert sink's).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

mod poller;
pub use poller::PolledProducer;

/// Errors reaching or checking the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kafka client setup failed: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot reach the Kafka cluster at {servers}: {error}{}", .last.as_deref().map(|l| format!(" (last librdkafka message: {l})")).unwrap_or_default())]
    Unreachable { servers: String, error: KafkaError, last: Option<String> },
    #[error("topics missing on the cluster: {}; create them with `streamcast topics create --config FILE` or start with `--create-topics`", .0.join(", "))]
    MissingTopics(Vec<String>),
    /// The cluster answered, but refused this client: TLS, authentication or a protocol
    /// mismatch. A config problem, not an outage.
    #[error(
        "the Kafka cluster at {servers} refused the connection: {cause} (check {keys}); librdkafka said: {detail}"
    )]
    Refused { servers: String, cause: &'static str, keys: &'static str, detail: String },
}

impl From<KafkaError> for ClusterError {
    fn from(e: KafkaError) -> Self {
        ClusterError::Client(e)
    }
}

/// The user's `[kafka]` table for a consumer: every key but those only producers understand.
/// For the monitor's consumers and the readers; the inference group's consumer adds its own
/// settings ([`group_consumer_config`]).
pub fn consumer_side_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    apply_kafka_table(&mut c, config, &PRODUCER_ONLY);
    c
}

/// The user's `[kafka]` table for a producer: every key but those only consumers understand.
/// For the side producers (alerts, the monitor's snapshots, `produce`) and admin clients, which
/// librdkafka builds on a producer handle; the prediction producer adds its own settings
/// ([`producer_config`]).
pub fn producer_side_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    apply_kafka_table(&mut c, config, &CONSUMER_ONLY);
    c
}

/// Sets the `[kafka]` table on `c`, over whatever defaults `c` holds, less the keys that only
/// `other_side` understands (librdkafka warns about each of those at start-up).
fn apply_kafka_table(c: &mut ClientConfig, config: &Config, other_side: &[&str]) {
    for (k, v) in config.kafka_properties().filter(|(k, _)| is_for(k, other_side)) {
        c.set(k, v);
    }
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
/// override (config validation refuses those keys). `prefetch` is how many events librdkafka
/// keeps fetched ahead (`queued.min.messages`; the pipeline chooses it, see
/// `pipeline::prefetch_events`), at least 1 000 and at most librdkafka's 10 000 000.
pub fn group_consumer_config(config: &Config, prefetch: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    // The prefetch: at most 16 MiB (librdkafka's default is 64 MiB), so that with large events it
    // is not the worker's largest allocation, and a few thousand events rather than librdkafka's
    // 100 000: each prefetched message also costs about 240 bytes of librdkafka bookkeeping, which
    // for small events outweighs the events themselves. At least 1 000, so that a tiny value
    // does not turn every fetch into a refill wait. Bounds this small only work with a short
    // refill backoff: once the queue reaches either bound librdkafka waits
    // `fetch.queue.backoff.ms` (default 1 s) before it fetches again, however fast the queue
    // drains, which stalled backlog drains for most of each second (`bench/FINDINGS.md`).
    c.set("auto.offset.reset", &config.consumer.auto_offset_reset)
        .set("statistics.interval.ms", "5000")
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", prefetch.clamp(1_000, 10_000_000).to_string())
        .set("fetch.queue.backoff.ms", REFILL_BACKOFF_MS);
    apply_kafka_table(&mut c, config, &PRODUCER_ONLY);
    c.set("group.id", &config.consumer.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

/// `fetch.queue.backoff.ms` for every consumer (the group consumer, the monitor's, every
/// [`reader_config`] reader): librdkafka's 1 s default idles a consumer that drains its full
/// prefetch queue in less than a second, such as the window rebuild inside an assignment
/// callback; a 10 ms backoff costs only wake-ups, and only while the queue is full.
const REFILL_BACKOFF_MS: &str = "10";

/// Sets the short refill backoff on a consumer config built from [`consumer_side_config`], unless
/// `[kafka]` sets one.
pub fn refill_quickly(c: &mut ClientConfig, config: &Config) {
    if !config.kafka.contains_key("fetch.queue.backoff.ms") {
        c.set("fetch.queue.backoff.ms", REFILL_BACKOFF_MS);
    }
}

/// The prediction producer's config: every record acknowledged by all in-sync replicas.
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Idempotence: retries during a broker stall neither duplicate nor reorder predictions within
    // a partition (it implies acks=all). `[kafka]` may turn it off for a broker without it.
    c.set("linger.ms", "5").set("acks", "all").set("enable.idempotence", "true").set("statistics.interval.ms", "5000");
    apply_kafka_table(&mut c, config, &CONSUMER_ONLY);
    c
}

/// The largest record the producer accepts (`message.max.bytes`, librdkafka's default 1 000 000
/// unless `[kafka]` sets it): key, value and headers together.
pub fn max_record_bytes(config: &Config) -> usize {
    kafka_bytes(config, "message.max.bytes").unwrap_or(1_000_000)
}

/// A byte count `[kafka]` sets for `key`, if it sets one.
fn kafka_bytes(config: &Config, key: &str) -> Option<usize> {
    config.kafka.get(key).and_then(|v| v.to_string().trim().parse().ok())
}

/// A topic's limit on one record *batch* (not one record), as the broker applies it.
const TOPIC_BATCH_LIMIT: &str = "max.message.bytes";

/// The smallest `max.message.bytes` among `topics` as the cluster reports it, with its topic;
/// `None`, with a warning, where the cluster does not say (no DescribeConfigs permission).
pub async fn smallest_topic_limit(config: &Config, topics: &[&str], timeout: Duration) -> Option<(String, usize)> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let unknown = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, ?topics, "Cannot read the output topics' max.message.bytes. If one is below the producer's message.max.bytes, set [kafka] message.max.bytes and batch.size to it.");
    };
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = match producer_side_config(config).create() {
        Ok(admin) => admin,
        Err(error) => {
            unknown(&error);
            return None;
        }
    };
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let results = match admin.describe_configs(&specs, &AdminOptions::new().request_timeout(Some(timeout))).await {
        Ok(results) => results,
        Err(error) => {
            unknown(&error);
            return None;
        }
    };
    let mut smallest: Option<(String, usize)> = None;
    for (topic, result) in topics.iter().zip(&results) {
        let limit = match result {
            Ok(resource) => resource.get(TOPIC_BATCH_LIMIT).and_then(|e| e.value.as_deref()?.parse::<usize>().ok()),
            Err(code) => {
                unknown(code);
                None
            }
        };
        if let Some(limit) = limit.filter(|l| smallest.as_ref().is_none_or(|(_, s)| l < s)) {
            smallest = Some((topic.to_string(), limit));
        }
    }
    smallest
}

/// `config` with the producer's `message.max.bytes` and `batch.size` lowered to `topic_limit`
/// where either is above it; `None` when both are within it.
///
/// A broker refuses a whole batch over a topic's limit, every record in it, so the batch must
/// fit and not only each record. librdkafka adds a record to a batch only while the batch,
/// request header included, stays within the smaller of the two (the first record excepted,
/// which `message.max.bytes` bounds on its own), so both at the limit keep every batch within
/// it. Dead letters are then cut to fit ([`max_record_bytes`], less their 4 KiB of headroom);
/// the original stays in the input topic. At least 1 000, librdkafka's floor for
/// `message.max.bytes`.
pub fn fit_producer_to(config: &Config, topic_limit: usize) -> Option<Config> {
    let batch = kafka_bytes(config, "batch.size").unwrap_or(1_000_000);
    if max_record_bytes(config) <= topic_limit && batch <= topic_limit {
        return None;
    }
    let limit = topic_limit.max(1_000);
    let mut fitted = config.clone();
    let value = crate::config::KafkaValue::Integer(limit as i64);
    fitted.kafka.insert("message.max.bytes".into(), value.clone());
    fitted.kafka.insert("batch.size".into(), value);
    Some(fitted)
}

/// A consumer that is assigned partitions by hand, never subscribed and never committing:
/// `<consumer.group_id>-<purpose>` only names the client to the broker.
pub fn reader_config(config: &Config, purpose: &str) -> ClientConfig {
    let mut c = consumer_side_config(config);
    c.set("group.id", format!("{}-{purpose}", config.consumer.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    refill_quickly(&mut c, config);
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

/// Records librdkafka's error callbacks during the start-up probe.
#[derive(Default)]
struct ProbeContext {
    errors: std::sync::Mutex<Vec<String>>,
}

impl ProbeContext {
    fn record(&self, line: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 32 {
            errors.push(line);
        }
    }
}

impl rdkafka::ClientContext for ProbeContext {
    // librdkafka logs a failed handshake from its own threads at once; error callbacks wait for
    // a poll. Both are kept.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        // A connection librdkafka gives up on is logged as `FAIL`, at INFO when it only saw the
        // peer hang up (a plaintext client on a TLS listener).
        if fac == "FAIL" || matches!(level, L::Emerg | L::Alert | L::Critical | L::Error | L::Warning) {
            self.record(format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.record(format!("{error}: {reason}"));
    }
}
impl ConsumerContext for ProbeContext {}

/// A refusal met by a running client: the cluster stopped taking this worker's credentials or
/// trusting its certificate (a rotated password, an expired or replaced certificate).
#[derive(Debug, Clone)]
pub struct RuntimeRefusal {
    pub cause: &'static str,
    pub keys: &'static str,
    pub detail: String,
}

/// The first runtime refusal of this process. librdkafka retries these forever, logging each
/// attempt; retrying cannot heal them, so `serve::run` stops the process with exit 2 once one is
/// recorded, and the restarted worker's start-up probe says what is wrong. Process-wide because
/// every client of a process (consumer, producers, the monitor's) shares one `[kafka]` table.
static RUNTIME_REFUSAL: std::sync::OnceLock<RuntimeRefusal> = std::sync::OnceLock::new();

/// For librdkafka's error callback of a running client: records the error when it is a refusal
/// that retrying cannot heal, and logs it either way.
pub fn observe_client_error(error: &KafkaError, reason: &str) {
    match runtime_refusal_cause(error.rdkafka_error_code(), reason) {
        Some((cause, keys)) => {
            if RUNTIME_REFUSAL.set(RuntimeRefusal { cause, keys, detail: reason.to_string() }).is_ok() {
                tracing::error!(%error, reason, cause, check = keys, "The Kafka cluster refused this worker; stopping.");
            }
        }
        None => tracing::warn!(%error, reason, "Kafka client error."),
    }
}

/// What a running client's error says is refused for good, if anything: a refusal that
/// [`refusal_cause`] names, reported under an authentication or TLS code.
fn runtime_refusal_cause(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<(&'static str, &'static str)> {
    refusal_cause(reason).filter(|(cause, _)| match code {
        // Except a failed token refresh. librdkafka keeps the token it has, which may have
        // hours left, and retries every 10 s, so an identity provider that is down for a moment
        // must not stop every replica. If no token comes back before it expires, the broker
        // refuses the login, and that refusal stops the worker.
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            !reason.contains(TOKEN_REFRESH_FAILED)
        }
        // Only a certificate the client no longer trusts; other TLS errors are connection trouble.
        Some(RDKafkaErrorCode::SSL) => cause.starts_with("the broker's TLS certificate"),
        _ => false,
    })
}

/// How librdkafka words a failed OAUTHBEARER token fetch (`rd_kafka_oauthbearer_set_token_failure0`).
const TOKEN_REFRESH_FAILED: &str = "Failed to acquire SASL OAUTHBEARER token";

/// The refusal recorded by [`observe_client_error`], if any.
pub fn runtime_refusal() -> Option<RuntimeRefusal> {
    RUNTIME_REFUSAL.get().cloned()
}

/// What a librdkafka error says about the client's config, when it says something: the cause
/// and the `[kafka]` keys to check.
pub fn refusal_cause(detail: &str) -> Option<(&'static str, &'static str)> {
    let d = detail.to_ascii_lowercase();
    if d.contains("certificate verify failed") || d.contains("unable to get local issuer") {
        Some(("the broker's TLS certificate is not signed by a CA this client trusts", "ssl.ca.location / ssl.ca.pem"))
    } else if d.contains("plaintext broker listener")
        || d.contains("wrong version number")
        || d.contains("packet length too long")
    {
        Some(("a TLS client on a plaintext listener", "security.protocol"))
    } else if d.contains("timed out in state ssl_handshake") {
        Some(("the TLS handshake got no answer: a TLS client on a plaintext listener?", "security.protocol"))
    } else if d.contains("oauthbearer token") {
        // "Failed to acquire SASL OAUTHBEARER token: ...": the token endpoint refused the client
        // credentials, or could not be reached or understood.
        Some((
            "no OAUTHBEARER token could be obtained from the token endpoint",
            "sasl.oauthbearer.token.endpoint.url, sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret",
        ))
    } else if d.contains("oauthbearer") {
        Some(("authentication failed", "sasl.mechanism, sasl.oauthbearer.*"))
    } else if d.contains("sasl") || d.contains("authentication") {
        Some(("authentication failed", "sasl.mechanism, sasl.username, sasl.password"))
    } else if d.contains("certificate") || d.contains("ssl") || d.contains("tls") {
        Some(("the TLS handshake failed", "security.protocol, ssl.*"))
    } else if d.contains("apiversion") || d.contains("api_version") || d.contains("invalid response size") {
        Some((
            "the broker closed the connection during the first request: a plaintext client on a TLS listener?",
            "security.protocol",
        ))
    } else {
        None
    }
}

/// Checks, before anything else starts, that the cluster takes this client: metadata within
/// `timeout`, or an error naming what was refused ([`ClusterError::Refused`], a config problem)
/// or that nothing answered ([`ClusterError::Unreachable`]).
pub fn probe(config: &Config, timeout: Duration) -> Result<(), ClusterError> {
    let servers = config.kafka.get("bootstrap.servers").map(|v| v.to_string()).unwrap_or_default();
    let consumer: BaseConsumer<ProbeContext> =
        reader_config(config, "probe").create_with_context(ProbeContext::default())?;
    let started = std::time::Instant::now();
    let refusal = || {
        let errors = consumer.context().errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let refused = errors.iter().find_map(|e| refusal_cause(e).map(|(cause, keys)| (cause, keys, e.clone())));
        (refused, errors.last().cloned())
    };
    loop {
        // Short attempts, with polls between them: librdkafka's log lines and error events,
        // which say why a connection failed, are only delivered by a poll.
        let error = match consumer.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let _ = consumer.poll(Duration::from_millis(100));
        let (refused, last) = refusal();
        if let Some((cause, keys, detail)) = refused {
            return Err(ClusterError::Refused { servers, cause, keys, detail });
        }
        if started.elapsed() >= timeout {
            return Err(ClusterError::Unreachable { servers, error, last });
        }
    }
}

/// Which of `wanted` do not exist on the cluster.
fn missing_topics<C: ConsumerContext, T: Consumer<C>>(
    consumer: &T,
    wanted: &[&str],
    servers: &str,
) -> Result<Vec<String>, ClusterError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|error| ClusterError::Unreachable { servers: servers.to_string(), error, last: None })?;
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
    fn each_side_gets_the_shared_keys_but_not_the_other_sides() {
        let config = config_with(
            "\"session.timeout.ms\" = 30000\n\"fetch.wait.max.ms\" = 5\n\"client.id\" = \"sc\"\n\"linger.ms\" = 20",
        );
        let p = producer_side_config(&config);
        assert_eq!((p.get("bootstrap.servers"), p.get("client.id")), (Some("127.0.0.1:9092"), Some("sc")));
        assert_eq!(p.get("linger.ms"), Some("20"));
        assert_eq!((p.get("session.timeout.ms"), p.get("fetch.wait.max.ms")), (None, None));
        let c = consumer_side_config(&config);
        assert_eq!((c.get("bootstrap.servers"), c.get("client.id")), (Some("127.0.0.1:9092"), Some("sc")));
        assert_eq!((c.get("session.timeout.ms"), c.get("fetch.wait.max.ms")), (Some("30000"), Some("5")));
        assert_eq!(c.get("linger.ms"), None);
    }

    /// A minimal valid config with `kafka` lines in `[kafka]`.
    fn config_with(kafka: &str) -> Config {
        let toml = format!(
            "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9092\"\n{kafka}\n[consumer]\ngroup_id = \"g\"\n\
             [model]\nname = \"co2-mlp\"\n"
        );
        Config::from_table(toml.parse().unwrap()).unwrap()
    }

    #[test]
    fn the_prefetch_is_clamped_and_kafka_settings_override_it() {
        let config = |kafka: &str, prefetch: usize| group_consumer_config(&config_with(kafka), prefetch);
        let c = config("", 2_048);
        assert_eq!(c.get("queued.min.messages"), Some("2048"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config("", 10).get("queued.min.messages"), Some("1000"));
        assert_eq!(config("", usize::MAX).get("queued.min.messages"), Some("10000000"));
        let c = config("\"queued.min.messages\" = 50000\n\"fetch.queue.backoff.ms\" = 100", 2_048);
        assert_eq!(c.get("queued.min.messages"), Some("50000"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("100"));
    }

    #[test]
    fn readers_refill_quickly_unless_kafka_settings_say_otherwise() {
        let reader = |kafka: &str| reader_config(&config_with(kafka), "rebuild");
        assert_eq!(reader("").get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(reader("\"fetch.queue.backoff.ms\" = 250").get("fetch.queue.backoff.ms"), Some("250"));
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

    #[test]
    fn the_client_is_built_with_tls_every_sasl_mechanism_and_every_codec() {
        use rdkafka::producer::BaseProducer;
        // librdkafka refuses a mechanism or protocol it was built without when the client is
        // created ("No provider for SASL mechanism", "OpenSSL not available at build time").
        let base = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1");
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c.create::<BaseProducer>().map(|_| ()).map_err(|e| e.to_string())
        };
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let r = base(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]);
            assert_eq!(r, Ok(()), "{mechanism}");
        }
        // OAUTHBEARER with a token from `sasl.oauthbearer.config`, and with OIDC client
        // credentials (`method = oidc`), which needs the libcurl built in by `curl-static`.
        let oauth = base(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.config", "principal=streamcast"),
        ]);
        assert_eq!(oauth, Ok(()), "OAUTHBEARER");
        let oidc = base(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "streamcast"),
            ("sasl.oauthbearer.client.secret", "s"),
            ("sasl.oauthbearer.token.endpoint.url", "https://idp.example.com/oauth2/token"),
            ("sasl.oauthbearer.scope", "kafka"),
        ]);
        assert_eq!(oidc, Ok(()), "OAUTHBEARER with OIDC");
        assert_eq!(base(&[("security.protocol", "SSL")]), Ok(()));
        for codec in ["zstd", "lz4", "snappy", "gzip"] {
            assert_eq!(base(&[("compression.type", codec)]), Ok(()), "{codec}");
        }
    }

    #[test]
    fn refusals_name_their_cause() {
        let cause = |s: &str| refusal_cause(s).map(|(c, _)| c);
        assert!(cause("SSL handshake failed: error:0A000086:SSL routines::certificate verify failed")
            .unwrap()
            .contains("CA"));
        assert!(cause("Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol")
            .unwrap()
            .contains("plaintext client"));
        assert!(cause("Connection setup timed out in state SSL_HANDSHAKE")
            .unwrap()
            .contains("TLS client on a plaintext"));
        assert!(cause("SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512").unwrap().contains("authentication"));
        assert!(refusal_cause("Failed to acquire SASL OAUTHBEARER token: HTTP 401")
            .unwrap()
            .1
            .contains("sasl.oauthbearer.client.secret"));
        assert_eq!(cause("Connect to ipv4#127.0.0.1:1 failed: Connection refused"), None);
    }

    #[test]
    fn the_producer_is_fitted_to_the_smallest_output_topic_limit() {
        let config = config_with("");
        // librdkafka's defaults (1 000 000) fit a topic at Kafka's default (1 048 588).
        assert!(fit_producer_to(&config, 1_048_588).is_none());
        // Below it, both limits come down to the topic's.
        let fitted = fit_producer_to(&config, 20_000).expect("lowered");
        assert_eq!(max_record_bytes(&fitted), 20_000);
        let producer = producer_config(&fitted);
        assert_eq!(producer.get("batch.size"), Some("20000"));
        assert_eq!(producer.get("message.max.bytes"), Some("20000"));
        assert_eq!(max_record_bytes(&fit_producer_to(&config, 10).unwrap()), 1_000, "librdkafka's floor");
        // A batch.size set above the limit is lowered too, even with message.max.bytes fitting.
        let big_batch = config_with("\"message.max.bytes\" = 10000\n\"batch.size\" = 900000");
        assert_eq!(producer_config(&fit_producer_to(&big_batch, 20_000).unwrap()).get("batch.size"), Some("20000"));
        assert!(
            fit_producer_to(&config_with("\"batch.size\" = 20000\n\"message.max.bytes\" = 20000"), 20_000).is_none()
        );
    }

    #[test]
    fn a_running_client_stops_on_a_refused_login_but_not_on_a_failed_token_refresh() {
        use RDKafkaErrorCode as C;
        let login = "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";
        assert!(runtime_refusal_cause(Some(C::SaslAuthenticationFailed), login).is_some());
        let no_token = "Failed to initialize SASL authentication: OAUTHBEARER cannot log in because there is no token available; last error: HTTP 401";
        assert!(runtime_refusal_cause(Some(C::Authentication), no_token).is_some());
        let refresh = "Failed to acquire SASL OAUTHBEARER token: Failed to connect to idp port 443: Connection refused";
        assert!(refusal_cause(refresh).is_some(), "the start-up probe still names it");
        assert_eq!(runtime_refusal_cause(Some(C::Authentication), refresh), None);
        let untrusted = "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed";
        assert!(runtime_refusal_cause(Some(C::SSL), untrusted).is_some());
        assert_eq!(runtime_refusal_cause(Some(C::SSL), "SSL handshake failed: Disconnected"), None);
    }
}
