//! The consumer thread: polls `input_data`, validates and windows each event, hands it to the
//! inference thread (or the dead-letter topic), and stores offsets as deliveries are acknowledged.
//!
//! It owns the offset tracker and the per-series windows. They sit behind a mutex only because
//! librdkafka's rebalance callback runs inside `poll` and must drain revoked partitions before
//! they are released; the lock is never contended, since callbacks run on this same thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::ClientContext;

use super::publish::{Completion, InputOffset, Publisher, Token};
use super::spares::SpareStock;
use super::{EventText, Origin, PipelineError, StreamOrigin};
use crate::config::Unproducible;
use crate::event::{EventValues, FeatureSchema, InputEvent, RejectKind};
use crate::inference::Job;
use crate::otel::TRACEPARENT;
use crate::telemetry::events::{DeliveryFailed, InternalEvent, RecordUnproducible, WindowsRebuilt};
use crate::telemetry::Metrics;
use crate::window::{WindowRefusal, WindowStore};

/// State the consumer loop and the rebalance callback share.
pub struct LoopState {
    tracker: super::offsets::OffsetTracker,
    windows: WindowStore,
    completions: Receiver<Completion>,
    fatal: Option<String>,
    /// Kafka timestamp (ms) of the last event consumed per partition, for lag in seconds.
    last_timestamp: foldhash::HashMap<i32, i64>,
    /// Rebuilds the windows of newly assigned partitions (models with `window > 1`).
    rebuilder: Option<super::rebuild::WindowRebuilder>,
    /// Bumped on every assignment, so a paused consumer pauses the new partitions too.
    assignments: u64,
    /// An offset was stored since the last commit.
    uncommitted: bool,
    /// Per partition, the highest offset that became storable in this round of reports: stored
    /// once per round ([`WorkerContext::drain_ready`]), not once per report, since each
    /// `store_offset` builds a C string and looks the topic up under librdkafka's lock. At most one
    /// entry per assigned partition.
    to_store: Vec<(i32, i64)>,
}

impl LoopState {
    /// Events in flight, or offsets stored but not committed.
    fn awaits_commit(&self) -> bool {
        self.uncommitted || self.tracker.in_flight() > 0
    }

    pub fn new(
        windows: WindowStore,
        completions: Receiver<Completion>,
        rebuilder: Option<super::rebuild::WindowRebuilder>,
    ) -> LoopState {
        LoopState {
            tracker: Default::default(),
            windows,
            completions,
            fatal: None,
            last_timestamp: Default::default(),
            rebuilder,
            uncommitted: false,
            assignments: 0,
            to_store: Vec::new(),
        }
    }
}

/// The consumer's poll wait with nothing in flight and nothing to commit.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// What `/readyz` knows about the consumer, written by its callbacks and the data path's
/// producer's statistics.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    /// Input partitions this member holds after the latest rebalance.
    pub partitions: AtomicUsize,
    /// The group handed this member an assignment at least once (possibly empty).
    pub assigned_once: AtomicBool,
    /// The consumer's view: served only while the consumer polls, so it goes stale while a
    /// revoke drains in-flight events (a stall that outlasts the session timeout does that).
    consumer: BrokerView,
    /// The producer's view, served by its own polling thread: unacknowledged records are
    /// exactly what a drain waits for, so this notices the stall the consumer cannot.
    producer: BrokerView,
}

impl ConsumerHealth {
    /// The cluster answered (start-up's metadata request): both views start up.
    pub fn mark_up(&self) {
        self.consumer.up.store(true, Ordering::SeqCst);
        self.producer.up.store(true, Ordering::SeqCst);
    }

    /// A broker answered within the last statistics interval, as both clients see it.
    pub fn broker_up(&self) -> bool {
        self.consumer.up.load(Ordering::SeqCst) && self.producer.up.load(Ordering::SeqCst)
    }

    /// The consumer's statistics callback.
    pub fn observe_consumer(&self, stats: &rdkafka::Statistics) {
        self.consumer.observe(stats, true, "consumer");
    }

