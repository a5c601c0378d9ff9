//! Typed configuration: one TOML file plus `STREAMCAST_<SECTION>__<KEY>` environment overrides.
//!
//! Every table denies unknown keys, and every error names the key it is about, so a typo stops
//! start-up instead of silently falling back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::window::{DuplicatePolicy, EventTimePolicy, GapPolicy};
use serde::{Deserialize, Deserializer, Serialize};

/// Why a configuration could not be loaded. Each variant names the file, key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key { key: key.into(), message: message.into() }
    }
}

/// The whole effective configuration of a `streamcast run`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Passed to librdkafka verbatim (both consumer and producer), so SASL, SSL and tuning need no
    /// code change. Values may be strings, numbers or booleans.
    #[serde(default)]
    pub kafka: BTreeMap<String, KafkaValue>,
    #[serde(default)]
    pub consumer: ConsumerConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
    #[serde(default)]
    pub windows: WindowsConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub variants: VariantsConfig,
    #[serde(default)]
    pub fallback: FallbackConfig,
    #[serde(default)]
    pub processing: ProcessingConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub intervals: IntervalsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// A librdkafka property value; librdkafka takes strings, so numbers and booleans are stringified.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum KafkaValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for KafkaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaValue::String(s) => f.write_str(s),
            KafkaValue::Integer(i) => write!(f, "{i}"),
            KafkaValue::Float(x) => write!(f, "{x}"),
            KafkaValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Consumer group id. Replicas sharing it split the input partitions between them.
    pub group_id: String,
    /// Upper bound on events consumed but not yet acknowledged by the broker (prediction or DLQ
    /// record). It bounds every queue on the data path; the consumer stops fetching at the cap.
    pub max_in_flight: usize,
    /// Upper bound on the bytes of those events (their message values): large events reach it
    /// long before `max_in_flight`. The consumer pauses its partitions at either cap.
    pub max_in_flight_bytes: usize,
    /// How soon acknowledged offsets are committed: at most this long after an acknowledgement
    /// moves a partition's done prefix (one asynchronous commit per interval, none while idle).
    /// A SIGKILLed replica's successor re-reads what was in flight plus at most this much.
    pub commit_interval_ms: u64,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: "streamcast".into(),
            max_in_flight: 10_000,
            max_in_flight_bytes: 128 << 20,
            commit_interval_ms: 50,
            auto_offset_reset: "earliest".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub input: String,
    pub predictions: String,
    pub actuals: String,
    pub dlq: String,
    pub metrics: String,
    pub alerts: String,
    /// Shadow-variant predictions (only written when a shadow is configured).
    pub shadow: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            input: "input_data".into(),
            predictions: "predictions".into(),
            actuals: "actuals".into(),
            dlq: "input_data.dlq".into(),
            metrics: "model_metrics".into(),
            alerts: "alerts".into(),
            shadow: "predictions.shadow".into(),
        }
    }
}

impl TopicsConfig {
    /// The topics the inference worker reads or writes.
    pub fn worker_topics(&self) -> [&str; 3] {
        [&self.input, &self.predictions, &self.dlq]
    }

