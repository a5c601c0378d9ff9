//! The monitor side task: joins late actuals to earlier predictions, keeps rolling error per
//! model version and variant, tests served inputs and outputs for drift against the bundle's
//! reference sample, and publishes snapshots, alerts and retraining triggers.
//!
//! - [`join`]: the bounded id join and its commit watermarks.
//! - [`rolling`]: incremental RMSE/MAE/bias over a count and a time window.
//! - [`stats`]: KS test, PSI, multiple-testing correction, bounded samples.
//! - [`drift`]: per-feature drift verdicts.
//! - [`scoring`]: the joins, rolling error per model version × variant, RMSE gates, performance
//!   retraining and the A/B decision; interval calibration, coverage and its gate, and a quantile
//!   bundle's pinball loss.
//! - [`publish`]: one publish: alerts, snapshots, gauges.
//! - [`snapshot`]: the `model_metrics` message and its producer.
//! - [`metrics`]: the Prometheus gauges.
//! - [`election`]: which replica's monitor leads the group (Kafka's group protocol decides).
//! - [`run`]: the consumer, the poll loop, routing by [`run::TopicRole`], commit watermarks.
//!
//! Every replica runs it, but only the elected leader (see [`election`]) reads: every partition
//! of `predictions`, `actuals` and `input_data`, so its numbers, alerts and decisions are the
//! whole group's whatever the replica count. It commits under its own group id
//! (`<consumer.group_id>-monitor`), so it runs the same inside `streamcast run` or alone with
//! `--role monitor`, and a restart or failover rebuilds pending joins by re-reading from the
//! committed watermark: per partition, the lowest offset whose record still waits.

pub mod drift;
pub mod election;
pub mod join;
pub mod metrics;
pub mod publish;
pub mod rolling;
pub mod run;
pub mod scoring;
pub mod snapshot;
pub mod stats;

use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::Registry;
use rdkafka::producer::BaseProducer;

use crate::alert::AlertSink;
use crate::bundle::Bundle;
use crate::config::{Config, JoinBy};
use crate::event::{FeatureSchema, ModelRef};
use crate::kafka::{producer_side_config, ClusterError};
use crate::shutdown::Shutdown;
use election::Election;
use metrics::MonitorMetrics;
use publish::Publisher;
use run::{Monitor, Start, Topics};
use snapshot::SnapshotSink;

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `monitor.join_by = "time"` needs the step that turns an issue time into target times.
    #[error("monitor.join_by = \"time\" needs the served bundle to declare `frequency` (bundle {0} does not)")]
    NoFrequency(String),
    /// `monitor.actuals_from_input` needs the time join and a target among the features.
    #[error("monitor.actuals_from_input needs {0}")]
    ActualsFromInput(String),
}

/// Starts the monitor thread.
pub fn spawn(
    config: &Config,
    bundle: Arc<Bundle>,
    registry: &Registry,
    alerts: Arc<AlertSink>,
    shutdown: Shutdown,
    store: Option<Arc<crate::model_store::RemoteRoot>>,
) -> Result<JoinHandle<()>, MonitorError> {
    let cfg = &config.monitor;
    let topics = Topics::new(config);
    let consumer = run::consumer(config, &topics, metrics::LagGauges::register(registry))?;
    let election = Election::join(config)?;
    let producer: BaseProducer = producer_side_config(config).create().map_err(ClusterError::Client)?;
    let m = &bundle.manifest;
    let model = ModelRef { name: m.name.clone(), version: m.version.clone() };
    if cfg.join_by == JoinBy::Time && m.frequency.is_none() {
        return Err(MonitorError::NoFrequency(format!("{} version {}", m.name, m.version)));
    }
    if cfg.actuals_from_input && cfg.join_by != JoinBy::Time {
        return Err(MonitorError::ActualsFromInput("monitor.join_by = \"time\"".into()));
    }
    if cfg.actuals_from_input && !m.features.contains(&m.target.name) {
        return Err(MonitorError::ActualsFromInput(format!(
            "the bundle's target `{}` to be one of its features ({:?})",
            m.target.name, m.features
        )));
    }
    let threshold = run::threshold_for(cfg, &bundle);
    let metrics = MonitorMetrics::register(registry);
    let snapshots = SnapshotSink::new(producer, config.topics.metrics.clone());
    let schema = FeatureSchema::for_bundle(m, config.validation.max_message_bytes, false);
    let features = m.features.clone();
    let start = Start {
        bundle: bundle.clone(),
        cfg: cfg.clone(),
        model: model.clone(),
        threshold,
        shadow: topics.has_shadow(),
        variants: config.variants.clone(),
        rejected: metrics.rejected(),
        error_counters: metrics.errors(),
        model_root: config.model.root.clone(),
        store,
        intervals: config.intervals.clone(),
    };
    let publisher = Publisher::new(cfg, model, &features, snapshots, metrics, alerts).with_intervals(&config.intervals);
    let monitor = Monitor::new(start, run::alerts_reader(config)?, topics, schema, publisher);
    tracing::info!(group = %run::group_id(config), threshold, "Monitor started.");
    Ok(std::thread::Builder::new()
        .name("streamcast-monitor".into())
        .spawn(move || monitor.run(election, consumer, shutdown))
        .expect("spawning a thread only fails when the OS is out of resources"))
}