    /// The data path producer's statistics callback.
    pub fn observe_producer(&self, stats: &rdkafka::Statistics) {
        // An idle producer may hold no connection at all; only unanswered requests judge it.
        self.producer.observe(stats, false, "producer");
    }
}

/// One client's reading of librdkafka's broker statistics.
#[derive(Debug, Default)]
struct BrokerView {
    up: AtomicBool,
    /// Responses received per broker connection (by name) at the previous callback.
    responses: Mutex<HashMap<String, u64>>,
}

impl BrokerView {
    /// A stalled broker keeps its TCP connections `UP`, so state alone proves nothing: the
    /// cluster is up while some connection received a response since the previous callback, or,
    /// when none did, while no connection has a request waiting for one (an idle cluster). The
    /// group coordinator's logical connection counts: while a long stall holds the input
    /// partitions paused, no fetch waits on the broker's own connection and the unanswered
    /// heartbeat is what shows the stall. Outside a steady group that connection waits on
    /// JoinGroup, which a healthy coordinator may hold for the whole rebalance. Without
    /// `need_connection`, a client with no connection `UP` is not judged. `client` names it in
    /// the log line a change of verdict writes.
    fn observe(&self, stats: &rdkafka::Statistics, need_connection: bool, client: &'static str) {
        let steady = stats.cgrp.as_ref().is_none_or(|g| g.join_state == "steady");
        let mut responses = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        let (mut answered, mut waiting, mut connected) = (false, false, false);
        for b in stats.brokers.values().filter(|b| b.state == "UP" && b.source != "internal") {
            connected = true;
            // A connection seen for the first time has no interval to judge yet.
            let Some(before) = responses.insert(b.name.clone(), b.rx) else { continue };
            if b.rx > before {
                answered = true;
            } else if (b.waitresp_cnt > 0 || b.outbuf_cnt > 0) && (steady || b.source != "logical") {
                waiting = true;
            }
        }
        responses.retain(|name, _| stats.brokers.contains_key(name));
        let up = answered || ((connected || !need_connection) && !waiting);
        let was = self.up.swap(up, Ordering::SeqCst);
        if was && !up {
            tracing::warn!(
                client,
                "No broker answered in a statistics interval while requests wait; /readyz reports not ready."
            );
        } else if up && !was {
            tracing::info!(client, "A broker answers again.");
        }
    }
}

/// librdkafka consumer context: drains and commits on revoke.
pub struct WorkerContext {
    state: Mutex<LoopState>,
    input_topic: String,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Partitions held and broker liveness, for `/readyz`.
    pub health: Arc<ConsumerHealth>,
    /// What a record the broker refuses for good does (`processing.unproducible`).
    unproducible: Unproducible,
}