    /// Every topic of the contract plus the shadow topic, for `streamcast topics create`.
    pub fn all(&self) -> [&str; 7] {
        [&self.input, &self.predictions, &self.actuals, &self.dlq, &self.metrics, &self.alerts, &self.shadow]
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProviderChoice {
    /// CUDA when ONNX Runtime can register it, otherwise CPU with a WARN naming the reason.
    Auto,
    Cpu,
    /// CUDA or refuse to start.
    Cuda,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model root holding `<name>/<version>/{model.onnx,bundle.json}`: a directory, or object
    /// storage (`s3://bucket/prefix`, `gs://`, `az://`, `file://`), pulled into `cache_dir`.
    #[serde(default = "default_model_root")]
    pub root: PathBuf,
    /// Where versions from an object-storage root are kept locally (unused for a directory root).
    #[serde(default = "default_model_cache_dir")]
    pub cache_dir: PathBuf,
    /// Bundle name (a directory under `root`).
    pub name: String,
    /// `latest` (highest version, numeric-aware) or a pinned version.
    #[serde(default = "default_version", deserialize_with = "string_or_number")]
    pub version: String,
    #[serde(default = "default_provider")]
    pub execution_provider: ExecutionProviderChoice,
    /// ONNX Runtime intra-op threads per session. One is fastest on small boxes; scale with replicas.
    #[serde(default = "default_intra_threads")]
    pub intra_threads: usize,
    /// With `version = "latest"`, how often the model root is checked for a newer version, which
    /// is then loaded, validated and warmed up off the hot path and swapped in between batches.
    /// `0s` disables the watcher.
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
}

fn default_model_root() -> PathBuf {
    PathBuf::from("models")
}
fn default_model_cache_dir() -> PathBuf {
    PathBuf::from("/tmp/streamcast/models")
}
fn default_version() -> String {
    "latest".into()
}
fn default_provider() -> ExecutionProviderChoice {
    ExecutionProviderChoice::Auto
}
fn default_intra_threads() -> usize {
    1
}
fn default_watch_interval() -> Duration {
    Duration::from_secs(5)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        S(String),
        I(i64),
    }
    Ok(match StrOrNum::deserialize(d)? {
        StrOrNum::S(s) => s,
        StrOrNum::I(i) => i.to_string(),
    })
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Largest number of events scored in one ONNX Runtime call.
    pub max_batch_size: usize,
    /// How long the first event of a batch may wait for others, in milliseconds.
    pub max_wait_ms: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { max_batch_size: 256, max_wait_ms: 5 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Messages larger than this are dead-lettered unparsed (`oversized`).
    pub max_message_bytes: usize,
    /// Dead-letter events whose `features` object has names the bundle does not know
    /// (`unknown_feature`). Off by default: extra names are ignored and counted.
    pub reject_unknown_features: bool,
    /// Longest `id` and `series_id`, in bytes (`invalid_field` beyond). They are echoed in every
    /// prediction, key it, and are held in the window and join stores, so they are bounded.
    pub max_id_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { max_message_bytes: 1 << 20, reject_unknown_features: false, max_id_bytes: 512 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Most series whose window state is held; the least recently seen series is evicted first.
    pub max_series: usize,
    /// Records read back per newly assigned partition to rebuild its series' windows (0: none,
    /// the series warm up afresh).
    pub rebuild_max_records: usize,
    /// Longest time one assignment may spend rebuilding.
    #[serde(with = "humantime_serde")]
    pub rebuild_timeout: Duration,
    /// Event-time windows (bundles with a `frequency`): a second observation of a step.
    pub duplicates: DuplicatePolicy,
    /// Event-time windows: what missing steps do.
    pub gaps: GapPolicy,
    /// Event-time windows: the longest gap, in steps, `carry_forward` or `linear` fill.
    pub max_fill_steps: usize,
    /// Event-time windows: how far ahead of the worker's clock an observation's timestamp may be.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            max_series: 100_000,
            rebuild_max_records: 50_000,
            rebuild_timeout: Duration::from_secs(30),
            duplicates: DuplicatePolicy::KeepFirst,
            gaps: GapPolicy::Reset,
            max_fill_steps: 3,
            max_future: Duration::from_secs(86_400),
        }
    }
}

impl WindowsConfig {
    /// The event-time policies these settings give.
    pub fn policy(&self) -> EventTimePolicy {
        EventTimePolicy {
            duplicates: self.duplicates,
            gaps: self.gaps,
            max_fill_steps: self.max_fill_steps,
            max_future: Some(self.max_future),
        }
    }
}

/// How the monitor joins actuals to forecasts (`monitor.join_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinBy {
    #[default]
    Id,
    Time,
}

/// A/B and shadow variants next to the primary model (`model.version`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VariantsConfig {
    /// A candidate version that takes `share` of the series (sticky by `series_id` hash).
    pub candidate: Option<CandidateConfig>,
    /// A version that scores every event; its predictions go to `topics.shadow`, never to
    /// `predictions`, and the monitor scores them.
    pub shadow: Option<ShadowConfig>,
    /// The monitor rolls a candidate back when its rolling RMSE exceeds the primary's by this
    /// fraction (0.1 = 10 % worse).
    pub rollback_margin: f64,
    /// Roll a worse candidate back automatically (`model_rollback`).
    pub auto_rollback: bool,
    /// The monitor promotes a candidate whose rolling RMSE is below the primary's by this fraction.
    pub promote_margin: f64,
    /// Promote a better candidate automatically (`model_promoted`); otherwise an operator runs
    /// `streamcast models promote`.
    pub auto_promote: bool,
    /// Joined actuals each of primary and candidate needs in its rolling window before a decision.
    pub decision_min_joined: usize,
    /// Secret that signs decisions (`model_rollback`, `model_promoted`) with HMAC-SHA256. With a
    /// key, every replica ignores unsigned, wrongly signed and stale decisions on the alerts
    /// topic. Prefer `decision_key_file` or `STREAMCAST_VARIANTS__DECISION_KEY` to writing it here.
    pub decision_key: Option<String>,
    /// A file that holds the key (a mounted Kubernetes Secret); surrounding whitespace is ignored.
    pub decision_key_file: Option<PathBuf>,
}

impl VariantsConfig {
    /// The decision key, from `decision_key` or `decision_key_file`; `None` when neither is set.
    pub fn decision_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let key = match (&self.decision_key, &self.decision_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::key("variants.decision_key_file", "set either it or variants.decision_key"));
            }
            (Some(k), None) => k.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::key("variants.decision_key_file", format!("cannot read {}: {e}", path.display()))
                })?
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if key.len() < 16 {
            return Err(ConfigError::key(
                if self.decision_key.is_some() { "variants.decision_key" } else { "variants.decision_key_file" },
                "must hold at least 16 characters",
            ));
        }
        Ok(Some(key.into_bytes()))
    }
}

