//! `streamcast produce`: sends a CSV or JSONL file of observations to the input topic at a chosen
//! rate, and optionally the actuals (the next observation's target value) after a delay.
//!
//! JSONL lines are sent unchanged, keyed by their `series_id`. CSV rows become InputEvents:
//! `timestamp` is required, `id` and `series_id` are optional columns, and every other column is
//! a feature. With `--actuals-column`, the actual of a row is that column's value in the next row
//! of the same series (a one-step-ahead forecast's truth), sent `--actuals-delay` after that next
//! row, as ground truth arrives in production.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::batch::FileFormat;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

pub struct ProduceOptions<'a> {
    pub input: &'a Path,
    pub topic: &'a str,
    pub actuals_topic: &'a str,
    /// Events per second; 0 sends as fast as the broker takes them.
    pub rate: f64,
    /// Series id for CSV rows without a `series_id` column.
    pub series: &'a str,
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
    value: String,
}

pub fn run(client: &ClientConfig, opts: &ProduceOptions<'_>) -> Result<ProduceSummary, ProduceError> {
    let read_err = |message: String| ProduceError::Read { path: opts.input.display().to_string(), message };
    let (events, actuals) = match FileFormat::of(opts.input) {
        FileFormat::Jsonl => (read_jsonl(opts.input).map_err(read_err)?, Vec::new()),
        FileFormat::Csv => read_csv(opts).map_err(read_err)?,
    };
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
    let record = BaseRecord::to(topic).key(out.key.as_str()).payload(out.value.as_str());
    if let Err(error) = send_waiting(producer, record) {
        tracing::warn!(%error, "Record refused by the producer.");
        failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Enqueues `record`, serving delivery reports and retrying while librdkafka's queue is full;
/// any other refusal (an oversized record, say) is returned instead of retried forever.
pub fn send_waiting<C, K, P>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

fn read_jsonl(path: &Path) -> Result<Vec<Outgoing>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        // Only the key is needed; the line is sent unchanged, malformed or not, so the worker's
        // dead-letter path can be exercised with this tool too.
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("series_id").and_then(|s| s.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("line-{}", i + 1));
        out.push(Outgoing { key, value: line.to_string() });
    }
    Ok(out)
}

/// Events, and actuals paired with the index of the event whose sending releases them.
type CsvRecords = (Vec<Outgoing>, Vec<(usize, Outgoing)>);

fn read_csv(opts: &ProduceOptions<'_>) -> Result<CsvRecords, String> {
    let mut reader = csv::Reader::from_path(opts.input).map_err(|e| e.to_string())?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let ts = col("timestamp").ok_or("no `timestamp` column")?;
    let (id_col, series_col) = (col("id"), col("series_id"));
    let feature_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != id_col && Some(*i) != series_col && *i != ts)
        .map(|(i, h)| (i, h.to_string()))
        .collect();
    let actual_col = match opts.actuals_column {
        Some(name) => Some(col(name).ok_or_else(|| format!("no `{name}` column for --actuals-column"))?),
        None => None,
    };
    let mut events = Vec::new();
    let mut actuals = Vec::new();
    // Per series: the previous row's (id, series) waiting for its truth.
    let mut previous: HashMap<String, String> = HashMap::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| e.to_string())?;
        let series = series_col.map_or(opts.series, |c| &record[c]).to_string();
        let id = id_col.map_or_else(|| format!("{}-{:07}", opts.id_prefix, row + 1), |c| record[c].to_string());
        let mut features = serde_json::Map::new();
        for (c, name) in &feature_cols {
            let v = &record[*c];
            // Numbers go as numbers; anything else is sent as-is and the worker dead-letters it.
            let value = v.trim().parse::<f64>().map_or_else(|_| serde_json::json!(v), |x| serde_json::json!(x));
            features.insert(name.clone(), value);
        }
        let event = serde_json::json!({"id": id, "series_id": series, "timestamp": &record[ts], "features": features});
        if let Some(ac) = actual_col {
            if let (Some(prev_id), Ok(value)) = (previous.get(&series), record[ac].trim().parse::<f64>()) {
                let actual = serde_json::json!({
                    "id": prev_id, "series_id": series, "timestamp": &record[ts], "actual": value,
                });
                actuals.push((events.len(), Outgoing { key: series.clone(), value: actual.to_string() }));
            }
            previous.insert(series.clone(), id.clone());
        }
        events.push(Outgoing { key: series, value: event.to_string() });
    }
    Ok((events, actuals))
}