impl WorkerContext {
    pub fn new(
        state: LoopState,
        input_topic: &str,
        drain_timeout: Duration,
        metrics: Arc<Metrics>,
        health: Arc<ConsumerHealth>,
        unproducible: Unproducible,
    ) -> Self {
        WorkerContext {
            state: Mutex::new(state),
            input_topic: input_topic.into(),
            drain_timeout,
            metrics,
            health,
            unproducible,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LoopState> {
        // A panic while holding the lock already ends the worker; the state is still consistent
        // enough to read for shutdown.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one delivery report: counts it and stores the offset if the done prefix advanced.
    fn apply(&self, st: &mut LoopState, c: Completion) {
        let at = match c.token {
            Token::Input(at) => at,
            Token::Shadow => {
                // Shadow output is best effort: the event's offset rides on its real prediction.
                if let Err(error) = c.result {
                    tracing::warn!(%error, "Shadow prediction not delivered.");
                }
                return;
            }
        };
        let result = match c.result {
            // A record the broker will never take: retrying it after a restart would stop the
            // whole group on it forever (`processing.unproducible`).
            Err(error) if is_permanent(&error) && self.unproducible == Unproducible::Skip => {
                RecordUnproducible { partition: at.partition, offset: at.offset, error: &error }.emit(&self.metrics);
                Ok(())
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.metrics.events_acknowledged.inc();
                if let Some(offset) = st.tracker.complete(at.partition, at.offset, at.generation) {
                    // Stored when this round's reports are all applied: `drain_ready` empties
                    // this list before it returns, so nothing else ever sees it non-empty.
                    match st.to_store.iter_mut().find(|(p, _)| *p == at.partition) {
                        Some(pending) => pending.1 = offset,
                        None => st.to_store.push((at.partition, offset)),
                    }
                }
            }
            Err(error) => {
                // librdkafka already retried within `message.timeout.ms`. Committing past this
                // record would lose it, so the worker stops; the offset stays uncommitted and the
                // event is re-delivered after restart.
                DeliveryFailed { partition: at.partition, offset: at.offset, error: &error }.emit(&self.metrics);
                st.fatal.get_or_insert_with(|| {
                    format!(
                        "delivery of the record for partition {} offset {} failed: {error}",
                        at.partition, at.offset
                    )
                });
            }
        }
        self.metrics.in_flight.set(st.tracker.in_flight() as i64);
    }

    /// Applies every report that has already arrived.
    fn drain_ready(&self, st: &mut LoopState, consumer: &BaseConsumer<WorkerContext>) {
        while let Ok(c) = st.completions.try_recv() {
            self.apply(st, c);
        }
        for (partition, offset) in st.to_store.drain(..) {
            // `store_offset` stores `offset + 1`, the next offset to read.
            match consumer.store_offset(&self.input_topic, partition, offset) {
                Ok(()) => st.uncommitted = true,
                Err(error) => tracing::warn!(%error, partition, offset, "Failed to store offset."),
            }
        }
    }

    /// Waits up to `timeout` for the next report and applies it (plus any others already there).
    fn wait_one(&self, st: &mut LoopState, timeout: Duration, consumer: &BaseConsumer<WorkerContext>) -> bool {
        match st.completions.recv_timeout(timeout) {
            Ok(c) => {
                self.apply(st, c);
                self.drain_ready(st, consumer);
                true
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Waits until no event of `partitions` (all, when `None`) is in flight, or the timeout.
    /// Returns how many are still in flight.
    fn drain(&self, st: &mut LoopState, partitions: Option<&[i32]>, consumer: &BaseConsumer<WorkerContext>) -> usize {
        let deadline = Instant::now() + self.drain_timeout;
        let left = |st: &LoopState| match partitions {
            Some(p) => st.tracker.in_flight_for(p),
            None => st.tracker.in_flight(),
        };
        self.drain_ready(st, consumer);
        while left(st) > 0 && st.fatal.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            self.wait_one(st, remaining.min(Duration::from_millis(100)), consumer);
        }
        left(st)
    }
}

impl ClientContext for WorkerContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::observe_client_error(&error, reason);
    }
    /// librdkafka statistics (every `statistics.interval.ms`): broker liveness for `/readyz`, and
    /// consumer lag per input partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.health.observe_consumer(&statistics);
        let Some(topic) = statistics.topics.get(&self.input_topic) else { return };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let st = self.lock();
        for (id, p) in &topic.partitions {
            // Partition -1 is librdkafka's internal "unassigned" queue; negative lag is unknown.
            if *id < 0 || p.consumer_lag < 0 {
                continue;
            }
            let label = id.to_string();
            self.metrics.consumer_lag_messages.with_label_values(&[&label]).set(p.consumer_lag);
            let behind = match (p.consumer_lag, st.last_timestamp.get(id)) {
                (0, _) | (_, None) => 0.0,
                (_, Some(ts)) => (now_ms - ts).max(0) as f64 / 1e3,
            };
            self.metrics.consumer_lag_seconds.with_label_values(&[&label]).set(behind);
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> =
            tpl.elements().iter().filter(|e| e.topic() == self.input_topic).map(|e| e.partition()).collect();
        if partitions.is_empty() {
            return;
        }
        let mut st = self.lock();
        let left = self.drain(&mut st, Some(&partitions), consumer);
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                ?partitions,
                "Revoke timed out; uncommitted events will be re-delivered to the next owner."
            );
        }
        for p in &partitions {
            st.tracker.forget(*p);
        }
        let dropped = st.windows.drop_partitions(&partitions);
        // A revoked partition's lag is the next owner's to report.
        for p in &partitions {
            let _ = self.metrics.consumer_lag_messages.remove_label_values(&[&p.to_string()]);
            let _ = self.metrics.consumer_lag_seconds.remove_label_values(&[&p.to_string()]);
        }
        self.metrics.series_windows.set(st.windows.len() as i64);
        self.metrics.in_flight.set(st.tracker.in_flight() as i64);
        drop(st);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "Commit on revoke failed."),
        }
        tracing::info!(?partitions, series_dropped = dropped, "Partitions revoked.");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // What this member holds now, whatever the protocol (eager or cooperative) handed over.
        let held = consumer
            .assignment()
            .map_or(0, |tpl| tpl.elements().iter().filter(|e| e.topic() == self.input_topic).count());
        self.health.partitions.store(held, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> =
                    tpl.elements().iter().filter(|e| e.topic() == self.input_topic).map(|e| e.partition()).collect();
                tracing::info!(?partitions, "Partitions assigned.");
                let mut st = self.lock();
                st.assignments += 1;
                if let Some(mut rebuilder) = st.rebuilder.take().filter(|_| !partitions.is_empty()) {
                    // Before the first fetch of these partitions: their events must not be scored
                    // with windows that are still being rebuilt.
                    let started = Instant::now();
                    let deadline = rebuilder.deadline();
                    let ends = rebuilder.resume_offsets(consumer, &partitions, deadline);
                    let report = rebuilder.rebuild(&ends, &mut st.windows, deadline);
                    st.rebuilder = Some(rebuilder);
                    self.metrics.series_windows.set(st.windows.len() as i64);
                    WindowsRebuilt {
                        partitions: &partitions,
                        series: report.series,
                        records: report.records,
                        incomplete: &report.incomplete,
                        took: started.elapsed(),
                    }
                    .emit(&self.metrics);
                }
                drop(st);
                self.health.assigned_once.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance error."),
        }
    }
}