impl Default for VariantsConfig {
    fn default() -> Self {
        VariantsConfig {
            candidate: None,
            shadow: None,
            rollback_margin: 0.1,
            auto_rollback: true,
            promote_margin: 0.1,
            auto_promote: false,
            decision_min_joined: 500,
            decision_key: None,
            decision_key_file: None,
        }
    }
}

/// What serves when the primary cannot: `[fallback]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// `none`, `last_value`, `seasonal_naive` or `bundle`.
    pub kind: FallbackKind,
    /// Season length in steps for `seasonal_naive` (at most the bundle's window).
    pub season: usize,
    /// For `kind = "bundle"`: a pinned version of `model.name`, or of `model` when set.
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
    /// For `kind = "bundle"`: another model name under `model.root` (default: `model.name`).
    pub model: Option<String>,
    /// The breaker opens when at least this fraction of the last `window` batches failed.
    pub error_rate: f64,
    /// Batches the failure rate is measured over.
    pub window: usize,
    /// Batches needed in the window before the rate is judged.
    pub min_batches: usize,
    /// A batch whose inference takes longer than this counts as a failure ("0s": no budget).
    #[serde(with = "humantime_serde")]
    pub batch_budget: Duration,
    /// How long the breaker stays open before a half-open probe.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Consecutive good half-open batches that close the breaker.
    pub close_after: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FallbackKind {
    None,
    LastValue,
    SeasonalNaive,
    Bundle,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            kind: FallbackKind::None,
            season: 0,
            version: String::new(),
            model: None,
            error_rate: 0.5,
            window: 20,
            min_batches: 5,
            batch_budget: Duration::ZERO,
            open_for: Duration::from_secs(30),
            close_after: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
    /// Fraction of series routed to the candidate, 0..=1.
    pub share: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
}

/// The optional prediction cache (off by default: in a live stream every window is new).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Serve repeated (model version, window) pairs from a bounded LRU.
    pub enabled: bool,
    /// Most predictions held.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { enabled: false, max_entries: 100_000 }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Delivery guarantee. Only `at_least_once` is implemented; `exactly_once` is refused at start-up.
    pub guarantee: Guarantee,
    /// Longest time a SIGTERM or a revoke waits for in-flight work before giving up on it
    /// (uncommitted work is then re-delivered to the next owner).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Benchmark ceiling only: forward each input record unchanged to the predictions topic, with
    /// no decoding or inference, through the same consume/produce/offset machinery.
    pub passthrough: bool,
    /// What to do with a record the broker refuses for good (too large, invalid) even in its
    /// bounded dead-letter form: `skip` logs it at ERROR, counts it
    /// (`streamcast_unproducible_records_total`) and commits past it; `stop` exits 1 without
    /// committing, as for any other delivery failure.
    pub unproducible: Unproducible,
    /// Once start-up is over (the consumer's first assignment), and after each session the
    /// registry builds, unmap the pages of ONNX Runtime's and the binary's code that hold only
    /// the files' bytes, so that what only start-up ran stops counting in RSS (`startup_pages`).
    pub release_startup_pages: bool,
}

/// See [`ProcessingConfig::unproducible`].
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unproducible {
    /// Commit past it: one record is lost, loudly, and the group keeps running.
    Skip,
    /// Stop the worker: the record is re-read after a restart (and refused again).
    Stop,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            guarantee: Guarantee::AtLeastOnce,
            shutdown_timeout: Duration::from_secs(30),
            passthrough: false,
            unproducible: Unproducible::Skip,
            release_startup_pages: true,
        }
    }
}

