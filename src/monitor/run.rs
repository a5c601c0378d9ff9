//! The monitor thread: its consumer and rebalance context, the poll loop, routing each record by
//! its topic's role, and the commit watermarks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::drift::DriftTracker;
use super::election::Election;
use super::join::Source;
use super::publish::Publisher;
use super::scoring::{Rejection, Scoring};
use crate::config::{Config, MonitorConfig};
use crate::event::{Actual, EventValues, FeatureSchema, InputEvent, Prediction, Variant};
use crate::kafka::{consumer_side_config, reader_config, require_topics, ClusterError};
use crate::shutdown::Shutdown;

/// What the records of a topic the monitor reads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// Primary and candidate predictions.
    Predictions,
    /// The shadow variant's predictions.
    Shadow,
    /// Late actuals, joined to either kind of prediction.
    Actuals,
    /// Served inputs, sampled for drift only.
    Input,
}

/// The topics the monitor reads. Config validation keeps topic names distinct, so a name has
/// one role.
pub struct Topics {
    predictions: String,
    /// Only when a shadow is configured.
    shadow: Option<String>,
    actuals: String,
    input: String,
}

impl Topics {
    pub fn new(config: &Config) -> Topics {
        let t = &config.topics;
        Topics {
            predictions: t.predictions.clone(),
            shadow: config.variants.shadow.as_ref().map(|_| t.shadow.clone()),
            actuals: t.actuals.clone(),
            input: t.input.clone(),
        }
    }

    /// Whether shadow predictions are read.
    pub fn has_shadow(&self) -> bool {
        self.shadow.is_some()
    }

    /// The role of `topic`; `None` for a topic the monitor does not subscribe to.
    pub fn role(&self, topic: &str) -> Option<TopicRole> {
        if topic == self.predictions {
            Some(TopicRole::Predictions)
        } else if self.shadow.as_deref() == Some(topic) {
            Some(TopicRole::Shadow)
        } else if topic == self.actuals {
            Some(TopicRole::Actuals)
        } else if topic == self.input {
            Some(TopicRole::Input)
        } else {
            None
        }
    }

    fn subscribed(&self) -> Vec<&str> {
        let mut read: Vec<&str> = vec![&self.predictions, &self.actuals, &self.input];
        read.extend(self.shadow.as_deref());
        read
    }
}

/// The monitor's consumer group: its own, so it commits its own watermarks.
pub fn group_id(config: &Config) -> String {
    format!("{}-monitor", config.consumer.group_id)
}

/// The monitor consumer's context: errors, and the monitor's lag per topic from librdkafka's
/// statistics (every 5 s).
pub struct MonitorContext {
    lag: super::metrics::LagGauges,
    /// Kafka timestamp (ms) of the last record read per topic, for lag in seconds.
    last_timestamp: std::sync::Mutex<HashMap<String, i64>>,
}

impl MonitorContext {
    pub fn new(lag: super::metrics::LagGauges) -> MonitorContext {
        MonitorContext { lag, last_timestamp: Default::default() }
    }

    fn read_at(&self, topic: &str, timestamp_ms: Option<i64>) {
        if let Some(ts) = timestamp_ms {
            let mut last = self.last_timestamp.lock().unwrap_or_else(|e| e.into_inner());
            match last.get_mut(topic) {
                Some(t) => *t = ts,
                None => {
                    last.insert(topic.to_string(), ts);
                }
            }
        }
    }
}

impl ClientContext for MonitorContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::observe_client_error(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let last = self.last_timestamp.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in &statistics.topics {
            // Behind what has been read, not what is committed: the committed watermark holds
            // at joins and windows on purpose. Partition -1 is librdkafka's internal queue;
            // negative offsets are unknown.
            let lags = t.partitions.iter().filter(|(id, p)| **id >= 0 && p.hi_offset >= 0 && p.app_offset >= 0);
            let (mut messages, mut any) = (0i64, false);
            for (_, p) in lags {
                messages += (p.hi_offset - p.app_offset).max(0);
                any = true;
            }
            if !any {
                continue;
            }
            let seconds = match (messages, last.get(topic)) {
                (0, _) | (_, None) => 0.0,
                (_, Some(ts)) => (now_ms - ts).max(0) as f64 / 1e3,
            };
            self.lag.set(topic, messages, seconds);
        }
    }
}
impl ConsumerContext for MonitorContext {}