/// The inference thread's queue, as the consumer feeds it: every job is counted as unscored.
pub struct JobQueue {
    tx: SyncSender<Job<Origin>>,
    unscored: super::Unscored,
}

impl JobQueue {
    pub fn new(tx: SyncSender<Job<Origin>>, unscored: super::Unscored) -> JobQueue {
        JobQueue { tx, unscored }
    }

    /// Fails only if the inference thread is gone.
    fn send(&self, job: Job<Origin>) -> Result<(), ()> {
        self.unscored.add();
        self.tx.send(job).map_err(|_| ())
    }
}

/// What the consumer thread needs besides the consumer itself.
pub struct ConsumerLoop {
    pub jobs: JobQueue,
    /// Buffers of scored events to decode the next ones into.
    pub spares: SpareStock,
    pub publisher: Publisher,
    pub schema: FeatureSchema,
    pub max_in_flight: usize,
    /// `consumer.max_in_flight_bytes`.
    pub max_in_flight_bytes: usize,
    pub shutdown: crate::shutdown::Shutdown,
    pub metrics: Arc<Metrics>,
    /// See `processing.passthrough`.
    pub passthrough: bool,
    /// The A/B candidate's traffic share, when one is configured.
    pub candidate_share: Option<f64>,
    /// `consumer.commit_interval_ms`.
    pub commit_interval: Duration,
}

/// Commits the stored offsets without waiting for the broker's answer (a failure is retried by
/// the next commit, or by the synchronous one on revoke and shutdown).
fn commit_stored(consumer: &BaseConsumer<WorkerContext>) {
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "Commit failed; the next one retries it."),
    }
}

/// How long the in-flight caps must hold before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// At a cap, how often `poll` still runs to serve rebalances and other callbacks.
const SERVE_EVERY: Duration = Duration::from_millis(100);
/// At the unscored limit, the longest wait for a scored batch before the loop looks again (a
/// scored batch ends it at once).
const MODEL_WAIT: Duration = Duration::from_millis(10);