/// The monitor side task: joins actuals to predictions, rolling error, drift, alerts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Run the monitor inside `streamcast run` (`--role` overrides).
    pub enabled: bool,
    /// How actuals find their forecasts: by event `id` (an actual carries all H values), or by
    /// time (an actual is one observed value of a series at a timestamp, scored against step h
    /// of every forecast issued h steps earlier; the bundle must declare `frequency`).
    pub join_by: JoinBy,
    /// The observations on `input_data` are the actuals (join_by = "time", and the bundle's
    /// target is one of its features): no separate actuals pipeline. The actuals topic is then
    /// not scored.
    pub actuals_from_input: bool,
    /// Joined by time: the season, in steps, of the seasonal-naive forecast that MASE compares
    /// with (1: the last observed value; 52 for weekly data with a yearly cycle).
    pub mase_season: usize,
    /// How long either side of a join waits for the other.
    #[serde(with = "humantime_serde")]
    pub join_ttl: Duration,
    /// Most entries waiting in the join; at the cap the oldest is evicted (and counted).
    pub max_pending: usize,
    /// Most memory the join may hold (ids, values and per-entry overhead, estimated), per join
    /// (the shadow has its own); past it the oldest entries are evicted (and counted).
    pub max_pending_bytes: usize,
    /// Rolling error window: at most this many joined values...
    pub window_count: usize,
    /// ...and only those whose event time is within this duration of the newest.
    #[serde(with = "humantime_serde")]
    pub window_duration: Duration,
    /// How often a MetricsSnapshot is published and alerts are evaluated.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// Absolute RMSE threshold (target units). When unset, `rmse_threshold_ratio` times the
    /// bundle's validation RMSE is used.
    pub rmse_threshold: Option<f64>,
    pub rmse_threshold_ratio: f64,
    /// Joined values needed before any error alert.
    pub min_joined: usize,
    /// Recent served values per feature compared with the bundle's reference sample.
    pub drift_sample_size: usize,
    /// Samples needed before any drift verdict.
    pub drift_min_samples: usize,
    /// Significance level for the Benjamini-Hochberg-corrected KS p-values.
    pub drift_alpha: f64,
    /// Effect-size thresholds: a feature is flagged only when the corrected p-value is below
    /// `drift_alpha` AND the KS statistic or the PSI reaches its threshold.
    pub drift_ks_threshold: f64,
    pub drift_psi_threshold: f64,
    /// PSI bins (reference quantiles).
    pub drift_bins: usize,
    /// Request retraining when the error stays above threshold this long.
    #[serde(with = "humantime_serde")]
    pub retrain_after: Duration,
    /// Also request retraining on this schedule (unset: never).
    #[serde(with = "humantime_serde")]
    pub retrain_schedule: Option<Duration>,
    /// Least time between two firings of the same alert.
    #[serde(with = "humantime_serde")]
    pub alert_cooldown: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            join_by: JoinBy::Id,
            actuals_from_input: false,
            mase_season: 1,
            join_ttl: Duration::from_secs(24 * 3600),
            max_pending: 1_000_000,
            max_pending_bytes: 256 << 20,
            window_count: 10_000,
            window_duration: Duration::from_secs(3600),
            publish_interval: Duration::from_secs(10),
            rmse_threshold: None,
            rmse_threshold_ratio: 1.5,
            min_joined: 50,
            drift_sample_size: 2000,
            drift_min_samples: 500,
            drift_alpha: 0.01,
            drift_ks_threshold: 0.1,
            drift_psi_threshold: 0.2,
            drift_bins: 10,
            retrain_after: Duration::from_secs(1800),
            retrain_schedule: None,
            alert_cooldown: Duration::from_secs(900),
        }
    }
}

/// How the monitor calibrates prediction intervals (`intervals.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    /// Split conformal: the `level` quantile of the recent absolute errors of each step.
    #[default]
    Split,
    /// Adaptive conformal inference: the quantile's level moves after every judged interval,
    /// down after a hit and up after a miss, so coverage comes back after a shift.
    Aci,
    /// Conformalized quantile regression, for a quantile bundle with the levels (1 ∓ level)/2:
    /// its own band, widened (or narrowed) by the `level` quantile of how far actuals fell
    /// outside it.
    Cqr,
}

/// Calibrated prediction intervals: the monitor turns each step's recent errors into a half
/// width; every worker replica reads it from `model_metrics` and puts it around its forecasts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntervalsConfig {
    /// Predictions carry `interval` (calibrated, or saying that it is not yet).
    pub enabled: bool,
    /// The nominal coverage of the interval.
    pub level: f64,
    pub method: IntervalMethod,
    /// ACI's step size γ: how fast the level reacts to misses.
    pub aci_gamma: f64,
    /// Errors a step needs in its window before its interval counts as calibrated.
    pub min_residuals: usize,
    /// Judged intervals per step that empirical coverage is computed over.
    pub coverage_window: usize,
    /// `interval_coverage` fires when a step's coverage leaves `level ± coverage_band`.
    pub coverage_band: f64,
}

