//! Integration-test helpers: a real broker process, random topic names, the real worker binary,
//! and an independent Kafka client to produce inputs and read outputs.
//!
//! The broker is a separate `nisshi` process. `make test` starts one and exports
//! `STREAMCAST_TEST_BOOTSTRAP`; without it, the first test that needs a broker starts one itself
//! (found on PATH or where `make broker` installs it) for the rest of the test binary.
#![allow(dead_code)]

pub mod byom;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamcast")
}

/// Bootstrap servers of the test broker.
pub fn bootstrap() -> String {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER
        .get_or_init(|| match std::env::var("STREAMCAST_TEST_BOOTSTRAP") {
            Ok(s) if !s.is_empty() => s,
            _ => start_own_broker(),
        })
        .clone()
}

fn nisshi_path() -> PathBuf {
    if let Ok(p) = std::env::var("NISSHI") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let user = Path::new(&home).join(".local/share/streamcast/nisshi-0.6.0/bin/nisshi");
    if user.is_file() {
        return user;
    }
    PathBuf::from("nisshi")
}

/// Starts a broker owned by this test process. It is started from a thread that never exits,
/// with PDEATHSIG, so the broker dies with the test binary instead of outliving it.
fn start_own_broker() -> String {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(nisshi_path());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://streamcast/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let _ = tx.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
        loop {
            std::thread::park();
        }
    });
    if let Err(e) = rx.recv().expect("broker thread reports") {
        panic!("cannot start nisshi ({e}); run `make broker` or `make test`, or set STREAMCAST_TEST_BOOTSTRAP");
    }
    wait_for_port(port, Duration::from_secs(30));
    format!("127.0.0.1:{port}")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not open port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::SeqCst))
}

/// Topic names for one test.
#[derive(Debug, Clone)]
pub struct Topics {
    pub input: String,
    pub predictions: String,
    pub dlq: String,
    pub actuals: String,
    pub metrics: String,
    pub alerts: String,
    pub group: String,
}

impl Topics {
    /// Creates fresh topics; `input` gets `partitions` partitions.
    pub fn create(partitions: i32) -> Topics {
        let t = Topics {
            input: unique("in"),
            predictions: unique("pred"),
            dlq: unique("dlq"),
            actuals: unique("act"),
            metrics: unique("met"),
            alerts: unique("alr"),
            group: unique("grp"),
        };
        create_topics(&[
            (&t.input, partitions),
            (&t.predictions, 3),
            (&t.dlq, 1),
            (&t.actuals, partitions),
            (&t.metrics, 1),
            (&t.alerts, 1),
        ]);
        t
    }

    /// A worker config TOML for these topics.
    pub fn config(&self, model: &str, version: &str, extra: &str) -> String {
        format!(
            r#"
[kafka]
"bootstrap.servers" = "{servers}"
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"auto.commit.interval.ms" = 200

[consumer]
group_id = "{group}"

[topics]
input = "{input}"
predictions = "{pred}"
dlq = "{dlq}"
actuals = "{act}"
metrics = "{met}"
alerts = "{alr}"

[model]
root = "{root}"
name = "{model}"
version = "{version}"
execution_provider = "cpu"

[http]
listen = "127.0.0.1:0"

[telemetry]
log_format = "json"
log_level = "info"
{extra}
"#,
            servers = bootstrap(),
            group = self.group,
            input = self.input,
            pred = self.predictions,
            dlq = self.dlq,
            act = self.actuals,
            met = self.metrics,
            alr = self.alerts,
            root = repo().join("models").display(),
        )
    }
}

/// `config` serving bundles from `root` instead of the shipped `models/`, with the registry
/// watcher polling every `watch_interval`.
pub fn with_model_root(config: &str, root: &Path, watch_interval: &str) -> String {
    config
        .replace(&format!("root = \"{}\"", repo().join("models").display()), &format!("root = \"{}\"", root.display()))
        .replace(
            "execution_provider = \"cpu\"",
            &format!("execution_provider = \"cpu\"\nwatch_interval = \"{watch_interval}\""),
        )
}

pub fn create_topics(topics: &[(&str, i32)]) {
    let with: Vec<(&str, i32, &[(&str, &str)])> = topics.iter().map(|&(t, p)| (t, p, &[][..])).collect();
    create_topics_with(&with);
}

/// Creates topics with topic-level configs (`max.message.bytes`, ...).
pub fn create_topics_with(topics: &[(&str, i32, &[(&str, &str)])]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p, config)| {
            config.iter().fold(NewTopic::new(t, *p, TopicReplication::Fixed(1)), |n, (k, v)| n.set(k, v))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)))))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A record as read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