/// Backpressure by `pause`/`resume` once a cap holds: the consumer keeps polling (rebalances and
/// other callbacks are served from `poll`) but fetches nothing.
#[derive(Default)]
struct Pause {
    /// The assignment (see `LoopState::assignments`) that was paused, while paused.
    paused: Option<u64>,
}

impl Pause {
    fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Pauses the current assignment, unless this very assignment is paused already.
    fn hold(&mut self, consumer: &BaseConsumer<WorkerContext>, assignment: u64) {
        if self.paused == Some(assignment) {
            return;
        }
        match consumer.assignment().and_then(|tpl| consumer.pause(&tpl)) {
            Ok(()) => self.paused = Some(assignment),
            Err(error) => tracing::warn!(%error, "Cannot pause the input partitions."),
        }
    }

    fn release(&mut self, consumer: &BaseConsumer<WorkerContext>) {
        if self.paused.is_none() {
            return;
        }
        match consumer.assignment().and_then(|tpl| consumer.resume(&tpl)) {
            Ok(()) => self.paused = None,
            Err(error) => tracing::warn!(%error, "Cannot resume the input partitions."),
        }
    }
}

impl ConsumerLoop {
    /// Runs until shutdown or a fatal error, then drains, commits and leaves the group.
    pub fn run(self, consumer: BaseConsumer<WorkerContext>) -> Result<(), PipelineError> {
        let ConsumerLoop {
            jobs,
            mut spares,
            publisher,
            schema,
            max_in_flight,
            max_in_flight_bytes,
            shutdown,
            metrics,
            passthrough,
            candidate_share,
            commit_interval,
        } = self;
        let mut last_commit = Instant::now();
        let mut pause = Pause::default();
        let mut full_since: Option<Instant> = None;
        let mut last_serve = Instant::now();
        // One clock reading per round, taken after each poll and each wait: three readings per
        // record cost a few per cent of the worker's CPU, and nothing here needs finer time.
        let mut now = Instant::now();
        let ctx = consumer.context();
        let mut input = Vec::new();
        let mut last_poll_error: Option<Instant> = None;
        jobs.unscored.register_consumer();
        let max_unscored = jobs.unscored.limit();
        let to = Route { jobs: &jobs, publisher: &publisher, schema: &schema, metrics: &metrics, candidate_share };
        while !shutdown.is_triggered() {
            let wait_for_model = {
                let mut st = ctx.lock();
                ctx.drain_ready(&mut st, &consumer);
                if st.fatal.is_some() {
                    break;
                }
                // Commit soon after an acknowledgement, not on librdkafka's auto-commit timer: what
                // a SIGKILLed replica acknowledged but had not committed is re-read, and
                // duplicated, by the partition's next owner.
                if st.uncommitted && now.duration_since(last_commit) >= commit_interval {
                    st.uncommitted = false;
                    last_commit = now;
                    commit_stored(&consumer);
                }
                let (n, bytes) = (st.tracker.in_flight(), st.tracker.in_flight_bytes());
                let unscored = jobs.unscored.get();
                metrics.unscored.set(unscored as i64);
                let acks_full = n >= max_in_flight || bytes >= max_in_flight_bytes;
                let full = acks_full || unscored >= max_unscored;
                if full {
                    // At a cap, acknowledgements (or the model) usually free room within
                    // milliseconds: wait for them without fetching. Only a cap held for
                    // PAUSE_AFTER (a stalled broker or model) pauses the partitions: pausing purges
                    // what was prefetched, which costs a refetch every time.
                    let since = *full_since.get_or_insert(now);
                    if now.duration_since(since) >= PAUSE_AFTER {
                        pause.hold(&consumer, st.assignments);
                    }
                } else {
                    full_since = None;
                    if n <= max_in_flight / 4 * 3
                        && bytes <= max_in_flight_bytes / 4 * 3
                        && unscored <= max_unscored / 4 * 3
                    {
                        pause.release(&consumer);
                    }
                }
                if acks_full || pause.is_paused() {
                    ctx.wait_one(&mut st, Duration::from_millis(50), &consumer);
                    now = Instant::now();
                }
                // Only the model holds the consumer back: wait for a scored batch (below, without
                // the state's lock), not for a delivery report.
                full && !acks_full && !pause.is_paused()
            };
            if wait_for_model {
                jobs.unscored.wait_for_room(MODEL_WAIT);
                now = Instant::now();
            }
            // At a cap (or paused), poll only to serve rebalances and other callbacks, at most
            // every SERVE_EVERY: a record it hands over anyway is handled, so the caps are
            // exceeded by at most one record per SERVE_EVERY until the pause holds. (Every round
            // at a cap waited above, so `now` is fresh.)
            let at_cap = full_since.is_some() || pause.is_paused();
            if at_cap && now.duration_since(last_serve) < SERVE_EVERY {
                continue;
            }
            let wait = if at_cap {
                last_serve = now;
                Duration::ZERO
            } else if ctx.lock().awaits_commit() {
                // Acknowledgements arrive on another thread while `poll` blocks: wake up in time
                // to commit them.
                commit_interval.min(Duration::from_millis(50))
            } else {
                // Nothing in flight: a record ends the wait at once, so only a shutdown waits on
                // it. Waking less often is most of what an idle worker costs.
                IDLE_POLL
            };
            let polled = consumer.poll(wait);
            now = Instant::now();
            let message = match polled {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    // Poll errors are broker-side conditions librdkafka retries itself; log them at
                    // most once a second so a broker outage does not flood the log.
                    if last_poll_error.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
                        tracing::warn!(%error, "Consumer error.");
                        last_poll_error = Some(now);
                    }
                    continue;
                }
            };
            metrics.events_consumed.inc();
            let mut st = ctx.lock();
            if passthrough {
                let payload = message.payload().unwrap_or_default();
                let token = begin(&mut st, message.partition(), message.offset(), payload.len());
                publisher.forward(token, message.key(), message.payload().unwrap_or_default());
                continue;
            }
            handle(&message, &mut st, &to, &mut spares, &mut input, now);
            metrics.in_flight.set(st.tracker.in_flight() as i64);
        }

        // Stop feeding the inference thread; it finishes what is queued and exits.
        drop(jobs);
        let mut st = ctx.lock();
        let left = ctx.drain(&mut st, None, &consumer);
        let fatal = st.fatal.take();
        drop(st);
        if left > 0 {
            tracing::warn!(in_flight = left, "Shutdown timed out; uncommitted events will be re-delivered.");
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "Final commit failed."),
        }
        // Dropping the consumer closes it, which leaves the group.
        drop(consumer);
        match fatal {
            Some(reason) => Err(PipelineError::Delivery(reason)),
            None => Ok(()),
        }
    }
}