impl Default for IntervalsConfig {
    fn default() -> Self {
        IntervalsConfig {
            enabled: true,
            level: 0.9,
            method: IntervalMethod::Split,
            aci_gamma: 0.05,
            min_residuals: 30,
            coverage_window: 200,
            coverage_band: 0.05,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of `/healthz`, `/readyz`, `/metrics` and `/predict`. Empty disables the server.
    pub listen: String,
    /// Largest `/predict` request body; larger ones get 413. Each event in it is also held to
    /// `validation.max_message_bytes`.
    pub max_body_bytes: usize,
    /// `/predict` events queued for inference at once, across requests: its own share of the
    /// inference queue, next to the stream's `consumer.max_in_flight`. A request that does not
    /// fit whole gets 503 and nothing of it is scored.
    pub max_in_flight: usize,
    /// How long a `/predict` request waits for its predictions before a 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl HttpConfig {
    /// The parsed `listen` address; `None` when the server is off (or, before validation, when
    /// `listen` is not an address).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            max_body_bytes: 4 << 20,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (default, for log shippers) or `text`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `streamcast=debug`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/HTTP (protobuf) export of spans and metrics: `off`, `on`, or `auto` (default: on
    /// when `otlp_endpoint` or one of `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set).
    pub otlp: OtlpMode,
    /// Collector base URL such as `http://otel-collector:4318`; `/v1/traces` and `/v1/metrics`
    /// are appended. Empty: the standard `OTEL_EXPORTER_OTLP_*` variables, else localhost:4318.
    pub otlp_endpoint: String,
    /// How often metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL` wins when set).
    #[serde(with = "humantime_serde")]
    pub otlp_metrics_interval: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OtlpMode {
    Off,
    On,
    Auto,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp: OtlpMode::Auto,
            otlp_endpoint: String::new(),
            otlp_metrics_interval: Duration::from_secs(30),
        }
    }
}

/// librdkafka properties whose values are secrets: every one librdkafka itself marks sensitive
/// (`_RK_SENSITIVE` in its `rdkafka_conf.c`, 2.12).
const SENSITIVE_PROPERTIES: [&str; 13] = [
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.ca.pem",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
];
/// Any other key that looks like a secret (a newer librdkafka's, say) is treated as one too.
const SECRET_KEY_MARKERS: [&str; 4] = ["password", "secret", "key.pem", "passphrase"];

/// Whether a `[kafka]` property holds a secret: redacted in `--print-config`, logs and errors.
pub fn is_secret_property(key: &str) -> bool {
    SENSITIVE_PROPERTIES.contains(&key) || SECRET_KEY_MARKERS.iter().any(|m| key.contains(m))
}

impl Config {
    /// Reads `path` (or nothing, when `None`), applies environment overrides from `env`, and
    /// validates the result.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        apply_env_overrides(&mut table, env)?;
        Config::from_table(table)
    }

