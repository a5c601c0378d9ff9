//! The model registry watcher: polls the model root for a newer version of the served bundle,
//! loads, validates (signature, finite parameters, golden cases) and warms it up on its own
//! thread, and hands it to the inference thread, which swaps it in between two batches.
//!
//! A version that fails is refused with a WARN and a `model_rejected` alert naming the reason;
//! the old model keeps serving, and the same files are not retried until they change (a
//! half-copied bundle is retried once the copy completes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::bundle::{self, Bundle};
use crate::config::Config;
use crate::event::{now_rfc3339, ModelRef};
use crate::inference::{Model, SessionOptions};
use crate::monitor::alerts::Alert;
use crate::pipeline::publish::AlertSink;
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// What the watcher needs to know about the served model.
pub struct Served {
    pub model: ModelRef,
    pub features: Vec<String>,
    pub window: usize,
    pub horizon: usize,
    /// `model` failed to load at start-up (the fallback serves): its files are retried once they
    /// change, and any newer version is taken.
    pub failed: bool,
}

/// Starts the watcher when `model.version = "latest"` and `model.watch_interval` is non-zero.
pub fn spawn(
    config: &Config,
    served: Served,
    reloads: SyncSender<Model>,
    models_doc: Arc<RwLock<serde_json::Value>>,
    metrics: Arc<Metrics>,
    alerts: Arc<AlertSink>,
    shutdown: Shutdown,
) -> Option<JoinHandle<()>> {
    if config.model.version != "latest" || config.model.watch_interval.is_zero() {
        return None;
    }
    let mut rejected = HashSet::new();
    if served.failed {
        let dir = config.model.root.join(&config.model.name).join(&served.model.version);
        rejected.insert((
            served.model.version.clone(),
            mtime(&dir.join("bundle.json")),
            mtime(&dir.join("model.onnx")),
        ));
    }
    let w = Watcher {
        root: config.model.root.clone(),
        name: config.model.name.clone(),
        interval: config.model.watch_interval,
        options: SessionOptions {
            provider: config.model.execution_provider,
            intra_threads: config.model.intra_threads,
        },
        warm_batch: config.batching.max_batch_size,
        served,
        rejected,
    };
    Some(
        std::thread::Builder::new()
            .name("streamcast-registry".into())
            .spawn(move || w.run(reloads, models_doc, metrics, alerts, shutdown))
            .expect("spawning a thread only fails when the OS is out of resources"),
    )
}

struct Watcher {
    root: PathBuf,
    name: String,
    interval: Duration,
    options: SessionOptions,
    warm_batch: usize,
    served: Served,
    /// (version, modification times) of refused bundles, so they are not reloaded every tick.
    rejected: HashSet<(String, Option<SystemTime>, Option<SystemTime>)>,
}

impl Watcher {
    fn run(
        mut self,
        reloads: SyncSender<Model>,
        doc: Arc<RwLock<serde_json::Value>>,
        metrics: Arc<Metrics>,
        alerts: Arc<AlertSink>,
        shutdown: Shutdown,
    ) {
        while !shutdown.is_triggered() {
            sleep_unless(&shutdown, self.interval);
            let Ok(versions) = bundle::list_versions(&self.root, &self.name) else { continue };
            let Some(latest) = versions.last() else { continue };
            if *latest == self.served.model.version && !self.served.failed {
                continue;
            }
            let dir = self.root.join(&self.name).join(latest);
            let key = (latest.clone(), mtime(&dir.join("bundle.json")), mtime(&dir.join("model.onnx")));
            if self.rejected.contains(&key) {
                continue;
            }
            match self.load(&dir, latest) {
                Ok(model) => {
                    let to = model.model_ref().clone();
                    if reloads.send(model).is_err() {
                        return; // The inference thread is gone: shutting down.
                    }
                    tracing::info!(from = %self.served.model.version, to = %to.version, "New model version validated; swapping.");
                    metrics.model_reloads.with_label_values(&["loaded"]).inc();
                    if let Ok(mut d) = doc.write() {
                        // By variant, not position: a promotion reorders the entries.
                        let models = d["models"].as_array_mut().into_iter().flatten();
                        if let Some(primary) =
                            models.filter(|m| m["variant"] == "primary").find_map(|m| m.as_object_mut())
                        {
                            primary.insert("version".into(), to.version.clone().into());
                            primary.remove("status");
                            primary.remove("reason");
                        }
                    }
                    self.served.model = to;
                    self.served.failed = false;
                }
                Err(reason) => {
                    tracing::warn!(version = %latest, %reason, serving = %self.served.model.version, "Model version refused; the old one keeps serving.");
                    metrics.model_reloads.with_label_values(&["rejected"]).inc();
                    self.rejected.insert(key);
                    alerts.send(&Alert {
                        kind: "model_rejected",
                        model: ModelRef { name: self.name.clone(), version: latest.clone() },
                        variant: Some("primary"),
                        at: now_rfc3339(),
                        details: serde_json::json!({"reason": reason, "serving": self.served.model.version}),
                    });
                }
            }
        }
    }

    /// Loads, validates and warms up `dir`, refusing what cannot replace the served model in place.
    fn load(&self, dir: &Path, version: &str) -> Result<Model, String> {
        let bundle = Bundle::load(dir).map_err(|e| e.to_string())?;
        let m = &bundle.manifest;
        if m.version != version {
            return Err(format!("bundle.json says version {} but it lives in directory {version}", m.version));
        }
        if m.features != self.served.features || m.window != self.served.window || m.horizon != self.served.horizon {
            return Err(format!(
                "features {:?} / window {} / horizon {} differ from the served model's {:?} / {} / {}; per-series state and consumers' expectations cannot carry over, restart to switch",
                m.features, m.window, m.horizon, self.served.features, self.served.window, self.served.horizon
            ));
        }
        let mut model = Model::load(bundle, self.options).map_err(|e| e.to_string())?;
        model.warm_up(self.warm_batch).map_err(|e| e.to_string())?;
        Ok(model)
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn sleep_unless(shutdown: &Shutdown, total: Duration) {
    let step = Duration::from_millis(100);
    let mut left = total;
    while !left.is_zero() && !shutdown.is_triggered() {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}