/// Starts tracking a consumed record.
fn begin(st: &mut LoopState, partition: i32, offset: i64, bytes: usize) -> InputOffset {
    let begun = st.tracker.begin_sized(partition, offset, bytes);
    if begun.reset {
        tracing::warn!(
            partition,
            offset,
            "Offsets went back without a rebalance (auto.offset.reset after log truncation?); in-flight events of this partition are re-read from here."
        );
    }
    InputOffset { partition, offset, generation: begun.generation }
}

/// Errors that no retry of the same record can fix: the broker (or librdkafka's own check)
/// refuses the record itself, not the moment.
fn is_permanent(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::InvalidRecord
        )
    )
}

/// Where `handle` sends an event, and what it checks it against.
struct Route<'a> {
    jobs: &'a JobQueue,
    publisher: &'a Publisher,
    schema: &'a FeatureSchema,
    metrics: &'a Metrics,
    /// The A/B candidate's traffic share, when one is configured.
    candidate_share: Option<f64>,
}

/// Validates one message (polled at `received`) and routes it: to the inference thread, or to
/// the dead-letter topic. `input` is scratch space for a series window.
fn handle(
    message: &BorrowedMessage<'_>,
    st: &mut LoopState,
    to: &Route<'_>,
    spares: &mut SpareStock,
    input: &mut Vec<f32>,
    received: Instant,
) {
    let Route { jobs, publisher, schema, metrics, candidate_share: route } = *to;
    let token = begin(st, message.partition(), message.offset(), message.payload_len());
    if let Some(ts) = message.timestamp().to_millis() {
        st.last_timestamp.insert(token.partition, ts);
    }
    let payload = message.payload().unwrap_or_default();
    let traceparent = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == TRACEPARENT))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        // A W3C traceparent is 55 characters; anything much longer is not one, and it would be
        // copied onto the prediction.
        .filter(|v| v.len() <= 128)
        .map(str::to_string);
    let span = crate::otel::process_span(
        || message.topic(),
        token.partition,
        token.offset,
        message.key(),
        traceparent.as_deref(),
    );
    let mut spare = spares.input();
    let event = match InputEvent::decode_ref(payload, schema, &mut spare) {
        Ok(e) => e,
        Err(e) => {
            if let Some(span) = &span {
                span.failed(e.kind.as_str(), &e.reason);
            }
            publisher.dead_letter(token, message.key(), payload, e.kind, &e.reason);
            return;
        }
    };
    if let Some(span) = &span {
        span.set_message_id(&event.id);
    }
    if event.extra_features > 0 {
        metrics.extra_features.inc_by(u64::from(event.extra_features));
    }
    let (values, warmup, gap_filled) = match event.values {
        EventValues::Window(w) => (w, false, 0),
        EventValues::Observation(obs) if schema.window == 1 => (obs, false, 0),
        EventValues::Observation(obs) => {
            let filled = match st.windows.push(token.partition, &event.series_id, event.timestamp_ms, &obs, input) {
                Ok(filled) => filled,
                Err(refusal) => {
                    metrics.window_cases.with_label_values(&[refusal.case()]).inc();
                    let (kind, reason) = match &refusal {
                        WindowRefusal::Late { .. } => (RejectKind::LateObservation, refusal.to_string()),
                        WindowRefusal::OffGrid { .. } | WindowRefusal::Future { .. } => {
                            (RejectKind::InvalidField, format!("`timestamp` {:?}: {refusal}", event.timestamp))
                        }
                    };
                    if let Some(span) = &span {
                        span.failed(kind.as_str(), &reason);
                    }
                    publisher.dead_letter(token, message.key(), payload, kind, &reason);
                    return;
                }
            };
            if filled.evicted {
                metrics.series_evicted.inc();
            }
            for (case, n) in filled.cases() {
                metrics.window_cases.with_label_values(&[case]).inc_by(n);
            }
            metrics.series_windows.set(st.windows.len() as i64);
            spare.clear();
            spare.extend_from_slice(input);
            (spare, filled.padded, filled.gap_filled as u32)
        }
    };
    let candidate = route.is_some_and(|share| is_candidate(&event.series_id, share));
    let origin = StreamOrigin {
        token,
        span,
        text: EventText::new_in(spares.text(), payload, &event.id, &event.series_id, &event.timestamp),
        warmup,
        gap_filled,
        received,
        traceparent,
    };
    // The channel holds the unscored limit (or `max_in_flight`, when lower) and the loop stops
    // fetching at that many, so this send does not block. It fails only if the inference thread
    // died, which the worker notices when joining it; the event then stays uncommitted.
    if jobs.send(Job { input: values, candidate, origin: Origin::Stream(origin) }).is_err() {
        st.fatal.get_or_insert_with(|| "the inference thread stopped".into());
    }
}