/// Creates the monitor's consumer once every topic the monitor reads or writes exists. It is not
/// subscribed: the elected leader assigns itself every partition (see [`super::election`]), and
/// commits its watermarks under [`group_id`].
pub fn consumer(
    config: &Config,
    topics: &Topics,
    lag: super::metrics::LagGauges,
) -> Result<BaseConsumer<MonitorContext>, ClusterError> {
    let mut cc = consumer_side_config(config);
    cc.set("group.id", group_id(config))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000");
    crate::kafka::refill_quickly(&mut cc, config);
    let consumer: BaseConsumer<MonitorContext> =
        cc.create_with_context(MonitorContext::new(lag)).map_err(ClusterError::Client)?;
    let mut wanted = topics.subscribed();
    wanted.extend([config.topics.metrics.as_str(), config.topics.alerts.as_str()]);
    require_topics(&consumer, &wanted, config)?;
    Ok(consumer)
}

/// How often the leader looks for partitions it does not read yet: partitions added to a topic
/// while it leads, or all of them when the metadata fetch at takeover failed (then sooner).
const PARTITION_CHECK: Duration = Duration::from_secs(30);
const PARTITION_RETRY: Duration = Duration::from_secs(5);

/// The assignment the leader should hold, given the partitions the cluster lists per topic now
/// and those it holds: `None` when it holds them all. Each partition resumes one past the last
/// record read (`next`), or at the group's committed offset where nothing was read.
fn wanted_assignment(
    listed: &[(&str, Vec<i32>)],
    held: &[(String, i32)],
    next: &HashMap<(String, i32), i64>,
) -> Option<Vec<(String, i32, Offset)>> {
    let mut wanted = Vec::new();
    let mut missing = false;
    for (topic, partitions) in listed {
        for &p in partitions {
            missing |= !held.iter().any(|(t, q)| t == topic && *q == p);
            let at = next.get(&(topic.to_string(), p)).map_or(Offset::Stored, |&n| Offset::Offset(n));
            wanted.push((topic.to_string(), p, at));
        }
    }
    missing.then_some(wanted)
}

/// How long a new leader reads the alerts topic back for.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// A reader of the alerts topic, for what earlier leaders published.
pub fn alerts_reader(config: &Config) -> Result<(BaseConsumer, String), ClusterError> {
    let consumer: BaseConsumer = reader_config(config, "monitor-history").create().map_err(ClusterError::Client)?;
    Ok((consumer, config.topics.alerts.clone()))
}

/// Every alert on the topic now, in order per partition (alerts are keyed by model name, so one
/// model's alerts share a partition), read within `timeout`. Reading goes on past the high
/// watermarks until a poll comes back empty: a broker's watermark may trail its last batch
/// (nisshi's does), and the newest alerts matter most.
fn read_alerts((consumer, topic): &(BaseConsumer, String), timeout: Duration) -> Vec<crate::alert::Alert> {
    let deadline = Instant::now() + timeout;
    let mut ends = HashMap::new();
    let Ok(md) = consumer.fetch_metadata(Some(topic), timeout) else { return Vec::new() };
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, p.id(), timeout) {
            if high > low {
                ends.insert(p.id(), high);
            }
        }
    }
    if ends.is_empty() || crate::kafka::assign_all(consumer, topic, Offset::Beginning).is_err() {
        return Vec::new();
    }
    let mut alerts = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            if ends.is_empty() {
                break;
            }
            continue;
        };
        if let Ok(a) = serde_json::from_slice(m.payload().unwrap_or_default()) {
            alerts.push(a);
        }
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    let _ = consumer.unassign();
    if !ends.is_empty() {
        tracing::warn!(partitions = ends.len(), "Alert history not read in full; gates may repeat an alert.");
    }
    alerts
}

/// What a monitor that takes the lead starts from: the served model's reference sample and
/// thresholds, and empty joins and windows (the committed watermarks hold every record still
/// waiting or still in a window, so re-reading from them rebuilds both).
pub struct Start {
    pub bundle: std::sync::Arc<crate::bundle::Bundle>,
    pub cfg: MonitorConfig,
    pub model: crate::event::ModelRef,
    pub threshold: Option<f64>,
    pub shadow: bool,
    pub variants: crate::config::VariantsConfig,
    pub rejected: prometheus::IntCounterVec,
    pub error_counters: super::metrics::ErrorCounters,
    /// Where the served model's other versions are (`model.root`).
    pub model_root: std::path::PathBuf,
    /// The object-storage root `model_root` mirrors, if any: a version the monitor follows is
    /// pulled first (a monitor-only process has pulled nothing else).
    pub store: Option<std::sync::Arc<crate::model_store::RemoteRoot>>,
    pub intervals: crate::config::IntervalsConfig,
}

