//! `streamcast produce`: sends a CSV, Parquet or JSONL file of observations to the input topic at a
//! chosen rate, and optionally the actuals (the next observation's target value) after a delay.
//!
//! The file is read by [`crate::table`]. JSONL lines are sent unchanged, keyed by their
//! `series_id`. Table rows become InputEvents with `features` as an object: every column other
//! than `id`, `series_id` and `timestamp` is a feature. With `--actuals-column`, the actual of a row
//! is that column's value in the next row of the same series (a one-step-ahead forecast's truth),
//! sent `--actuals-delay` after that next row, as ground truth arrives in production.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::table::{Body, Defaults, FeatureForm, Features, Table, TableError, TableRow};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    /// A Parquet file the reader refuses (other read errors are [`ProduceError::Read`]).
    #[error(transparent)]
    Input(TableError),
    #[error("Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl From<TableError> for ProduceError {
    /// Keeps the messages `produce` gave before it shared the reader: `cannot read <path>: <why>`.
    fn from(error: TableError) -> ProduceError {
        match error {
            TableError::Read { path, source } => {
                ProduceError::Read { path: path.display().to_string(), message: source.to_string() }
            }
            TableError::Format { path, message } => ProduceError::Read { path: path.display().to_string(), message },
            parquet @ TableError::Parquet { .. } => ProduceError::Input(parquet),
        }
    }
}

pub struct ProduceOptions<'a> {
    pub input: &'a Path,
    pub topic: &'a str,
    pub actuals_topic: &'a str,
    /// Events per second; 0 sends as fast as the broker takes them.
    pub rate: f64,
    /// Series id for table rows without a `series_id` column.
    pub series: &'a str,
    /// Row `n` of a table without an `id` column gets the id `<id_prefix>-<n>`.
    pub id_prefix: &'a str,
    pub actuals_column: Option<&'a str>,
    pub actuals_delay: Duration,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct ProduceSummary {
    pub events: u64,
    pub actuals: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// Counts delivery failures; librdkafka retries before reporting one.
#[derive(Default)]
struct Deliveries {
    failed: Arc<AtomicU64>,
}

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "Delivery failed.");
        }
    }
}

/// One record to send: key and value.
struct Outgoing {
    key: String,
    value: Vec<u8>,
}

pub fn run(client: &ClientConfig, opts: &ProduceOptions<'_>) -> Result<ProduceSummary, ProduceError> {
    let Records { events, actuals } = read(opts)?;
    let failed = Arc::new(AtomicU64::new(0));
    let producer: BaseProducer<Deliveries> = client.create_with_context(Deliveries { failed: failed.clone() })?;
    let bar = if opts.progress { ProgressBar::new(events.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} events [{bar:30}] {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut summary = ProduceSummary::default();
    // Actual `i` becomes due `actuals_delay` after event `i + 1` of its series was sent;
    // `actuals[i]` is paired with the event index whose sending releases it.
    let mut due: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut by_release: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (after, _)) in actuals.iter().enumerate() {
        by_release.entry(*after).or_default().push(i);
    }
    for (n, ev) in events.iter().enumerate() {
        if opts.rate > 0.0 {
            let at = start + Duration::from_secs_f64(n as f64 / opts.rate);
            while Instant::now() < at {
                send_due(&producer, opts.actuals_topic, &actuals, &mut due, &mut summary, false, &failed);
                producer.poll(at.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)));
            }
        }
        send(&producer, opts.topic, ev, &failed);
        summary.events += 1;
        bar.inc(1);
        if let Some(released) = by_release.remove(&n) {
            let when = Instant::now() + opts.actuals_delay;
            due.extend(released.into_iter().map(|i| (when, i)));
        }
        send_due(&producer, opts.actuals_topic, &actuals, &mut due, &mut summary, false, &failed);
        producer.poll(Duration::ZERO);
    }
    send_due(&producer, opts.actuals_topic, &actuals, &mut due, &mut summary, true, &failed);
    producer.flush(Duration::from_secs(60))?;
    bar.finish_and_clear();
    summary.failed = failed.load(Ordering::Relaxed);
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Sends the actuals whose time has come (all of them when `drain`, waiting as needed).
fn send_due(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    actuals: &[(usize, Outgoing)],
    due: &mut VecDeque<(Instant, usize)>,
    summary: &mut ProduceSummary,
    drain: bool,
    failed: &AtomicU64,
) {
    while let Some(&(when, i)) = due.front() {
        let now = Instant::now();
        if when > now {
            if !drain {
                return;
            }
            std::thread::sleep(when - now);
        }
        send(producer, topic, &actuals[i].1, failed);
        summary.actuals += 1;
        due.pop_front();
    }
}