    /// Builds a config from an already-parsed TOML table (used by the demo and tests).
    pub fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(top level)".to_string() } else { key };
            ConfigError::key(key, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.kafka.contains_key("bootstrap.servers") {
            return Err(ConfigError::key(
                "kafka.\"bootstrap.servers\"",
                "is required (or set STREAMCAST_BOOTSTRAP_SERVERS)",
            ));
        }
        for reserved in ["group.id", "enable.auto.offset.store", "enable.auto.commit"] {
            if self.kafka.contains_key(reserved) {
                return Err(ConfigError::key(
                    format!("kafka.\"{reserved}\""),
                    "is managed by streamcast (use consumer.group_id; offsets are stored only after delivery)",
                ));
            }
        }
        if self.consumer.group_id.is_empty() {
            return Err(ConfigError::key("consumer.group_id", "must not be empty"));
        }
        if self.consumer.max_in_flight == 0 {
            return Err(ConfigError::key("consumer.max_in_flight", "must be at least 1"));
        }
        if self.consumer.commit_interval_ms == 0 || self.consumer.commit_interval_ms > 60_000 {
            return Err(ConfigError::key("consumer.commit_interval_ms", "must be between 1 and 60000"));
        }
        if self.consumer.max_in_flight_bytes == 0 {
            return Err(ConfigError::key("consumer.max_in_flight_bytes", "must be at least 1"));
        }
        if !matches!(self.consumer.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(ConfigError::key("consumer.auto_offset_reset", "must be `earliest` or `latest`"));
        }
        if self.model.name.is_empty() || self.model.name.contains(['/', '\\']) || self.model.name.starts_with('.') {
            return Err(ConfigError::key("model.name", "must be a plain directory name under model.root"));
        }
        if self.model.version.is_empty()
            || self.model.version.contains(['/', '\\'])
            || self.model.version.starts_with('.')
        {
            return Err(ConfigError::key("model.version", "must be `latest` or a plain version directory name"));
        }
        let root = self.model.root.to_string_lossy();
        if root.contains("://") && !crate::model_store::is_remote(&self.model.root) {
            return Err(ConfigError::key(
                "model.root",
                format!("`{root}` has an unsupported scheme (s3://, gs://, az://, abfs(s)://, file:// or a directory)"),
            ));
        }
        if crate::model_store::is_remote(&self.model.root) && self.model.cache_dir.as_os_str().is_empty() {
            return Err(ConfigError::key(
                "model.cache_dir",
                "must name a local directory for an object-storage model.root",
            ));
        }
        if self.model.intra_threads == 0 {
            return Err(ConfigError::key("model.intra_threads", "must be at least 1"));
        }
        if self.batching.max_batch_size == 0 {
            return Err(ConfigError::key("batching.max_batch_size", "must be at least 1"));
        }
        if self.validation.max_message_bytes == 0 {
            return Err(ConfigError::key("validation.max_message_bytes", "must be at least 1"));
        }
        self.variants.decision_key()?;
        if self.http.max_in_flight == 0 {
            return Err(ConfigError::key("http.max_in_flight", "must be at least 1"));
        }
        if self.validation.max_id_bytes == 0 {
            return Err(ConfigError::key("validation.max_id_bytes", "must be at least 1"));
        }
        if self.cache.enabled && self.cache.max_entries == 0 {
            return Err(ConfigError::key("cache.max_entries", "must be at least 1 when the cache is enabled"));
        }
        if let Some(c) = &self.variants.candidate {
            if !(0.0..=1.0).contains(&c.share) {
                return Err(ConfigError::key("variants.candidate.share", "must be between 0 and 1"));
            }
        }
        for (key, v) in [
            ("variants.candidate.version", self.variants.candidate.as_ref().map(|c| &c.version)),
            ("variants.shadow.version", self.variants.shadow.as_ref().map(|c| &c.version)),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v == "latest" || v.contains(['/', '\\']) || v.starts_with('.') {
                    return Err(ConfigError::key(key, "must be a pinned version directory name"));
                }
            }
        }
        let v = &self.variants;
        for (key, ok) in [
            ("variants.rollback_margin", v.rollback_margin.is_finite() && v.rollback_margin >= 0.0),
            ("variants.promote_margin", v.promote_margin.is_finite() && (0.0..1.0).contains(&v.promote_margin)),
            ("variants.decision_min_joined", v.decision_min_joined >= 1),
        ] {
            if !ok {
                return Err(ConfigError::key(key, "is out of range (see the README's variants section)"));
            }
        }
        let f = &self.fallback;
        match f.kind {
            FallbackKind::SeasonalNaive if f.season == 0 => {
                return Err(ConfigError::key("fallback.season", "must be at least 1 for `seasonal_naive`"));
            }
            FallbackKind::Bundle
                if f.version.is_empty()
                    || f.version == "latest"
                    || f.version.contains(['/', '\\'])
                    || f.version.starts_with('.') =>
            {
                return Err(ConfigError::key("fallback.version", "must be a pinned version directory name"));
            }
            _ => {}
        }
        if f.model.as_ref().is_some_and(|m| m.is_empty() || m.contains(['/', '\\']) || m.starts_with('.')) {
            return Err(ConfigError::key("fallback.model", "must be a plain directory name under model.root"));
        }
        for (key, ok) in [
            ("fallback.error_rate", f.error_rate > 0.0 && f.error_rate <= 1.0),
            ("fallback.window", f.window >= 1),
            ("fallback.min_batches", f.min_batches >= 1 && f.min_batches <= f.window),
            ("fallback.open_for", !f.open_for.is_zero()),
            ("fallback.close_after", f.close_after >= 1),
        ] {
            if !ok {
                return Err(ConfigError::key(key, "is out of range (see the README's fallback section)"));
            }
        }
        if self.windows.max_series == 0 {
            return Err(ConfigError::key("windows.max_series", "must be at least 1"));
        }
        if self.processing.guarantee == Guarantee::ExactlyOnce {
            return Err(ConfigError::key(
                "processing.guarantee",
                "`exactly_once` is not implemented yet; use `at_least_once`",
            ));
        }
        let topics = self.topics.all();
        for (i, topic) in topics.iter().enumerate() {
            if topic.is_empty() {
                return Err(ConfigError::key("topics", "topic names must not be empty"));
            }
            if topics[..i].contains(topic) {
                return Err(ConfigError::key("topics", format!("topic `{topic}` is used for two roles")));
            }
        }
        let m = &self.monitor;
        for (key, ok) in [
            ("monitor.max_pending", m.max_pending > 0),
            ("monitor.max_pending_bytes", m.max_pending_bytes > 0),
            ("monitor.window_count", m.window_count > 0),
            ("monitor.window_duration", !m.window_duration.is_zero()),
            ("monitor.publish_interval", !m.publish_interval.is_zero()),
            ("monitor.join_ttl", !m.join_ttl.is_zero()),
            ("monitor.rmse_threshold", m.rmse_threshold.is_none_or(|t| t.is_finite() && t > 0.0)),
            ("monitor.rmse_threshold_ratio", m.rmse_threshold_ratio.is_finite() && m.rmse_threshold_ratio > 0.0),
            ("monitor.drift_sample_size", m.drift_sample_size >= 2),
            ("monitor.drift_min_samples", m.drift_min_samples >= 1 && m.drift_min_samples <= m.drift_sample_size),
            ("monitor.drift_alpha", m.drift_alpha > 0.0 && m.drift_alpha < 1.0),
            ("monitor.drift_bins", m.drift_bins >= 2),
            ("intervals.level", self.intervals.level > 0.0 && self.intervals.level < 1.0),
            ("intervals.aci_gamma", self.intervals.aci_gamma > 0.0 && self.intervals.aci_gamma <= 1.0),
            ("intervals.min_residuals", self.intervals.min_residuals >= 1),
            ("intervals.coverage_window", self.intervals.coverage_window >= 1),
            ("intervals.coverage_band", self.intervals.coverage_band > 0.0 && self.intervals.coverage_band < 1.0),
        ] {
            if !ok {
                return Err(ConfigError::key(key, "is out of range (see the README's monitor section)"));
            }
        }
        if !self.http.listen.is_empty() && self.http.listen_addr().is_none() {
            return Err(ConfigError::key("http.listen", "must be an address such as 127.0.0.1:9464, or empty"));
        }
        Ok(())
    }

    /// The secret values of this config (librdkafka's sensitive properties, the decision key).
    fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.kafka.iter().filter(|(k, _)| is_secret_property(k)).map(|(_, v)| v.to_string()).collect();
        out.extend(self.variants.decision_key.clone());
        // Short values would blank out unrelated text; no real secret is that short.
        out.retain(|v| v.len() >= 4);
        out
    }

    /// `text` with every secret value of this config replaced by `***`: for error messages and
    /// logs that may quote a librdkafka error (which can echo a property's value).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secret_values() {
            out = out.replace(&secret, "***");
        }
        out
    }

    /// The librdkafka properties, stringified, in a stable order.
    pub fn kafka_properties(&self) -> impl Iterator<Item = (&str, String)> {
        self.kafka.iter().map(|(k, v)| (k.as_str(), v.to_string()))
    }

    /// The effective config as TOML, with secret librdkafka values replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for (key, value) in copy.kafka.iter_mut() {
            if is_secret_property(key) {
                *value = KafkaValue::String("***".into());
            }
        }
        if let Some(k) = copy.variants.decision_key.as_mut() {
            *k = "***".into();
        }
        toml::to_string_pretty(&copy).expect("config always serializes: it was deserialized from TOML")
    }
}

