//! A producer whose events (delivery reports, errors, statistics) are served by a thread that
//! sleeps until librdkafka has one.
//!
//! rdkafka's `ThreadedProducer` serves them with `poll(100 ms)` in a loop, and every call spins
//! through its last millisecond: rdkafka truncates the remaining wait to whole milliseconds, so
//! the final fraction becomes zero-timeout polls repeated until the deadline passes. That cost
//! about 1 % of a core per producer, idle or busy (two producers: 2.2 % of an idle worker), and
//! under load a third of the worker's CPU went to `clock_gettime` in that loop.
//!
//! Here librdkafka writes a byte to a socket whenever its event queue goes from empty to
//! non-empty (`rd_kafka_queue_io_event_enable`); the thread blocks reading that socket, then
//! serves the queue until it is empty again, one zero-timeout poll per event (a delivery report
//! covers a whole produce batch).
//!
//! The data path's producer and the alert sink use it. (Its first trial on the data path was
//! blamed for a broker-stall chaos failure that turned out to be readiness: the consumer serves
//! no statistics while a revoke drains, see `pipeline::consumer::ConsumerHealth`.)

use std::io::{Read, Write};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer, ProducerContext};
use rdkafka::ClientConfig;

/// How long the thread sleeps at most between checks for shutdown; a missed wake-up (see
/// [`serve`]) is also caught within it.
const SLEEP: Duration = Duration::from_millis(100);

/// The client's main event queue.
struct MainQueue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka queue handles may be used from any thread; this one is only read
// (`rd_kafka_queue_length`) until it is destroyed, once, when the last owner drops it.
unsafe impl Send for MainQueue {}
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn len(&self) -> usize {
        // SAFETY: the handle is valid until `drop`.
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: turns the IO event off before its socket closes, then releases the handle
        // `rd_kafka_queue_get_main` gave; the client itself lives on (`BaseProducer` owns it).
        unsafe {
            rd::rd_kafka_queue_io_event_enable(self.0, -1, std::ptr::null(), 0);
            rd::rd_kafka_queue_destroy(self.0);
        }
    }
}

/// A [`BaseProducer`] with a thread of its own serving its events; it derefs to the producer
/// (`send`, `flush` and the rest of [`Producer`]).
pub struct PolledProducer<C: ProducerContext + 'static = DefaultProducerContext> {
    producer: Arc<BaseProducer<C>>,
    /// The write end of the socket: librdkafka's, and ours to wake the thread at drop.
    wake: UnixStream,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Released at drop once the thread is joined: the IO event goes off before `wake` closes,
    /// and the handle goes before the client (librdkafka wants queue handles destroyed first).
    queue: Option<Arc<MainQueue>>,
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    fn start(producer: BaseProducer<C>) -> KafkaResult<Self> {
        let io = |e: std::io::Error| KafkaError::ClientCreation(format!("producer event socket: {e}"));
        let (mut read, wake) = UnixStream::pair().map_err(io)?;
        // librdkafka writes from its own threads and must never block on a full socket: a
        // pending byte already says "look".
        wake.set_nonblocking(true).map_err(io)?;
        read.set_read_timeout(Some(SLEEP)).map_err(io)?;
        let producer = Arc::new(producer);
        // SAFETY: the client pointer is valid while `producer` lives; the handle returned is
        // owned (and destroyed) by `MainQueue`. The payload is a static byte, and `wake`
        // outlives the enablement (`MainQueue` turns it off before `wake` is closed).
        let queue = unsafe {
            let q = rd::rd_kafka_queue_get_main(producer.client().native_ptr());
            if q.is_null() {
                return Err(KafkaError::ClientCreation("librdkafka has no main queue".into()));
            }
            rd::rd_kafka_queue_io_event_enable(q, wake.as_raw_fd(), b"!".as_ptr().cast(), 1);
            Arc::new(MainQueue(q))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("producer polling".into())
            .spawn({
                let (producer, queue, stop) = (producer.clone(), queue.clone(), stop.clone());
                move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Acquire) {
                        serve(&producer, &queue);
                        // Until librdkafka (or drop) writes, or SLEEP passes.
                        let _ = read.read(&mut buf);
                    }
                    serve(&producer, &queue);
                }
            })
            .map_err(io)?;
        Ok(PolledProducer { producer, wake, stop, thread: Some(thread), queue: Some(queue) })
    }
}

/// Serves the queue until it is empty. A zero-timeout poll takes one op off the queue (an event
/// it serves, or an internal op that yields none), so the queue only stays as long when new
/// events arrive as fast. Should polls ever stop shortening it for good (100 000 in a row), the
/// loop slows to a poll a millisecond rather than spin. (An event queued between the last poll
/// and the read finds the queue non-empty and writes nothing: `SLEEP` bounds that wait.)
fn serve<C: ProducerContext>(producer: &BaseProducer<C>, queue: &MainQueue) {
    let mut no_progress = 0u32;
    let mut len = queue.len();
    while len > 0 {
        producer.poll(Duration::ZERO);
        let now = queue.len();
        no_progress = if now < len { 0 } else { no_progress.saturating_add(1) };
        if no_progress > 100_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        len = now;
    }
}

impl<C: ProducerContext + 'static> Deref for PolledProducer<C> {
    type Target = BaseProducer<C>;
    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for PolledProducer<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = (&self.wake).write(b"!");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        drop(self.queue.take());
    }
}

impl<C: ProducerContext + 'static> FromClientConfigAndContext<C> for PolledProducer<C> {
    fn from_config_and_context(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        PolledProducer::start(BaseProducer::from_config_and_context(config, context)?)
    }
}

impl FromClientConfig for PolledProducer<DefaultProducerContext> {
    fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        PolledProducer::start(BaseProducer::from_config_and_context(config, DefaultProducerContext)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseRecord;

    /// Against librdkafka's in-process mock cluster: every delivery report is served by the
    /// thread (nobody else polls), and dropping the producer stops it.
    #[test]
    fn delivery_reports_are_served_without_anyone_polling() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer: PolledProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for i in 0..1000 {
            producer.send(BaseRecord::<(), _>::to("t").payload(&format!("m{i}"))).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(producer.in_flight_count(), 0, "delivery reports were served by the polling thread");
        drop(producer);
    }
}