fn send(producer: &BaseProducer<Deliveries>, topic: &str, out: &Outgoing, failed: &AtomicU64) {
    let record = BaseRecord::to(topic).key(out.key.as_str()).payload(out.value.as_slice());
    if let Err(error) = send_waiting(producer, record) {
        tracing::warn!(%error, "Record refused by the producer.");
        failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Enqueues `record`, serving delivery reports and retrying while librdkafka's queue is full;
/// any other refusal (an oversized record, say) is returned instead of retried forever.
pub fn send_waiting<C, K, P>(
    producer: &BaseProducer<C>,
    record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let wait = || {
        producer.poll(Duration::from_millis(5));
    };
    crate::kafka::send_with_retry(|r| producer.send(r), record, wait, None).map_err(|(error, _)| error)
}

/// Events, and actuals paired with the index of the event whose sending releases them.
#[derive(Default)]
struct Records {
    events: Vec<Outgoing>,
    actuals: Vec<(usize, Outgoing)>,
}

fn read(opts: &ProduceOptions<'_>) -> Result<Records, ProduceError> {
    let table = Table::open(opts.input, Features::Rest)?;
    // JSONL lines carry no columns to take actuals from; they are sent as they are.
    let actual_col = match (opts.actuals_column, table.feature_names()) {
        (Some(name), Some(names)) => Some(names.iter().position(|n| n == name).ok_or_else(|| ProduceError::Read {
            path: opts.input.display().to_string(),
            message: format!("no `{name}` column for --actuals-column"),
        })?),
        _ => None,
    };
    let defaults = Defaults { series_id: opts.series, id_prefix: opts.id_prefix };
    let mut records = Records::default();
    // Per series: the previous row's id, waiting for its truth.
    let mut previous: HashMap<String, String> = HashMap::new();
    table.for_each(&defaults, |record| {
        match record.body {
            Body::Line(line) => records.events.push(line_record(record.at, line)),
            Body::Row(row) => {
                if let Some(actual) = actual_col.and_then(|c| actual_record(&row, c, &mut previous)) {
                    records.actuals.push((records.events.len(), actual));
                }
                let value = row.event(FeatureForm::Object).to_string().into_bytes();
                records.events.push(Outgoing { key: row.series_id.to_string(), value });
            }
        }
        Ok::<_, TableError>(())
    })?;
    Ok(records)
}

/// A JSONL line, without its line break, keyed by its `series_id`.
fn line_record(line_no: u64, line: &[u8]) -> Outgoing {
    let line = line.strip_suffix(b"\n").map_or(line, |l| l.strip_suffix(b"\r").unwrap_or(l));
    // Only the key is needed; the line is sent unchanged, malformed or not, so the worker's
    // dead-letter path can be exercised with this tool too.
    let key = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("series_id").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("line-{line_no}"));
    Outgoing { key, value: line.to_vec() }
}

/// The actual of the previous row of `row`'s series: `row`'s value in feature column `column`
/// (none when that is not a number). Remembers `row`'s id for the next row of the series.
fn actual_record(row: &TableRow<'_>, column: usize, previous: &mut HashMap<String, String>) -> Option<Outgoing> {
    let actual = match (previous.get(row.series_id), row.features[column].as_f64()) {
        (Some(prev_id), Some(value)) => Some(serde_json::json!({
            "id": prev_id, "series_id": row.series_id, "timestamp": row.timestamp, "actual": value,
        })),
        _ => None,
    };
    previous.insert(row.series_id.to_string(), row.id.to_string());
    actual.map(|a| Outgoing { key: row.series_id.to_string(), value: a.to_string().into_bytes() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_file(name: &str, text: &str, actuals_column: Option<&str>) -> Result<Records, ProduceError> {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join(name);
        std::fs::write(&input, text).unwrap();
        let opts = ProduceOptions {
            input: &input,
            topic: "in",
            actuals_topic: "actuals",
            rate: 0.0,
            series: "s",
            id_prefix: "obs",
            actuals_column,
            actuals_delay: Duration::ZERO,
            progress: false,
        };
        read(&opts)
    }

    fn text(out: &Outgoing) -> (&str, &str) {
        (out.key.as_str(), std::str::from_utf8(&out.value).unwrap())
    }

    #[test]
    fn a_rows_actual_is_the_next_value_of_its_series_released_by_that_row() {
        let csv = "timestamp,series_id,y\nt1,a,1\nt2,b,2\nt3,a,x\nt4,a,4\n";
        let Records { events, actuals } = read_file("in.csv", csv, Some("y")).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(text(&events[0]), ("a", r#"{"features":{"y":1.0},"id":"obs-1","series_id":"a","timestamp":"t1"}"#));
        // Row 3's `x` is no number: row 1 gets no actual, and row 3's own comes from row 4.
        let actuals: Vec<(usize, (&str, &str))> = actuals.iter().map(|(i, a)| (*i, text(a))).collect();
        assert_eq!(actuals, [(3, ("a", r#"{"actual":4.0,"id":"obs-3","series_id":"a","timestamp":"t4"}"#))]);
        match read_file("in.csv", csv, Some("timestamp")) {
            Err(ProduceError::Read { message, .. }) => {
                assert_eq!(message, "no `timestamp` column for --actuals-column")
            }
            Err(other) => panic!("expected a read error, got {other:?}"),
            Ok(_) => panic!("expected a read error"),
        }
    }

    #[test]
    fn jsonl_lines_go_unchanged_keyed_by_series_or_line() {
        let jsonl = "{\"series_id\": \"a\", \"x\": 1}\r\n\nnot json\n";
        let Records { events, actuals } = read_file("in.jsonl", jsonl, Some("x")).unwrap();
        let events: Vec<(&str, &str)> = events.iter().map(text).collect();
        assert_eq!(events, [("a", "{\"series_id\": \"a\", \"x\": 1}"), ("line-3", "not json")]);
        assert!(actuals.is_empty());
    }
}