/// How many primary predictions in a row must carry another version before the monitor follows
/// it: during a hot reload both versions' predictions interleave for a moment.
const FOLLOW_AFTER: u32 = 8;

/// Whether the primary model itself served `p`, so its version says what is served. The fallback
/// (`"fallback": true`) names its own model while the breaker is open; following it would reset
/// drift and thresholds, and flip back and forth when only some replicas' breakers are open.
fn served_by_primary(p: &Prediction) -> bool {
    p.variant == Variant::Primary && !p.fallback
}

/// A prediction or actual record's JSON, or `None`. serde would fill a struct from an array,
/// field by field, and no message schema allows that.
fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Option<T> {
    if crate::event::opens_array(payload) {
        return None;
    }
    serde_json::from_slice(payload).ok()
}

/// The RMSE alert threshold for `bundle`: `monitor.rmse_threshold`, else its validation RMSE
/// times `rmse_threshold_ratio`.
pub fn threshold_for(cfg: &MonitorConfig, bundle: &crate::bundle::Bundle) -> Option<f64> {
    cfg.rmse_threshold.or_else(|| bundle.manifest.validation.as_ref().map(|v| v.rmse * cfg.rmse_threshold_ratio))
}

impl Start {
    pub fn scoring(&self) -> Scoring {
        let scoring = Scoring::new(&self.cfg, self.model.clone(), self.threshold, self.shadow, self.variants.clone())
            .with_rejected_counter(self.rejected.clone())
            .with_error_counters(self.error_counters.clone())
            .with_intervals(&self.intervals);
        let m = &self.bundle.manifest;
        match (self.cfg.join_by, m.frequency) {
            (crate::config::JoinBy::Time, Some(step)) => scoring.with_time_join(step, m.horizon),
            _ => scoring,
        }
    }

    pub fn drift(&self) -> DriftTracker {
        DriftTracker::new(&self.bundle, &self.cfg)
    }
}

/// The monitor thread's state.
pub struct Monitor {
    start: Start,
    /// Reads back what earlier leaders published.
    alerts_reader: (BaseConsumer, String),
    topics: Topics,
    /// Decodes served inputs for the drift sample.
    schema: FeatureSchema,
    drift: DriftTracker,
    scoring: Scoring,
    publisher: Publisher,
    publish_interval: Duration,
    /// One past the last record read, per (topic, partition).
    next: HashMap<(String, i32), i64>,
    /// Another primary version seen on `predictions`, and how many times in a row.
    seen: Option<(String, u32)>,
    /// Versions whose bundle could not be loaded: not tried again.
    unloadable: Vec<String>,
    /// `monitor.actuals_from_input`: the index of the target among the bundle's features, whose
    /// observed values on `input_data` are the actuals (the actuals topic is then not scored).
    target: Option<usize>,
}

impl Monitor {
    pub fn new(
        start: Start,
        alerts_reader: (BaseConsumer, String),
        topics: Topics,
        schema: FeatureSchema,
        publisher: Publisher,
    ) -> Monitor {
        let publish_interval = start.cfg.publish_interval;
        let (drift, scoring) = (start.drift(), start.scoring());
        let m = &start.bundle.manifest;
        let target =
            start.cfg.actuals_from_input.then(|| m.features.iter().position(|f| *f == m.target.name)).flatten();
        Monitor {
            start,
            alerts_reader,
            topics,
            schema,
            drift,
            scoring,
            publisher,
            publish_interval,
            next: HashMap::new(),
            seen: None,
            unloadable: Vec::new(),
            target,
        }
    }