/// Sticky A/B routing: a series always goes to the same variant, so its per-series window is
/// scored by one model only and its predictions never flip between models mid-series.
pub fn is_candidate(series_id: &str, share: f64) -> bool {
    // FNV-1a: stable across processes, versions and replicas (unlike std's RandomState).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in series_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h % 10_000) as f64) < share * 10_000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn candidate_routing_is_sticky_and_matches_the_share() {
        let n = 20_000;
        let picked = (0..n).filter(|i| super::is_candidate(&format!("series-{i}"), 0.25)).count();
        let share = picked as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
        assert!(
            (0..100).all(|i| super::is_candidate(&format!("s{i}"), 0.3) == super::is_candidate(&format!("s{i}"), 0.3))
        );
        assert!(!(0..1000).any(|i| super::is_candidate(&format!("s{i}"), 0.0)));
        assert!((0..1000).all(|i| super::is_candidate(&format!("s{i}"), 1.0)));
    }

    /// One statistics callback: `(name, source, rx, waitresp_cnt)` per `UP` connection.
    fn stats(join_state: &str, brokers: &[(&str, &str, u64, i64)]) -> rdkafka::Statistics {
        // A producer has no group.
        let cgrp = (!join_state.is_empty())
            .then(|| rdkafka::statistics::ConsumerGroup { join_state: join_state.into(), ..Default::default() });
        let mut s = rdkafka::Statistics { cgrp, ..Default::default() };
        for &(name, source, rx, waitresp_cnt) in brokers {
            let b = rdkafka::statistics::Broker {
                name: name.into(),
                source: source.into(),
                state: "UP".into(),
                rx,
                waitresp_cnt,
                ..Default::default()
            };
            s.brokers.insert(name.into(), b);
        }
        s
    }

    #[test]
    fn a_stalled_broker_is_down_even_while_the_partitions_are_paused() {
        let health = super::ConsumerHealth::default();
        health.mark_up();
        let (broker, coordinator, bootstrap) = ("localhost:9092/1", "GroupCoordinator", "localhost:9092/bootstrap");
        health.observe_consumer(&stats("steady", &[(broker, "learned", 10, 1), (coordinator, "logical", 5, 0)]));
        assert!(health.broker_up());
        // Fetches answered: up.
        health.observe_consumer(&stats("steady", &[(broker, "learned", 20, 1), (coordinator, "logical", 5, 0)]));
        assert!(health.broker_up());
        // Stalled with the partitions paused: no fetch waits on the broker, an idle bootstrap
        // connection is UP, and only the coordinator's heartbeat is unanswered.
        let stalled = [(broker, "learned", 20, 0), (coordinator, "logical", 5, 1), (bootstrap, "configured", 3, 0)];
        health.observe_consumer(&stats("steady", &stalled));
        assert!(!health.broker_up());
        // The same picture during a rebalance is a JoinGroup the coordinator may hold: not down.
        health.observe_consumer(&stats("wait-join", &stalled));
        assert!(health.broker_up());
        // A fetch waiting a whole interval on the broker's own connection is down in any state.
        health.observe_consumer(&stats("wait-join", &[(broker, "learned", 20, 1), (coordinator, "logical", 5, 1)]));
        assert!(!health.broker_up());
        // Answers again.
        health.observe_consumer(&stats("steady", &[(broker, "learned", 21, 1), (coordinator, "logical", 6, 0)]));
        assert!(health.broker_up());
        // Idle and nothing waiting: up; no connection UP at all: down.
        health.observe_consumer(&stats("steady", &[(broker, "learned", 21, 0), (coordinator, "logical", 6, 0)]));
        assert!(health.broker_up());
        health.observe_consumer(&stats("steady", &[]));
        assert!(!health.broker_up());
    }

    #[test]
    fn unacknowledged_records_show_a_stall_the_consumer_does_not_see() {
        let health = super::ConsumerHealth::default();
        health.mark_up();
        let broker = "localhost:9092/1";
        // An idle producer with no connection yet is not judged.
        health.observe_producer(&stats("", &[]));
        assert!(health.broker_up());
        health.observe_producer(&stats("", &[(broker, "learned", 4, 0)]));
        health.observe_producer(&stats("", &[(broker, "learned", 9, 2)]));
        assert!(health.broker_up());
        // Produce requests unanswered for an interval while the consumer's view is stale (a
        // revoke drains): down.
        health.observe_producer(&stats("", &[(broker, "learned", 9, 2)]));
        assert!(!health.broker_up());
        health.observe_producer(&stats("", &[(broker, "learned", 12, 0)]));
        assert!(health.broker_up());
    }
}
