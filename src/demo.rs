//! `streamcast demo`: the whole pipeline on librdkafka's in-process mock cluster.
//!
//! It replays the shipped CO2 record as several series (each a different stretch of it), mixes
//! in malformed events, runs the real worker code, reads `predictions` and the dead-letter topic
//! back with an independent consumer, and prints a summary. It needs no running services.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::bundle::{self, Bundle, BundleError};
use crate::config::{Config, ConfigError, ExecutionProviderChoice};
use crate::event::Prediction;
use crate::pipeline::publish::dlq_headers;
use crate::produce::send_waiting;
use crate::serve::{self, RunError};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    pub series: usize,
    pub events_per_series: usize,
    /// Events per second produced.
    pub rate: f64,
    pub models: PathBuf,
    pub model: String,
    pub execution_provider: ExecutionProviderChoice,
    pub data: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the in-process Kafka cluster: {0}")]
    Cluster(rdkafka::error::KafkaError),
    #[error("Kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot read {path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct Summary {
    pub model: String,
    pub version: String,
    pub provider: String,
    pub provider_note: Option<String>,
    pub events_in: usize,
    pub malformed_in: usize,
    pub predictions_out: usize,
    pub warmup_predictions: usize,
    /// Predictions that carried a calibrated interval.
    pub calibrated_predictions: usize,
    pub dlq_out: usize,
    pub dlq_kinds: BTreeMap<String, usize>,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
    pub complete: bool,
    pub actuals_in: usize,
    pub shifted_feature: Option<String>,
    pub validation_rmse: Option<f64>,
    /// The last `model_metrics` snapshot read back.
    pub snapshot: Option<serde_json::Value>,
    /// `kind (details)` of every alert read back.
    pub alerts: Vec<String>,
}

impl Summary {
    fn quantile(&self, q: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[idx]
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "streamcast demo summary")?;
        writeln!(f, "  model               {} version {}", self.model, self.version)?;
        match &self.provider_note {
            Some(note) => writeln!(f, "  execution provider  {} (fell back: {note})", self.provider)?,
            None => writeln!(f, "  execution provider  {}", self.provider)?,
        }
        writeln!(f, "  events in           {} ({} malformed on purpose)", self.events_in, self.malformed_in)?;
        writeln!(
            f,
            "  predictions out     {} ({} during window warm-up)",
            self.predictions_out, self.warmup_predictions
        )?;
        writeln!(f, "  dead-lettered       {}", self.dlq_out)?;
        for (kind, n) in &self.dlq_kinds {
            writeln!(f, "    {kind:<18} {n}")?;
        }
        writeln!(f, "  throughput          {:.0} events/s over {:.2} s", self.events_in as f64 / secs, secs)?;
        writeln!(
            f,
            "  latency p50 / p99   {:.2} ms / {:.2} ms (consume to producer hand-off)",
            self.quantile(0.5),
            self.quantile(0.99)
        )?;
        writeln!(f, "  every event answered {}", if self.complete { "yes" } else { "NO (time limit reached first)" })?;
        writeln!(f, "monitor (late actuals joined to predictions)")?;
        writeln!(f, "  actuals in          {}", self.actuals_in)?;
        if let Some(shift) = &self.shifted_feature {
            writeln!(f, "  shift injected      `{shift}` raised by one training std from the stream's midpoint")?;
        }
        match &self.snapshot {
            Some(snap) => {
                let num = |k: &str| snap[k].as_f64().map_or("n/a".to_string(), |v| format!("{v:.3}"));
                let validation = self.validation_rmse.map_or("n/a".into(), |v| format!("{v:.3}"));
                writeln!(f, "  joined / pending    {} / {}", snap["joined"], snap["pending"])?;
                writeln!(
                    f,
                    "  rolling RMSE / MAE  {} / {} (bundle validation RMSE {validation})",
                    num("rmse"),
                    num("mae")
                )?;
                if let Some(steps) = snap["per_step"].as_array() {
                    let rmse: Vec<String> = steps
                        .iter()
                        .map(|s| s["rmse"].as_f64().map_or("n/a".to_string(), |v| format!("{v:.3}")))
                        .collect();
                    writeln!(f, "  RMSE by step        {} (step 1 first)", rmse.join(" / "))?;
                }
                if let Some(steps) = snap["per_step"].as_array().filter(|_| snap["interval"].is_object()) {
                    let each = |key: &str| -> String {
                        let v = steps.iter().map(|s| s["interval"][key].as_f64());
                        v.map(|v| v.map_or("n/a".to_string(), |v| format!("{v:.3}"))).collect::<Vec<_>>().join(" / ")
                    };
                    let level = snap["interval"]["level"].as_f64().unwrap_or(f64::NAN) * 100.0;
                    writeln!(
                        f,
                        "  {level:.0} % intervals      {} of {} predictions calibrated",
                        self.calibrated_predictions, self.predictions_out
                    )?;
                    writeln!(f, "    coverage by step  {} (last judged intervals)", each("coverage"))?;
                    writeln!(f, "    half width        {}", each("half_width"))?;
                }
                if let Some(drift) = snap["drift"].as_object() {
                    for (feature, d) in drift {
                        let flagged =
                            snap["drifted_features"].as_array().is_some_and(|a| a.iter().any(|x| x == feature));
                        writeln!(
                            f,
                            "  drift {feature:<13} KS {:.3}  PSI {:.3}  p {:.2e}  n {}  {}",
                            d["ks_statistic"].as_f64().unwrap_or(f64::NAN),
                            d["psi"].as_f64().unwrap_or(f64::NAN),
                            d["p_value"].as_f64().unwrap_or(f64::NAN),
                            d["samples"],
                            if flagged { "DRIFTED" } else { "ok" }
                        )?;
                    }
                }
            }
            None => writeln!(f, "  no snapshot read back")?,
        }
        write!(f, "  alerts raised       {}", self.alerts.len())?;
        for a in &self.alerts {
            write!(f, "\n    {a}")?;
        }
        Ok(())
    }
}