pub fn producer() -> BaseProducer {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).set("linger.ms", "5").create().expect("producer")
}

/// Produces `(key, payload, headers)` records and waits for every acknowledgement.
pub fn produce(topic: &str, records: &[(Option<&str>, &[u8], &[(&str, &str)])]) {
    let p = producer();
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers.iter() {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        let mut rec = BaseRecord::to(topic).payload(*payload).headers(h);
        if let Some(k) = key {
            rec = rec.key(*k);
        }
        streamcast::produce::send_waiting(&p, rec).expect("the producer takes the record");
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces `(key, value)` string pairs and waits for every acknowledgement.
pub fn send_keyed(topic: &str, records: &[(String, String)]) {
    let r: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        records.iter().map(|(k, v)| (Some(k.as_str()), v.as_bytes(), &[][..])).collect();
    produce(topic, &r);
}

/// The schema in `schemas/` that every record of an output topic must validate against, by the
/// topic's name as [`Topics`] makes it (and `shadow-…` for shadow predictions). Dead letters are
/// validated by their headers, as an object of name to value.
fn output_schema(topic: &str) -> Option<&'static jsonschema::Validator> {
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        [
            ("pred", "prediction"),
            ("shadow", "prediction"),
            ("met", "metrics_snapshot"),
            ("alr", "alert"),
            ("dlq", "dead_letter_headers"),
        ]
        .into_iter()
        .map(|(prefix, name)| {
            let text = std::fs::read_to_string(repo().join(format!("schemas/{name}.schema.json"))).unwrap();
            let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
            (prefix, jsonschema::validator_for(&schema).expect("a valid JSON Schema"))
        })
        .collect()
    });
    let prefix = topic.split('-').next()?;
    schemas.get(prefix)
}

/// Panics unless `value` validates against `schemas/<name>.schema.json` (for readers of their
/// own, like the TLS tests').
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let text = std::fs::read_to_string(repo().join(format!("schemas/{name}.schema.json"))).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a valid JSON Schema");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "fails {name}.schema.json: {errors:?}\n{value}");
}

/// Panics unless `record` of `topic` validates against its schema (when `topic` is an output).
fn check_schema(topic: &str, record: &Record) {
    let Some(validator) = output_schema(topic) else { return };
    let value = if topic.starts_with("dlq-") {
        serde_json::to_value(&record.headers).unwrap()
    } else {
        match serde_json::from_slice(&record.payload) {
            Ok(v) => v,
            Err(e) => panic!("{topic} offset {}: not JSON ({e})", record.offset),
        }
    };
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{topic} offset {} fails its schema: {errors:?}\n{value}", record.offset);
}

/// An independent reader that assigns every partition of `topic` from the beginning (no group).
/// Every record it reads from an output topic is checked against its schema in `schemas/`.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    pub records: Vec<Record>,
}

impl Reader {
    pub fn new(topic: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            // An explicit 0, not `Offset::Beginning`: nisshi 0.6.0 can answer the ListOffsets
            // (earliest) lookup with a later offset after a producer was killed mid-stream.
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(0)).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Reader { consumer, topic: topic.to_string(), records: Vec::new() }
    }

    /// Reads until `done(records)` or the timeout; returns whether `done` was reached.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) {
            if Instant::now() > deadline {
                return false;
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("read");
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let record = Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                };
                check_schema(&self.topic, &record);
                self.records.push(record);
            }
        }
        true
    }

    /// Keeps reading for `quiet`, to catch records that should not be there.
    pub fn settle(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        self.read_until(quiet + Duration::from_secs(1), |_| Instant::now() > deadline);
    }
}