    /// Reads partitions the leader does not hold yet (see [`PARTITION_CHECK`]), keeping its place
    /// in those it does; at takeover it holds none, so every partition resumes at the monitor
    /// group's committed offset (the earliest where none is). Returns whether it now holds every
    /// listed partition.
    fn add_partitions(&mut self, consumer: &BaseConsumer<MonitorContext>) -> bool {
        let held: Vec<(String, i32)> = match consumer.assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect(),
            Err(_) => Vec::new(),
        };
        let mut listed = Vec::new();
        for topic in self.topics.subscribed() {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(md) => {
                    listed.push((topic, md.topics().iter().flat_map(|t| t.partitions()).map(|p| p.id()).collect()))
                }
                Err(error) => {
                    tracing::warn!(%error, topic, "Monitor cannot list the partitions it should read; it tries again.");
                    return false;
                }
            }
        }
        let Some(wanted) = wanted_assignment(&listed, &held, &self.next) else { return true };
        let mut tpl = TopicPartitionList::new();
        for (topic, p, at) in &wanted {
            let _ = tpl.add_partition_offset(topic, *p, *at);
        }
        match consumer.assign(&tpl) {
            Ok(()) => {
                if !held.is_empty() {
                    tracing::info!(
                        before = held.len(),
                        partitions = tpl.count(),
                        "Monitor reads partitions added since it took the lead."
                    );
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, "Monitor cannot assign its partitions; it tries again.");
                false
            }
        }
    }

    /// Takes the lead: fresh state, every partition from the committed watermarks. Returns
    /// whether it could assign them.
    fn take_over(&mut self, consumer: &BaseConsumer<MonitorContext>) -> bool {
        self.drift = self.start.drift();
        self.scoring = self.start.scoring();
        self.next.clear();
        let history = read_alerts(&self.alerts_reader, HISTORY_TIMEOUT);
        self.scoring.resume(&history, Instant::now());
        self.publisher.take_over(&history, Instant::now());
        // Nothing of an earlier lead may keep its place: the state it belonged to is gone.
        let _ = consumer.unassign();
        let complete = self.add_partitions(consumer);
        if complete {
            let partitions = consumer.assignment().map_or(0, |a| a.count());
            tracing::info!(partitions, "Monitor leads the group: reading every partition.");
        } else {
            tracing::warn!("Monitor leads the group but cannot assign its partitions yet; it tries again.");
        }
        complete
    }

    /// Another replica leads now: stop reading and publishing. Nothing is committed: the new
    /// leader already resumed from the last committed watermarks, and a later commit from here
    /// could only move them past what it has not read yet.
    fn step_down(&mut self, consumer: &BaseConsumer<MonitorContext>) {
        let _ = consumer.unassign();
        consumer.context().lag.clear();
        self.next.clear();
        self.publisher.stand_down();
        tracing::info!("Monitor stands by: another replica leads.");
    }

    /// Polls until shutdown. While this replica leads (see [`super::election`]), expires the
    /// joins every second and publishes every `publish_interval`; at shutdown commits
    /// synchronously and flushes.
    pub fn run(mut self, election: Election, consumer: BaseConsumer<MonitorContext>, shutdown: Shutdown) {
        let mut last_publish = Instant::now();
        let mut last_expire = Instant::now();
        let mut leading = false;
        // When the leader last looked for partitions, and whether it held them all then.
        let (mut last_check, mut complete) = (Instant::now(), true);
        tracing::info!("Monitor joined the election; the leader alone reads and publishes.");
        while !shutdown.is_triggered() {
            let leads = election.poll(if leading { Duration::ZERO } else { Duration::from_millis(100) });
            if leads != leading {
                leading = leads;
                if leads {
                    complete = self.take_over(&consumer);
                    last_publish = Instant::now();
                    last_check = Instant::now();
                } else {
                    self.step_down(&consumer);
                }
            }
            if !leading {
                continue;
            }
            if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
                match msg {
                    Ok(m) => {
                        consumer.context().read_at(m.topic(), m.timestamp().to_millis());
                        self.read(&m)
                    }
                    Err(error) => tracing::warn!(%error, "Monitor consumer error."),
                }
            }
            let now = Instant::now();
            if now.duration_since(last_check) >= if complete { PARTITION_CHECK } else { PARTITION_RETRY } {
                complete = self.add_partitions(&consumer);
                last_check = Instant::now();
            }
            if now.duration_since(last_expire) >= Duration::from_secs(1) {
                self.scoring.expire(now);
                last_expire = now;
            }
            if now.duration_since(last_publish) >= self.publish_interval {
                self.publisher.publish(&self.drift, &mut self.scoring, now);
                self.commit(&consumer, CommitMode::Async);
                last_publish = now;
            }
        }
        if leading {
            self.commit(&consumer, CommitMode::Sync);
            self.publisher.flush();
        }
        tracing::info!("Monitor stopped.");
    }

    /// Routes one record by its topic's role; a payload that does not decode is skipped.
    fn read(&mut self, m: &impl Message) {
        let now = Instant::now();
        let topic = m.topic();
        let src = Source { partition: m.partition(), offset: m.offset() };
        self.next.insert((topic.to_string(), src.partition), src.offset + 1);
        let payload = m.payload().unwrap_or_default();
        match self.topics.role(topic) {
            Some(TopicRole::Predictions) => {
                let Some(p) = parse::<Prediction>(payload) else {
                    return self.scoring.reject(Rejection::UnparsablePrediction);
                };
                if served_by_primary(&p) {
                    self.watch_version(&p.model);
                }
                if let (Some(first), Variant::Primary) = (p.prediction.first(), p.variant) {
                    self.drift.push_prediction(*first);
                }
                self.scoring.offer_prediction(p, src, now);
            }
            Some(TopicRole::Shadow) => {
                let Some(p) = parse::<Prediction>(payload) else {
                    return self.scoring.reject(Rejection::UnparsablePrediction);
                };
                self.scoring.offer_shadow_prediction(p, src, now);
            }
            // With the input stream as ground truth, the actuals topic is not scored: the same
            // observation would otherwise count twice.
            Some(TopicRole::Actuals) if self.target.is_some() => {}
            Some(TopicRole::Actuals) => {
                let Some(a) = parse::<Actual>(payload) else {
                    return self.scoring.reject(Rejection::UnparsableActual);
                };
                self.scoring.offer_actual(a, src, now);
            }
            Some(TopicRole::Input) => self.on_input(payload, src, now),
            None => {}
        }
    }

    /// Follows the served model: once [`FOLLOW_AFTER`] primary predictions in a row carry another
    /// version (a hot reload or a promotion), loads that version's bundle and scores, compares
    /// and checks drift against it from then on.
    fn watch_version(&mut self, model: &crate::event::ModelRef) {
        if model.name != self.start.model.name || model.version == self.start.model.version {
            self.seen = None;
            return;
        }
        let streak = match &mut self.seen {
            Some((v, n)) if *v == model.version => {
                *n += 1;
                *n
            }
            _ => {
                self.seen = Some((model.version.clone(), 1));
                1
            }
        };
        if streak < FOLLOW_AFTER || self.unloadable.contains(&model.version) {
            return;
        }
        self.seen = None;
        if let Some(store) = &self.start.store {
            if let Err(error) = store.sync(&model.name, crate::model_store::Select::Exactly(&model.version)) {
                tracing::warn!(%error, version = %model.version, "Monitor cannot pull the served version.");
            }
        }
        let loaded = crate::bundle::resolve(&self.start.model_root, &model.name, &model.version)
            .and_then(|dir| crate::bundle::Bundle::load(&dir));
        match loaded {
            Ok(bundle) => {
                let threshold = threshold_for(&self.start.cfg, &bundle);
                tracing::info!(from = %self.start.model.version, to = %model.version, threshold, "Monitor follows the served model.");
                self.start.bundle = std::sync::Arc::new(bundle);
                self.start.model = model.clone();
                self.start.threshold = threshold;
                self.drift = self.start.drift();
                self.scoring.follow(model.clone(), threshold);
                self.publisher.follow(model.clone());
            }
            Err(error) => {
                tracing::warn!(%error, version = %model.version, "Monitor cannot load the served version; it keeps the old reference.");
                self.unloadable.push(model.version.clone());
            }
        }
    }

    fn on_input(&mut self, payload: &[u8], src: Source, now: Instant) {
        // Malformed events are the worker's to dead-letter; the monitor just skips them.
        let Ok(e) = InputEvent::decode(payload, &self.schema) else { return };
        let width = self.schema.width();
        let row = match &e.values {
            EventValues::Observation(v) => &v[..],
            EventValues::Window(w) => &w[w.len() - width..],
        };
        self.drift.push_features(row);
        // An observation of the target is the actual of the steps that forecast it. (An event
        // carrying its own window states no observation of its own time.)
        if let (Some(i), EventValues::Observation(v)) = (self.target, &e.values) {
            let actual = Actual {
                id: String::new(),
                series_id: e.series_id,
                timestamp: e.timestamp,
                actual: vec![f64::from(v[i])],
            };
            self.scoring.offer_actual(actual, src, now);
        }
    }

    /// Commits, per partition, the lowest offset whose record still waits in a join.
    fn commit(&self, consumer: &BaseConsumer<MonitorContext>, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), &next) in &self.next {
            let offset = match self.topics.role(topic) {
                Some(TopicRole::Predictions) => self.scoring.predictions_commit_point(*partition, next),
                Some(TopicRole::Shadow) => self.scoring.shadow_commit_point(*partition, next),
                Some(TopicRole::Actuals) => self.scoring.actuals_commit_point(*partition, next),
                // Input observations waiting as actuals hold the input's watermark too.
                Some(TopicRole::Input) if self.target.is_some() => self.scoring.actuals_commit_point(*partition, next),
                Some(TopicRole::Input) | None => next,
            };
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
        }
        if tpl.count() > 0 {
            if let Err(error) = consumer.commit(&tpl, mode) {
                tracing::warn!(%error, "Monitor commit failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicsConfig;

    fn topics(t: &TopicsConfig, shadow: bool) -> Topics {
        Topics {
            predictions: t.predictions.clone(),
            shadow: shadow.then(|| t.shadow.clone()),
            actuals: t.actuals.clone(),
            input: t.input.clone(),
        }
    }

    #[test]
    fn each_topic_resolves_to_its_role() {
        let t = TopicsConfig::default();
        let with = topics(&t, true);
        assert_eq!(with.role(&t.predictions), Some(TopicRole::Predictions));
        assert_eq!(with.role(&t.shadow), Some(TopicRole::Shadow));
        assert_eq!(with.role(&t.actuals), Some(TopicRole::Actuals));
        assert_eq!(with.role(&t.input), Some(TopicRole::Input));
        assert_eq!(with.role(&t.metrics), None);
        assert_eq!(with.subscribed(), [&t.predictions, &t.actuals, &t.input, &t.shadow]);
    }

    #[test]
    fn partitions_added_to_a_topic_are_assigned_and_the_rest_keep_their_place() {
        let held = vec![("predictions".to_string(), 0), ("actuals".to_string(), 0)];
        let next = HashMap::from([(("predictions".to_string(), 0), 42)]);
        let same = [("predictions", vec![0]), ("actuals", vec![0])];
        assert_eq!(wanted_assignment(&same, &held, &next), None, "nothing new: no re-assignment");
        let grown = [("predictions", vec![0, 1]), ("actuals", vec![0])];
        let want = wanted_assignment(&grown, &held, &next).expect("a new partition");
        assert_eq!(
            want,
            [
                ("predictions".to_string(), 0, Offset::Offset(42)),
                ("predictions".to_string(), 1, Offset::Stored),
                ("actuals".to_string(), 0, Offset::Stored),
            ]
        );
        // A takeover whose assignment failed holds nothing: every partition is wanted.
        assert_eq!(wanted_assignment(&same, &[], &HashMap::new()).map(|w| w.len()), Some(2));
    }

    #[test]
    fn only_the_primary_itself_says_which_version_is_served() {
        let json = |variant: &str, fallback: bool| {
            let p = format!(
                r#"{{"id":"e","series_id":"s","timestamp":"2026-11-26T19:00:00Z","prediction":[1.0],"model":{{"name":"m","version":"1"}},"variant":"{variant}","latency_ms":1.0,"produced_at":"2026-11-26T19:00:00Z","fallback":{fallback}}}"#
            );
            parse::<Prediction>(p.as_bytes()).expect("a valid prediction")
        };
        assert!(served_by_primary(&json("primary", false)));
        assert!(!served_by_primary(&json("primary", true)));
        assert!(!served_by_primary(&json("candidate", false)));
    }

    #[test]
    fn an_actual_or_prediction_sent_as_an_array_is_refused() {
        let object = br#"{"id":"e1","series_id":"s","timestamp":"2026-11-26T19:00:00Z","actual":1.5}"#;
        assert_eq!(parse::<Actual>(object).map(|a| a.actual), Some(vec![1.5]));
        // serde_json alone reads this array as the same actual, field by field.
        let array = br#"["e1","s","2026-11-26T19:00:00Z",1.5]"#;
        assert!(serde_json::from_slice::<Actual>(array).is_ok());
        assert!(parse::<Actual>(array).is_none());
        assert!(parse::<Prediction>(b" [\"e1\"]").is_none());
    }

    #[test]
    fn without_a_shadow_its_topic_is_not_read() {
        let t = TopicsConfig::default();
        let without = topics(&t, false);
        assert!(!without.has_shadow());
        assert_eq!(without.role(&t.shadow), None);
        assert_eq!(without.subscribed(), [&t.predictions, &t.actuals, &t.input]);
    }
}