/// Malformed payloads mixed into the stream, one of each kind in turn.
const MALFORMED: [&str; 5] = [
    "{not json",
    r#"{"id":"bad-1","series_id":"s","timestamp":"2026-11-26T00:00:00Z","features":{"co2":1.0}}"#,
    r#"{"id":"bad-2","series_id":"s","timestamp":"2026-11-26T00:00:00Z","features":[NaN,0.5,0.5]}"#,
    r#"{"id":"bad-3","series_id":"s","timestamp":"2026-11-26T00:00:00Z","window":[[1,2,3]]}"#,
    r#"{"id":7,"series_id":"s","timestamp":"2026-11-26T00:00:00Z","features":[1,2,3]}"#,
];

/// One row of the replayed CSV.
struct Row {
    timestamp: String,
    values: Vec<f64>,
}

fn read_rows(path: &PathBuf, features: &[String]) -> Result<Vec<Row>, DemoError> {
    let err = |message: String| DemoError::Data { path: path.clone(), message };
    let mut reader = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
    let headers = reader.headers().map_err(|e| err(e.to_string()))?.clone();
    let ts = headers.iter().position(|h| h == "timestamp").ok_or_else(|| err("no `timestamp` column".into()))?;
    let cols: Vec<usize> = features
        .iter()
        .map(|f| headers.iter().position(|h| h == f).ok_or_else(|| err(format!("no `{f}` column"))))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| err(e.to_string()))?;
        let values = cols
            .iter()
            .map(|c| record[*c].parse::<f64>().map_err(|e| err(format!("line {:?}: {e}", record.position()))))
            .collect::<Result<_, _>>()?;
        rows.push(Row { timestamp: record[ts].to_string(), values });
    }
    Ok(rows)
}