/// The config file's sections, for telling a mistyped override from another tool's variable.
const SECTIONS: [&str; 15] = [
    "kafka",
    "consumer",
    "topics",
    "model",
    "batching",
    "validation",
    "windows",
    "cache",
    "variants",
    "fallback",
    "processing",
    "monitor",
    "intervals",
    "http",
    "telemetry",
];

/// Applies `STREAMCAST_<SECTION>__<KEY>=value` and `STREAMCAST_BOOTSTRAP_SERVERS`.
///
/// In the `[kafka]` section, `_` in the key maps to `.` (`STREAMCAST_KAFKA__SASL_MECHANISM` sets
/// `sasl.mechanism`), because librdkafka keys use dots, which environment names cannot hold.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("STREAMCAST_") else {
            continue;
        };
        if rest == "BOOTSTRAP_SERVERS" {
            section(table, "kafka", &var)?.insert("bootstrap.servers".into(), toml::Value::String(value));
            continue;
        }
        let Some((sec, key)) = rest.split_once("__") else {
            // Other tools share the prefix (STREAMCAST_RETRAINER_*), but a section name and one
            // underscore is an override with a typo, which would otherwise be silently ignored.
            let (first, key) = rest.split_once('_').unwrap_or((rest, ""));
            if !key.is_empty() && SECTIONS.contains(&first.to_ascii_lowercase().as_str()) {
                let fixed = format!("STREAMCAST_{first}__{key}");
                return Err(ConfigError::Env {
                    var,
                    message: format!("a config override needs two underscores after the section: {fixed}"),
                });
            }
            continue;
        };
        let sec = sec.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        if sec.is_empty() || key.is_empty() {
            return Err(ConfigError::Env { var, message: "expected STREAMCAST_<SECTION>__<KEY>".into() });
        }
        if sec == "kafka" {
            let mut property = key.replace('_', ".");
            let mut value = value;
            // `..._FILE=path` reads the value from a file, so that a mounted Kubernetes Secret
            // never has to pass through the environment. A property that itself ends in
            // `.file` (a path) is set as it is.
            if let Some(base) =
                property.strip_suffix(".file").filter(|_| !SENSITIVE_PROPERTIES.contains(&property.as_str()))
            {
                value = std::fs::read_to_string(&value)
                    .map_err(|e| ConfigError::Env { var: var.clone(), message: format!("cannot read {value}: {e}") })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                property = base.to_string();
            }
            section(table, "kafka", &var)?.insert(property, toml::Value::String(value));
        } else {
            let parsed = parse_env_value(&value);
            section(table, &sec, &var)?.insert(key, parsed);
        }
    }
    Ok(())
}

fn section<'t>(table: &'t mut toml::Table, name: &str, var: &str) -> Result<&'t mut toml::Table, ConfigError> {
    match table.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
        toml::Value::Table(t) => Ok(t),
        _ => Err(ConfigError::Env { var: var.into(), message: format!("`{name}` is not a table in the config file") }),
    }
}