/// A worker process running `streamcast run`.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    pub fn start(config: &str) -> Worker {
        Self::start_with(config, &[])
    }

    /// `streamcast run --config … ARGS`.
    pub fn start_args(config: &str, args: &[&str]) -> Worker {
        Self::spawn(config, args, &[])
    }

    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Worker {
        Self::spawn(config, &[], env)
    }

    fn spawn(config: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamcast.toml");
        std::fs::File::create(&path).unwrap().write_all(config.as_bytes()).unwrap();
        let log = dir.path().join("worker.log");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            // A developer's own OpenTelemetry settings must not switch export on in tests.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .envs(env.iter().copied())
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start worker");
        Worker { child, log, _dir: dir }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        wait_for_log_of("worker", &mut self.child, &self.log, needle, timeout);
    }

    /// The HTTP port the worker bound (it listens on port 0 in tests).
    pub fn http_port(&mut self) -> u16 {
        self.wait_for_log("HTTP server listening.", Duration::from_secs(60));
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains("HTTP server listening.")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["addr"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Waits (60 s at most) for a worker that must refuse to start: asserts exit code 2 (a setup
    /// error) and returns its log, for the caller to check what it named.
    pub fn setup_failure(&mut self) -> String {
        let status = wait_exit(&mut self.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("still running:\n{}", self.log_text()));
        let log = self.log_text();
        assert_eq!(status.code(), Some(2), "{log}");
        log
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        wait_exit(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("worker did not stop on SIGTERM:\n{}", self.log_text()))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the log file of `child` (a `who`) holds `needle`; panics with the log if the
/// child exits first or `timeout` passes.
pub fn wait_for_log_of(who: &str, child: &mut Child, log: &Path, needle: &str, timeout: Duration) {
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    while !text().contains(needle) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{who} exited ({status}) before logging {needle:?}:\n{}", text());
        }
        assert!(Instant::now() < deadline, "{who} did not log {needle:?} in {timeout:?}:\n{}", text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `events` in chunks of 300 every 150 ms and runs `during` (a new model version dropped
/// in) 400 ms after the first chunk: the swap lands while events flow.
pub fn feed_while(topic: &str, events: Vec<(String, String)>, during: impl FnOnce()) {
    let input = topic.to_string();
    let feeder = std::thread::spawn(move || {
        for chunk in events.chunks(300) {
            send_keyed(&input, chunk);
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    std::thread::sleep(Duration::from_millis(400));
    during();
    feeder.join().unwrap();
}

/// Exactly one prediction for each of `total` ids, and within each partition, in offset order,
/// the model version changes once: `from`, then `to`.
pub fn assert_one_swap(records: &[Record], total: usize, from: &str, to: &str) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut versions: HashMap<i32, Vec<String>> = HashMap::new();
    for r in records {
        let p = r.json();
        *seen.entry(p["id"].as_str().unwrap().to_string()).or_default() += 1;
        let v = p["model"]["version"].as_str().unwrap().to_string();
        let seq = versions.entry(r.partition).or_default();
        if seq.last() != Some(&v) {
            seq.push(v);
        }
    }
    assert_eq!(seen.len(), total, "every id predicted");
    assert!(seen.values().all(|n| *n == 1), "an id was predicted twice or more");
    for seq in versions.values() {
        assert_eq!(seq, &[from, to], "versions in offset order: {versions:?}");
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a JSONL fixture.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Distinct prediction ids and their count.
pub fn ids_of(records: &[Record]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for r in records {
        let id = r.json()["id"].as_str().expect("id").to_string();
        *ids.entry(id).or_default() += 1;
    }
    ids
}

/// A synthetic InputEvent for window-1 style tests: `features` as an array.
/// Events `from..to` of the shipped weekly CO₂ series, keyed by series: ids `PREFIX-00042`,
/// four series `PREFIX-0` … `PREFIX-3` taking turns, wrapping round the series.
pub fn co2_events(prefix: &str, from: usize, to: usize) -> Vec<(String, String)> {
    let rows: Vec<Vec<f64>> = std::fs::read_to_string(repo().join("data/co2_weekly.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).map(|x| x.parse().unwrap()).collect())
        .collect();
    (from..to)
        .map(|i| {
            let series = format!("{prefix}-{}", i % 4);
            (series.clone(), event(&format!("{prefix}-{i:05}"), &series, &rows[i % rows.len()]))
        })
        .collect()
}

pub fn event(id: &str, series: &str, values: &[f64]) -> String {
    serde_json::json!({"id": id, "series_id": series, "timestamp": "2026-11-26T19:00:00Z", "features": values})
        .to_string()
}

/// A minimal HTTP/1.1 request; returns the status code and the body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn http_get(port: u16, path: &str) -> String {
    http(port, "GET", path, b"").1
}

/// The value of an unlabelled (or first labelled) Prometheus sample.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A model root holding co2-gru version 1 (window 16, H = 4) declaring a weekly `frequency`.
pub fn weekly_co2_gru_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("co2-gru/1");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = repo().join("models/co2-gru/1");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).unwrap()).unwrap();
    manifest["frequency"] = "7d".into();
    manifest["frequency_tolerance"] = "1d".into();
    std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
    root
}

/// Reads the metrics topic `topic` until a snapshot satisfies `done` (60 s at most) and returns
/// it; fails with the last snapshot read and `worker`'s log.
pub fn snapshot_where(topic: &str, worker: &Worker, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut metrics = Reader::new(topic);
    let found = metrics.read_until(Duration::from_secs(60), |r| r.iter().any(|x| done(&x.json())));
    assert!(found, "no such snapshot: {:?}\n{}", metrics.records.last().map(|r| r.json()), worker.log_text());
    metrics.records.iter().map(|r| r.json()).find(|s| done(s)).unwrap()
}