/// Runs the demo and returns its summary.
pub async fn run(options: DemoOptions) -> Result<Summary, DemoError> {
    let bundle = Bundle::load(&bundle::resolve(&options.models, &options.model, "latest")?)?;
    let features = bundle.manifest.features.clone();
    let target = features.iter().position(|f| *f == bundle.manifest.target.name);
    let horizon = bundle.manifest.horizon.max(1);
    let shift = match &bundle.manifest.scaler {
        crate::normalize::ScalerSpec::Standard { std, .. } => std[0],
        crate::normalize::ScalerSpec::Minmax { min, max } => max[0] - min[0],
    };
    let validation_rmse = bundle.manifest.validation.as_ref().map(|v| v.rmse);
    let rows = read_rows(&options.data, &features)?;
    if rows.is_empty() {
        return Err(DemoError::Data { path: options.data.clone(), message: "no rows".into() });
    }

    let cluster = MockCluster::new(1).map_err(DemoError::Cluster)?;
    let servers = cluster.bootstrap_servers();
    for (topic, partitions) in [
        ("input_data", 3),
        ("predictions", 3),
        ("input_data.dlq", 1),
        ("actuals", 3),
        ("model_metrics", 1),
        ("alerts", 1),
    ] {
        cluster.create_topic(topic, partitions, 1).map_err(DemoError::Cluster)?;
    }

    let mut table: toml::Table = toml::from_str(&format!(
        r#"
        [kafka]
        "bootstrap.servers" = "{servers}"
        "session.timeout.ms" = 6000
        [consumer]
        group_id = "streamcast-demo"
        [model]
        name = "{}"
        [batching]
        max_batch_size = 64
        max_wait_ms = 2
        [monitor]
        publish_interval = "500ms"
        drift_sample_size = {drift_sample}
        drift_min_samples = 300
        min_joined = 50
        retrain_after = "3s"
        [http]
        listen = ""
        "#,
        options.model,
        // Two years of weekly values per series: a window of whole years keeps the seasonal
        // features (month_sin/cos) at their reference distribution, so only real shifts show.
        drift_sample = (options.series.max(1) * 104).max(300),
    ))
    .expect("the demo config is valid TOML");
    let model_table = table.get_mut("model").and_then(|m| m.as_table_mut()).expect("model table above");
    model_table.insert("root".into(), toml::Value::String(options.models.display().to_string()));
    model_table.insert(
        "execution_provider".into(),
        toml::Value::String(
            match options.execution_provider {
                ExecutionProviderChoice::Auto => "auto",
                ExecutionProviderChoice::Cpu => "cpu",
                ExecutionProviderChoice::Cuda => "cuda",
            }
            .into(),
        ),
    );
    let config = Config::from_table(table)?;

    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let running = serve::start(&config, metrics, shutdown.clone(), serve::Role::All).await?;

    let deadline = Instant::now() + options.duration;
    let servers_for_blocking = servers.clone();
    let opts = options.clone();
    let summary = tokio::task::spawn_blocking(move || {
        drive(&servers_for_blocking, &opts, &features, (target, horizon), shift, &rows, deadline)
    })
    .await
    .expect("the demo driver does not panic")?;

    shutdown.trigger();
    let (running_model, running_provider) = (running.model.clone(), running.provider.clone());
    tokio::task::spawn_blocking(move || running.join()).await.expect("join does not panic")?;
    drop(cluster);
    let mut summary = summary;
    summary.validation_rmse = validation_rmse;
    summary.model = running_model.name;
    summary.version = running_model.version;
    summary.provider = running_provider.provider.as_str().into();
    summary.provider_note = running_provider.fallback_reason;
    Ok(summary)
}