/// Environment values are untyped; read them as TOML scalars when they look like one.
fn parse_env_value(value: &str) -> toml::Value {
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = value.parse::<f64>() {
        if f.is_finite() {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().unwrap();
        apply_env_overrides(&mut table, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Config::from_table(table)
    }

    const MINIMAL: &str = r#"
        [kafka]
        "bootstrap.servers" = "localhost:9092"
        [consumer]
        group_id = "g"
        [model]
        name = "co2-mlp"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.model.version, "latest");
        assert_eq!(c.topics.dlq, "input_data.dlq");
        assert_eq!(c.batching.max_batch_size, 256);
        assert_eq!(c.model.execution_provider, ExecutionProviderChoice::Auto);
        assert_eq!(c.processing.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{MINIMAL}\n[batching]\nmax_batch = 3\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("batching") && err.contains("max_batch"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err = load(&format!("{MINIMAL}\n[batching]\nmax_wait_ms = \"soon\"\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("batching.max_wait_ms"), "{err}");
        let err = load(&MINIMAL.replace("co2-mlp", "../etc"), &[]).unwrap_err().to_string();
        assert!(err.contains("model.name"), "{err}");
    }

    #[test]
    fn env_overrides_apply_with_types() {
        let c = load(
            MINIMAL,
            &[
                ("STREAMCAST_MODEL__VERSION", "3"),
                ("STREAMCAST_BATCHING__MAX_WAIT_MS", "9"),
                ("STREAMCAST_BOOTSTRAP_SERVERS", "b:1"),
                ("STREAMCAST_KAFKA__SASL_MECHANISM", "PLAIN"),
            ],
        )
        .unwrap();
        assert_eq!(c.model.version, "3");
        assert_eq!(c.batching.max_wait_ms, 9);
        assert_eq!(c.kafka["bootstrap.servers"], KafkaValue::String("b:1".into()));
        assert_eq!(c.kafka["sasl.mechanism"], KafkaValue::String("PLAIN".into()));
    }

    #[test]
    fn a_section_with_one_underscore_is_a_mistyped_override_and_named() {
        let err = load(MINIMAL, &[("STREAMCAST_MODEL_VERSION", "3")]).unwrap_err().to_string();
        assert!(err.contains("STREAMCAST_MODEL_VERSION") && err.contains("STREAMCAST_MODEL__VERSION"), "{err}");
        // Other tools' variables share the prefix and are left alone.
        let env =
            [("STREAMCAST_RETRAINER_MARGIN", "0.1"), ("STREAMCAST_TEST_BOOTSTRAP", "x:1"), ("STREAMCAST_HTTP", "")];
        assert!(load(MINIMAL, &env).is_ok());
        // The list is the config's own sections.
        let shown: toml::Table = toml::from_str(&load(MINIMAL, &[]).unwrap().to_redacted_toml()).unwrap();
        let mut keys: Vec<&str> = shown.keys().map(String::as_str).collect();
        let mut sections = SECTIONS.to_vec();
        keys.sort_unstable();
        sections.sort_unstable();
        assert_eq!(keys, sections);
    }

    #[test]
    fn secrets_are_redacted() {
        let c = load(&MINIMAL.replace("[consumer]", "\"sasl.password\" = \"hunter2\"\n[consumer]"), &[]).unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("hunter2") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn every_sensitive_property_and_the_decision_key_are_redacted_everywhere() {
        let mut extra = String::new();
        for (i, key) in SENSITIVE_PROPERTIES.iter().enumerate() {
            extra.push_str(&format!("\"{key}\" = \"s3cret-{i}-value\"\n"));
        }
        let text = MINIMAL.replace("[consumer]", &format!("{extra}[consumer]"))
            + "\n[variants]\ndecision_key = \"a-decision-key-of-length\"\n";
        let c = load(&text, &[]).unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret-") && !shown.contains("a-decision-key"), "{shown}");
        let error = "Invalid value \"s3cret-1-value\" for sasl.password; key a-decision-key-of-length";
        assert_eq!(c.redact(error), "Invalid value \"***\" for sasl.password; key ***");
    }

    #[test]
    fn kafka_secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let env = [("STREAMCAST_KAFKA__SASL_PASSWORD_FILE", path.to_str().unwrap())];
        let c = load(MINIMAL, &env).unwrap();
        assert_eq!(c.kafka["sasl.password"].to_string(), "from-a-file");
        let missing = [("STREAMCAST_KAFKA__SASL_PASSWORD_FILE", "/nonexistent/pw")];
        let err = load(MINIMAL, &missing).unwrap_err().to_string();
        assert!(err.contains("STREAMCAST_KAFKA__SASL_PASSWORD_FILE") && err.contains("/nonexistent/pw"), "{err}");
    }

    #[test]
    fn managed_kafka_keys_and_exactly_once_are_refused() {
        let err = load(&MINIMAL.replace("[consumer]", "\"enable.auto.commit\" = true\n[consumer]"), &[]).unwrap_err();
        assert!(err.to_string().contains("enable.auto.commit"));
        let err = load(&format!("{MINIMAL}\n[processing]\nguarantee = \"exactly_once\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("processing.guarantee"));
    }
}
