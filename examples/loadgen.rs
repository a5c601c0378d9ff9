//! The bench's fixed-rate load, in Rust: sends events to a worker's input topic at a fixed rate
//! and reads its output back, then prints the latency figures as one JSON line.
//!
//! `scripts/bench.py` used to do this in one Python loop (confluent-kafka producer and reader).
//! At 115 000 events/s that loop took 60–90 % of one of the machine's two cores, and the broker
//! and the worker slowed with it, so much of what the bench reported as latency added by a worker
//! was contention in the rig (`bench/FINDINGS.md`, "Where the latency at high rates goes"). Here
//! the producer and the reader are librdkafka clients on two threads with no per-event
//! interpreter work; the JSON line says what the load itself cost (`load_cpu_percent`, of one
//! core, over the whole run).
//!
//! The events are byte for byte the ones `bench.py` builds (`Events`): the bench writes the CO2
//! rows as it serializes them to `--rows`, one JSON array per line, so float formatting cannot
//! differ between the two languages.
//!
//! Figures, as the Python loop reported them: end-to-end latency from handing an event to the
//! producer to reading its output back; "to produce", from handing it over to the output
//! record's timestamp (stamped by the worker's producer); and the worker's own `latency_ms` where
//! its records carry one.
//!
//! ```text
//! loadgen --bootstrap HOST:PORT --input TOPIC --output TOPIC --rows FILE --form observation|window
//!         --window N --prefix P --rate EVENTS_PER_S --seconds S [--partitions 3] [-X key=value]...
//! ```
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The event timestamp every bench event carries (`TIMESTAMP` in bench.py).
const TIMESTAMP: &str = "2026-11-26T19:00:00Z";
/// Series per run (`i % 200` in bench.py).
const SERIES: usize = 200;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// The CO2 rows, one JSON array per line, as bench.py serializes them.
    #[arg(long)]
    rows: PathBuf,
    #[arg(long, value_parser = ["observation", "window"])]
    form: String,
    #[arg(long)]
    window: usize,
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    rate: f64,
    #[arg(long)]
    seconds: f64,
    /// Stop sending once this many seconds of events are unanswered (queues are building up).
    #[arg(long, default_value_t = 1.0)]
    abort_s: f64,
    /// Read each record's `latency_ms` (streamcast's own figure). Off for workers that write none,
    /// such as passthrough, whose records would otherwise be scanned end to end for it.
    #[arg(long)]
    own_latency: bool,
    /// Print events 0..N (key, tab, value), one per line, and exit: to check them against bench.py's.
    #[arg(long)]
    dump: Option<usize>,
    /// A librdkafka property for both clients (TLS for the bench's TLS case).
    #[arg(short = 'X', value_parser = key_value)]
    extra: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