/// Produces the stream and reads the results back until every event is answered or the deadline.
fn drive(
    servers: &str,
    options: &DemoOptions,
    features: &[String],
    (target, horizon): (Option<usize>, usize),
    shift: f64,
    rows: &[Row],
    deadline: Instant,
) -> Result<Summary, DemoError> {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", servers).set("linger.ms", "5").create()?;
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "streamcast-demo-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    reader.subscribe(&["predictions", "input_data.dlq", "model_metrics", "alerts"])?;

    let mut summary = Summary::default();
    summary.shifted_feature = Some(features[0].clone());
    let mut actual = String::new();
    let stride = (rows.len() / options.series.max(1)).max(1);
    let start = Instant::now();
    let mut payload = String::new();
    for i in 0..options.events_per_series {
        for s in 0..options.series {
            // Paced, so the stream arrives in time order as it would live: a replayed backlog is
            // consumed partition by partition, which scrambles what "recent" means for drift.
            let due = start + Duration::from_secs_f64(summary.events_in as f64 / options.rate.max(1.0));
            while Instant::now() < due {
                drain(
                    &reader,
                    &mut summary,
                    due.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)),
                );
            }
            let row = &rows[(s * stride + i) % rows.len()];
            let series = format!("co2-{s}");
            let n = summary.events_in;
            payload.clear();
            if n % 97 == 96 {
                payload.push_str(MALFORMED[(n / 97) % MALFORMED.len()]);
                summary.malformed_in += 1;
            } else {
                use std::fmt::Write as _;
                let id = format!("demo-{s}-{i:05}");
                // From the midpoint on, the first feature is shifted: its distribution drifts and,
                // since the actuals stay true, accuracy degrades.
                let mut values = row.values.clone();
                if i >= options.events_per_series / 2 {
                    values[0] += shift;
                }
                // Alternate the two `features` forms the contract allows.
                let features_json = if n % 2 == 0 {
                    serde_json::to_string(&values).expect("finite floats")
                } else {
                    let map: serde_json::Map<String, serde_json::Value> =
                        features.iter().zip(&values).map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
                    serde_json::Value::Object(map).to_string()
                };
                let _ = write!(
                    payload,
                    r#"{{"id":"{id}","series_id":"{series}","timestamp":"{}","features":{features_json}}}"#,
                    row.timestamp
                );
            }
            send_waiting(&producer, BaseRecord::to("input_data").key(series.as_str()).payload(payload.as_str()))?;
            summary.events_in += 1;
            // The truth for the event H steps back arrives only now, once all H steps it
            // forecast have been observed (H = 1: the previous event, one step late).
            if let (Some(t), true) = (target, i >= horizon) {
                use std::fmt::Write as _;
                let observed: Vec<f64> =
                    (0..horizon).map(|k| rows[(s * stride + i - horizon + 1 + k) % rows.len()].values[t]).collect();
                actual.clear();
                let _ = write!(
                    actual,
                    r#"{{"id":"demo-{s}-{:05}","series_id":"{series}","timestamp":"{}","actual":{}}}"#,
                    i - horizon,
                    row.timestamp,
                    serde_json::to_string(&observed).expect("finite floats")
                );
                send_waiting(&producer, BaseRecord::to("actuals").key(series.as_str()).payload(actual.as_str()))?;
                summary.actuals_in += 1;
            }
            producer.poll(Duration::ZERO);
            drain(&reader, &mut summary, Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(10))?;
    while summary.predictions_out + summary.dlq_out < summary.events_in && Instant::now() < deadline {
        drain(&reader, &mut summary, Duration::from_millis(100));
    }
    summary.elapsed = start.elapsed();
    summary.complete = summary.predictions_out + summary.dlq_out >= summary.events_in;
    // Give the monitor a few publish intervals to join the last actuals and evaluate.
    let settle = Instant::now() + Duration::from_secs(4);
    while Instant::now() < settle.min(deadline + Duration::from_secs(4)) {
        drain(&reader, &mut summary, Duration::from_millis(100));
    }
    Ok(summary)
}

fn drain(reader: &BaseConsumer, summary: &mut Summary, first_wait: Duration) {
    let mut wait = first_wait;
    while let Some(Ok(m)) = reader.poll(wait) {
        wait = Duration::ZERO;
        if m.topic() == "model_metrics" {
            if let Some(v) = m.payload().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) {
                summary.snapshot = Some(v);
            }
            continue;
        }
        if m.topic() == "alerts" {
            if let Some(v) = m.payload().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) {
                let d = &v["details"];
                let subject = d["feature"].as_str().map(|f| format!(" `{f}`")).unwrap_or_default();
                let reason = d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                let state = d["state"].as_str().unwrap_or("firing");
                summary.alerts.push(format!("{}{subject}{reason}: {state}", v["kind"].as_str().unwrap_or("?")));
            }
            continue;
        }
        if m.topic() == "predictions" {
            if let Some(p) = m.payload().and_then(|b| serde_json::from_slice::<Prediction>(b).ok()) {
                summary.predictions_out += 1;
                summary.warmup_predictions += usize::from(p.warmup);
                summary.calibrated_predictions += usize::from(p.interval.as_ref().is_some_and(|i| i.calibrated));
                summary.latencies_ms.push(p.latency_ms);
            }
        } else {
            summary.dlq_out += 1;
            let kind = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == dlq_headers::KIND))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "(no kind header)".into());
            *summary.dlq_kinds.entry(kind).or_default() += 1;
        }
    }
}
