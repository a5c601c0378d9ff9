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
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::alert::{Alert, AlertSink, Details, RejectedDetails};
use crate::bundle::{self, Bundle};
use crate::config::Config;
use crate::event::{ModelRef, Variant};
use crate::inference::{Model, SessionOptions};
use crate::served::SharedServedModels;
use crate::shutdown::Shutdown;
use crate::telemetry::events::{InternalEvent, ModelRefused, ModelReloaded};
use crate::telemetry::Metrics;

/// What the watcher needs to know about the served model.
pub struct Served {
    pub model: ModelRef,
    /// The served bundle: a new version must keep its features, window and horizon.
    pub bundle: Arc<Bundle>,
    /// `model` failed to load at start-up (the fallback serves): its files are retried once they
    /// change, and any newer version is taken.
    pub failed: bool,
    /// `/readyz`'s "the primary is loaded", set once a reload replaces a primary that failed.
    pub loaded: Arc<std::sync::atomic::AtomicBool>,
    /// The object-storage root the local one mirrors: each tick pulls newer versions first.
    pub store: Option<Arc<crate::model_store::RemoteRoot>>,
}

/// Starts the watcher when `model.version = "latest"` and `model.watch_interval` is non-zero.
pub fn spawn(
    config: &Config,
    served: Served,
    reloads: SyncSender<Model>,
    served_models: SharedServedModels,
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
        options: SessionOptions::from(&config.model),
        warm_batch: config.batching.max_batch_size,
        served,
        rejected,
        store_failing: false,
    };
    Some(
        std::thread::Builder::new()
            .name("streamcast-registry".into())
            .spawn(move || w.run(reloads, served_models, metrics, alerts, shutdown))
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
    /// The last pull from object storage failed (warned once until one succeeds).
    store_failing: bool,
}

impl Watcher {
    fn run(
        mut self,
        reloads: SyncSender<Model>,
        served_models: SharedServedModels,
        metrics: Arc<Metrics>,
        alerts: Arc<AlertSink>,
        shutdown: Shutdown,
    ) {
        while !shutdown.is_triggered() {
            sleep_unless(&shutdown, self.interval);
            self.pull_newer();
            let Ok(versions) = bundle::list_versions(&self.root, &self.name) else { continue };
            // `latest` is the highest version that validates: newest first, and a refused one
            // does not hide an older valid one that arrived with it.
            let candidates: Vec<String> = versions.into_iter().rev().filter(|v| self.is_candidate(v)).collect();
            for version in &candidates {
                let dir = self.root.join(&self.name).join(version);
                let key = (version.clone(), mtime(&dir.join("bundle.json")), mtime(&dir.join("model.onnx")));
                if self.rejected.contains(&key) {
                    continue;
                }
                match self.load(version) {
                    Ok(model) => {
                        let to = model.model_ref().clone();
                        if shutdown.send(&reloads, model).is_err() {
                            return; // Shutting down, or the inference thread is gone.
                        }
                        ModelReloaded { from: &self.served.model.version, to: &to.version }.emit(&metrics);
                        served_models.write().unwrap_or_else(|e| e.into_inner()).on_reload(&to.version);
                        self.served.model = to;
                        self.served.failed = false;
                        self.served.loaded.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    Err(reason) => {
                        ModelRefused { version, reason: &reason, serving: &self.served.model.version }.emit(&metrics);
                        self.rejected.insert(key);
                        let serving = self.served.model.version.clone();
                        alerts.send(&Alert::new(
                            ModelRef { name: self.name.clone(), version: version.clone() },
                            Some(Variant::Primary),
                            Details::ModelRejected(RejectedDetails { reason, serving }),
                        ));
                    }
                }
            }
        }
    }

    /// Pulls what the watcher may switch to from an object-storage root: newer versions, and
    /// the served one while it is the one that failed. An unreachable store is logged and the
    /// next tick tries again; the cache keeps serving what it has.
    fn pull_newer(&mut self) {
        use crate::model_store::Select;
        let Some(store) = &self.served.store else { return };
        let served = self.served.model.version.clone();
        let mut result = store.sync(&self.name, Select::NewerThan(&served));
        if self.served.failed && result.is_ok() {
            result = store.sync(&self.name, Select::Exactly(&served));
        }
        match result {
            Ok(_) => self.store_failing = false,
            Err(error) if !self.store_failing => {
                tracing::warn!(%error, "Cannot list or pull model versions from object storage; retrying every tick.");
                self.store_failing = true;
            }
            Err(_) => {}
        }
    }

    /// Newer than the served version; or the served version itself while it is the one that
    /// failed to load (its files may have been fixed).
    fn is_candidate(&self, version: &str) -> bool {
        match bundle::compare_versions(version, &self.served.model.version) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => self.served.failed,
            std::cmp::Ordering::Less => false,
        }
    }

    /// Resolves `version` as start-up does (canonical, inside the root: a symlink may not lead
    /// out of it), then loads, validates and warms it up, refusing what cannot replace the
    /// served model in place.
    fn load(&self, version: &str) -> Result<Model, String> {
        let dir = bundle::resolve(&self.root, &self.name, version).map_err(|e| e.to_string())?;
        let bundle = Bundle::load(&dir).map_err(|e| e.to_string())?;
        let m = &bundle.manifest;
        if m.version != version {
            return Err(format!("bundle.json says version {} but it lives in directory {version}", m.version));
        }
        if let Err(message) = self.served.bundle.manifest.check_same_shape(m) {
            return Err(format!(
                "a new version must keep {message}; per-series state and consumers' expectations cannot carry over, restart to switch"
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