/// Event `i` into `out`, exactly as bench.py's `Events.__call__`.
fn event(i: usize, args: &Args, rows: &[String], out: &mut Vec<u8>) -> usize {
    use std::io::Write;
    let series = i % SERIES;
    out.clear();
    write!(out, r#"{{"id":"{}-{i}","series_id":"s-{series}","timestamp":"{TIMESTAMP}","features":"#, args.prefix)
        .expect("writes to a Vec");
    if args.form == "observation" {
        out.extend_from_slice(rows[(i * 7 + series * 31) % rows.len()].as_bytes());
        out.push(b'}');
    } else {
        let start = (i * 7 + series * 31) % (rows.len() - args.window + 1);
        out.extend_from_slice(rows[start + args.window - 1].as_bytes());
        out.extend_from_slice(br#","window":["#);
        for (k, row) in rows[start..start + args.window].iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(row.as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
    series
}

/// The event index of an output record of this run: every worker writes `id` first (the seed
/// worker's `json.dumps` with a space after the colon).
fn index(value: &[u8], prefix: &[u8]) -> Option<usize> {
    let rest = value.strip_prefix(br#"{"id":"#)?.trim_ascii_start().strip_prefix(b"\"")?;
    let rest = rest.strip_prefix(prefix)?.strip_prefix(b"-")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The worker's own `latency_ms`, where the record has one.
fn own_latency(value: &[u8]) -> Option<f64> {
    const KEY: &[u8] = br#""latency_ms":"#;
    let at = value.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = value[at..].trim_ascii_start();
    let end = rest.iter().position(|&b| !(b.is_ascii_digit() || b"-+.eE".contains(&b))).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn config(args: &Args) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    for (k, v) in &args.extra {
        c.set(k, v);
    }
    c
}

/// What the reader collected.
#[derive(Default)]
struct Collected {
    latency_ms: Vec<f64>,
    to_produce_ms: Vec<f64>,
    in_worker_ms: Vec<f64>,
}

/// The reader thread's side of a run: what it matches answers against, and the counters it
/// shares with the sending loop.
struct ReadBack {
    reader: BaseConsumer,
    /// This run's id prefix: records without it belong to another run.
    prefix: Vec<u8>,
    /// Parse the worker's own `latency_ms` (streamcast only).
    own: bool,
    /// Each event's send time, nanoseconds after `t0` plus one (0: not sent yet).
    sent_ns: Arc<Vec<AtomicU64>>,
    answered: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    t0: Instant,
    /// `t0` on the wall clock, for the records' producer timestamps.
    wall_t0_ms: f64,
}

fn read_back(run: ReadBack) -> Collected {
    let ReadBack { reader, prefix, own, sent_ns, answered, done, t0, wall_t0_ms } = run;
    let mut seen = vec![false; sent_ns.len()];
    let mut got = Collected::default();
    while !done.load(Ordering::Acquire) {
        let Some(Ok(m)) = reader.poll(Duration::from_millis(50)) else { continue };
        let now_ns = t0.elapsed().as_nanos() as u64;
        let Some(i) = m.payload().and_then(|v| index(v, &prefix)) else { continue };
        if i >= seen.len() || seen[i] {
            continue; // another run's record, or a redelivery: the first answer counts
        }
        let sent = sent_ns[i].load(Ordering::Acquire);
        if sent == 0 {
            continue;
        }
        let sent = sent - 1; // stored plus one, so that 0 means "not sent"
        seen[i] = true;
        got.latency_ms.push((now_ns.saturating_sub(sent)) as f64 / 1e6);
        if let Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) = m.timestamp() {
            got.to_produce_ms.push(ms as f64 - (wall_t0_ms + sent as f64 / 1e6));
        }
        if own {
            if let Some(v) = m.payload().and_then(own_latency) {
                got.in_worker_ms.push(v);
            }
        }
        answered.fetch_add(1, Ordering::Release);
    }
    got
}

/// This process's CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// bench.py's `quantile`: the element at `floor(p * (n - 1))` of the sorted figures.
fn quantile(xs: &[f64], p: f64) -> Option<f64> {
    (!xs.is_empty()).then(|| xs[((p * (xs.len() - 1) as f64) as usize).min(xs.len() - 1)])
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    let args = Args::parse();
    let rows: Vec<String> = std::fs::read_to_string(&args.rows)
        .expect("--rows is readable")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(rows.len() >= args.window, "--rows has fewer rows than the window");
    if let Some(n) = args.dump {
        let mut buf = Vec::new();
        for i in 0..n {
            let series = event(i, &args, &rows, &mut buf);
            println!("s-{series}\t{}", String::from_utf8_lossy(&buf));
        }
        return;
    }
    let total = (args.rate * args.seconds) as usize;

    // The reader starts at each partition's end: earlier output (warm-up, backlog) is not this run's.
    let reader: BaseConsumer = config(&args)
        .set("group.id", format!("bench-loadgen-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    for p in 0..args.partitions {
        let (_, high) = reader.fetch_watermarks(&args.output, p, Duration::from_secs(10)).expect("watermarks");
        assignment.add_partition_offset(&args.output, p, Offset::Offset(high)).expect("offset");
    }
    reader.assign(&assignment).expect("assign");

    let producer: BaseProducer = config(&args)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .create()
        .expect("producer");
    // Connected before the clock starts: the first events must not wait for the connection and
    // the topic's metadata (over TLS that is several round trips).
    producer.client().fetch_metadata(Some(&args.input), Duration::from_secs(10)).expect("metadata");
    let cpu_start = cpu_seconds();

    let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let answered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let wall_t0_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64() * 1e3;
    let collector = {
        let run = ReadBack {
            reader,
            prefix: args.prefix.clone().into_bytes(),
            own: args.own_latency,
            sent_ns: sent_ns.clone(),
            answered: answered.clone(),
            done: done.clone(),
            t0,
            wall_t0_ms,
        };
        thread::spawn(move || read_back(run))
    };

    let limit = (args.rate * args.abort_s).max(1000.0) as usize;
    let (mut i, mut aborted, mut buf) = (0usize, false, Vec::with_capacity(4096));
    let keys: Vec<String> = (0..SERIES).map(|s| format!("s-{s}")).collect();
    let tick = Duration::from_millis(1);
    while i < total {
        let due = total.min((t0.elapsed().as_secs_f64() * args.rate) as usize + 1);
        while i < due {
            let series = event(i, &args, &rows, &mut buf);
            let key = &keys[series];
            loop {
                sent_ns[i].store(t0.elapsed().as_nanos() as u64 + 1, Ordering::Release);
                match producer.send(BaseRecord::to(&args.input).key(key).payload(&buf)) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
            i += 1;
        }
        producer.poll(Duration::ZERO);
        if i - answered.load(Ordering::Acquire) > limit {
            aborted = true;
            break;
        }
        // Sleep to the next event's due time, at most one tick.
        let next = Duration::from_secs_f64(i as f64 / args.rate);
        thread::sleep(next.saturating_sub(t0.elapsed()).min(tick));
    }
    let sent_span = t0.elapsed().as_secs_f64();
    if let Err(e) = producer.flush(Duration::from_secs(30)) {
        // What was not delivered counts as unanswered, as in bench.py's Python loop.
        eprintln!("loadgen: flush: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs_f64((i as f64 / args.rate).max(30.0));
    while answered.load(Ordering::Acquire) < i && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    let mut got = collector.join().expect("reader thread");
    for xs in [&mut got.latency_ms, &mut got.to_produce_ms, &mut got.in_worker_ms] {
        xs.sort_by(f64::total_cmp);
    }
    let q = |xs: &[f64], p| quantile(xs, p).map(round2);
    let mut out = serde_json::json!({
        "target_rate": (args.rate * 10.0).round() / 10.0,
        "achieved_rate": (i as f64 / sent_span * 10.0).round() / 10.0,
        "events": i,
        "answered": got.latency_ms.len(),
        "p50_ms": q(&got.latency_ms, 0.50),
        "p99_ms": q(&got.latency_ms, 0.99),
        "p50_to_produce_ms": q(&got.to_produce_ms, 0.50),
        "p99_to_produce_ms": q(&got.to_produce_ms, 0.99),
        "load": "rust",
        // The load's own CPU over the whole run (sending and reading back), % of one core.
        "load_cpu_percent": ((cpu_seconds() - cpu_start) / t0.elapsed().as_secs_f64() * 1000.0).round() / 10.0,
    });
    if !got.in_worker_ms.is_empty() {
        out["p50_in_worker_ms"] = q(&got.in_worker_ms, 0.50).into();
        out["p99_in_worker_ms"] = q(&got.in_worker_ms, 0.99).into();
    }
    if aborted {
        out["aborted_after_s"] = ((sent_span * 10.0).round() / 10.0).into();
    }
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_runs_index_and_the_workers_latency() {
        assert_eq!(index(br#"{"id":"hr0-123","x":1}"#, b"hr0"), Some(123));
        assert_eq!(index(br#"{"id":"hr1-123","x":1}"#, b"hr0"), None);
        assert_eq!(index(br#"{"id":"bl-5"}"#, b"hr"), None);
        assert_eq!(index(br#"{"id": "lat-7", "x": 1}"#, b"lat"), Some(7));
        assert_eq!(own_latency(br#"{"id": "a", "latency_ms": 0.5}"#), Some(0.5));
        assert_eq!(own_latency(br#"{"id":"a","latency_ms":1.25,"m":2}"#), Some(1.25));
        assert_eq!(own_latency(br#"{"id":"a"}"#), None);
    }

    /// The bytes bench.py's `Events` builds for these rows (printed by it, with `ROW_JSON` and
    /// `DATA` set to the four rows below).
    #[test]
    fn builds_the_events_bench_py_builds() {
        let rows: Vec<String> = ["[1.5,2.0]", "[3.25,4.0]", "[5.0,6.0]", "[7.0,8.5]"].map(String::from).into();
        let head = |i: usize, s: usize| {
            format!(r#"{{"id":"hr1-{i}","series_id":"s-{s}","timestamp":"2026-11-26T19:00:00Z","features":"#)
        };
        let cases = [
            ("observation", 0, 0, "[1.5,2.0]}"),
            ("observation", 5, 5, "[5.0,6.0]}"),
            ("observation", 201, 1, "[5.0,6.0]}"),
            ("window", 0, 0, r#"[3.25,4.0],"window":[[1.5,2.0],[3.25,4.0]]}"#),
            ("window", 5, 5, r#"[5.0,6.0],"window":[[3.25,4.0],[5.0,6.0]]}"#),
            ("window", 201, 1, r#"[5.0,6.0],"window":[[3.25,4.0],[5.0,6.0]]}"#),
        ];
        let mut buf = Vec::new();
        for (form, i, series, tail) in cases {
            let args = Args::parse_from([
                "loadgen",
                "--bootstrap",
                "b",
                "--input",
                "i",
                "--output",
                "o",
                "--rows",
                "r",
                "--form",
                form,
                "--window",
                "2",
                "--prefix",
                "hr1",
                "--rate",
                "1",
                "--seconds",
                "1",
            ]);
            assert_eq!(event(i, &args, &rows, &mut buf), series);
            assert_eq!(String::from_utf8(buf.clone()).unwrap(), head(i, series) + tail, "{form} {i}");
        }
    }
}
