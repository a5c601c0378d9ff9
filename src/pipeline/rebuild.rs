//! Per-series state moves with its partition: when this replica is assigned an input partition,
//! the windows of that partition's series are rebuilt from the records just before the offset
//! the group resumes from, so a rebalance or a restart does not send series back to warm-up.
//!
//! It runs inside the assignment callback, on the consumer thread, before the first record of
//! the partition is fetched: no event of the partition can be scored with a half-built window.
//! The history is read by a separate, group-less consumer. At most `windows.rebuild_max_records`
//! records per partition are read, and the whole rebuild (its broker calls included) takes at
//! most `windows.rebuild_timeout` (30 s): that is how long an assignment callback can last. When a
//! partition's history cannot be read up to its resume offset in time, its series are dropped
//! rather than left with a gap, and they warm up afresh (as without a rebuild).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::event::{EventValues, FeatureSchema, InputEvent};
use crate::window::WindowStore;

/// What one rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub records: u64,
    pub series: usize,
    /// Partitions whose history was not read to the end in time (their series were dropped).
    pub incomplete: Vec<i32>,
}

pub struct WindowRebuilder {
    consumer: BaseConsumer,
    topic: String,
    schema: FeatureSchema,
    max_records: i64,
    timeout: Duration,
    /// `auto.offset.reset = latest`: a partition without a committed offset resumes at its end.
    from_latest: bool,
    scratch: Vec<f32>,
}

impl WindowRebuilder {
    /// `None` when the model keeps no per-series state or rebuilding is switched off.
    pub fn new(config: &Config, schema: FeatureSchema) -> Result<Option<WindowRebuilder>, KafkaError> {
        if schema.window <= 1 || config.windows.rebuild_max_records == 0 {
            return Ok(None);
        }
        let mut cc = crate::kafka::reader_config(config, "rebuild");
        cc.set("fetch.wait.max.ms", "20");
        Ok(Some(WindowRebuilder {
            consumer: cc.create()?,
            topic: config.topics.input.clone(),
            schema,
            max_records: config.windows.rebuild_max_records as i64,
            timeout: config.windows.rebuild_timeout,
            from_latest: config.consumer.auto_offset_reset == "latest",
            scratch: Vec::new(),
        }))
    }

    /// Where each assigned partition resumes: its committed offset, or its end when nothing was
    /// committed and the group starts at the latest offset (from the earliest, there is no
    /// history to rebuild).
    pub fn resume_offsets<C: rdkafka::consumer::ConsumerContext>(
        &self,
        group: &BaseConsumer<C>,
        partitions: &[i32],
        deadline: Instant,
    ) -> Vec<(i32, i64)> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = match group.committed_offsets(tpl, left(deadline)) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "Cannot read committed offsets; series windows start afresh.");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for e in committed.elements() {
            match e.offset() {
                Offset::Offset(c) if c > 0 => out.push((e.partition(), c)),
                Offset::Invalid if self.from_latest => {
                    if let Ok((_, high)) = self.consumer.fetch_watermarks(&self.topic, e.partition(), left(deadline)) {
                        out.push((e.partition(), high));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// When a rebuild that starts now must be over: every broker call and the reading share it.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Replays up to `max_records` records before each `(partition, end)` into `windows`, by
    /// `deadline`.
    pub fn rebuild(&mut self, ends: &[(i32, i64)], windows: &mut WindowStore, deadline: Instant) -> RebuildReport {
        let mut report = RebuildReport::default();
        let mut tpl = TopicPartitionList::new();
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for &(p, end) in ends {
            let low = self.consumer.fetch_watermarks(&self.topic, p, left(deadline)).map(|(low, _)| low).unwrap_or(0);
            let start = low.max(end - self.max_records);
            if start < end && tpl.add_partition_offset(&self.topic, p, Offset::Offset(start)).is_ok() {
                remaining.insert(p, end);
            }
        }
        if remaining.is_empty() {
            return report;
        }
        if let Err(error) = self.consumer.assign(&tpl) {
            tracing::warn!(%error, "Cannot read the partitions' history; series windows start afresh.");
            return report;
        }
        // Counted from the store afterwards: a set of every replayed series id would grow with
        // the history, not with `windows.max_series`.
        let mut replayed: Vec<i32> = remaining.keys().copied().collect();
        while !remaining.is_empty() && Instant::now() < deadline {
            let Some(msg) = self.consumer.poll(Duration::from_millis(100)) else { continue };
            let Ok(m) = msg else { continue };
            let p = m.partition();
            let Some(&end) = remaining.get(&p) else { continue };
            if m.offset() < end {
                report.records += 1;
                // The live path dead-letters what does not decode; here it is simply skipped,
                // and events carrying their own `window` never touch the series' state.
                if let Ok(e) = InputEvent::decode(m.payload().unwrap_or_default(), &self.schema) {
                    if let EventValues::Observation(obs) = e.values {
                        // The same rules as the live path; what they refuse was dead-lettered
                        // when it was first read.
                        let _ = windows.push(p, &e.series_id, e.timestamp_ms, &obs, &mut self.scratch);
                    }
                }
            }
            if m.offset() + 1 >= end {
                remaining.remove(&p);
            }
        }
        let _ = self.consumer.unassign();
        report.incomplete = remaining.into_keys().collect();
        report.incomplete.sort_unstable();
        if !report.incomplete.is_empty() {
            // A window with a gap would score silently wrong inputs; warming up is honest.
            windows.drop_partitions(&report.incomplete);
        }
        replayed.retain(|p| !report.incomplete.contains(p));
        report.series = windows.count_on(&replayed);
        report
    }
}

/// What is left until `deadline` for one broker call: at most 10 s, at least a moment (a call
/// with no time at all reports a timeout, which drops the partition to warm-up).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(10)).max(Duration::from_millis(1))
}
