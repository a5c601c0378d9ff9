//! Model roots in object storage: `model.root = "s3://bucket/prefix"` (or `gs://`, `az://`,
//! `file://`). Versions are pulled into a local cache (`model.cache_dir`) and everything else —
//! validation, the checksum in `bundle.json`, golden cases, hot reload — works on the cache as it
//! does on a local root.
//!
//! A version counts as uploaded once its `bundle.json` is there: publishers write `model.onnx`
//! first and `bundle.json` last. A pull goes to a hidden directory (`.pull-<version>`, which
//! version listings skip) and is renamed into place, so a reader never sees half a version. A
//! cached version is pulled again when either object's ETag (or, without one, its modification
//! time and size) changes: a fixed re-upload is retried, and a corrupted one is refused by the
//! checksum when it loads, with `model_rejected`, while the old version keeps serving.
//!
//! Credentials come from each cloud's standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and,
//! where the client supports it, instance metadata or workload identity; nothing is configured in
//! streamcast itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};

use crate::bundle;

/// Why a remote model root could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model.root `{url}`: {message}")]
    Url { url: String, message: String },
    #[error("model.root `{url}`: {operation}: {source}")]
    Remote { url: String, operation: String, source: object_store::Error },
    #[error("model.cache_dir {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("model.root `{url}`: no version of `{name}` has a bundle.json")]
    NoVersions { url: String, name: String },
}

/// Which versions of a model to pull.
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// This version.
    Exactly(&'a str),
    /// The highest uploaded version.
    Highest,
    /// Every uploaded version above this one (what the watcher may switch to).
    NewerThan(&'a str),
}

/// Whether `root` names object storage rather than a local directory.
pub fn is_remote(root: &Path) -> bool {
    root.to_str().is_some_and(|s| {
        ["s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "file://"].iter().any(|p| s.starts_with(p))
    })
}

/// A model root in object storage, mirrored into a local cache.
pub struct RemoteRoot {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    cache: PathBuf,
    /// The store's client is async; the watcher and monitor call from their own threads, so
    /// each pull runs on this small runtime of its own. Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RemoteRoot {
    /// The last holder may be an async task (a pinned version starts no watcher): dropping a
    /// runtime there would panic, so it is shut down in the background.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RemoteRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRoot").field("url", &self.url).field("cache", &self.cache).finish()
    }
}

impl RemoteRoot {
    /// Opens `url` with credentials from the environment; nothing is fetched yet.
    pub fn open(url: &str, cache: &Path) -> Result<RemoteRoot, StoreError> {
        let bad = |message: String| StoreError::Url { url: url.into(), message };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match parsed.scheme() {
            "s3" | "s3a" => {
                object_store::aws::AmazonS3Builder::from_env().with_url(url).build().map(|s| Arc::new(s) as _)
            }
            "gs" => {
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url).build().map(|s| Arc::new(s) as _)
            }
            "az" | "abfs" | "abfss" => {
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url).build().map(|s| Arc::new(s) as _)
            }
            "file" => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
            other => return Err(bad(format!("unsupported scheme `{other}` (s3, gs, az or file)"))),
        };
        let store = built.map_err(|e| bad(e.to_string()))?;
        // The bucket or container is in the host (or the user part, for abfss); the path is
        // the prefix. For file:// the whole absolute path is the prefix of a store at `/`.
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
        std::fs::create_dir_all(cache).map_err(|source| StoreError::Cache { path: cache.into(), source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Cache { path: cache.into(), source })?;
        Ok(RemoteRoot { url: url.into(), store, prefix, cache: cache.into(), runtime: Some(runtime) })
    }

    /// The local directory that mirrors the root: use it as the model root.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Pulls the selected versions of `name` that are missing from the cache or changed since;
    /// returns the versions pulled. A version without `bundle.json` is still uploading and is
    /// left alone.
    pub fn sync(&self, name: &str, select: Select<'_>) -> Result<Vec<String>, StoreError> {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.block_on(self.sync_async(name, select))
    }

    async fn sync_async(&self, name: &str, select: Select<'_>) -> Result<Vec<String>, StoreError> {
        let remote = |operation: String, source| StoreError::Remote { url: self.url.clone(), operation, source };
        let model_prefix = self.prefix.clone().join(name);
        let listing = self
            .store
            .list_with_delimiter(Some(&model_prefix))
            .await
            .map_err(|e| remote(format!("listing {model_prefix}"), e))?;
        let mut versions: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|v| !v.starts_with('.'))
            .collect();
        versions.sort_by(|a, b| bundle::compare_versions(a, b));
        let wanted: Vec<String> = match select {
            Select::Exactly(v) => versions.into_iter().filter(|x| x == v).collect(),
            Select::Highest => versions.into_iter().rev().collect(),
            Select::NewerThan(v) => {
                versions.into_iter().filter(|x| bundle::compare_versions(x, v) == std::cmp::Ordering::Greater).collect()
            }
        };
        let mut pulled = Vec::new();
        for version in wanted {
            let dir = model_prefix.clone().join(version.as_str());
            let manifest = match self.store.head(&dir.clone().join("bundle.json")).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue, // still uploading
                Err(e) => return Err(remote(format!("reading {dir}/bundle.json"), e)),
            };
            let model = match self.store.head(&dir.clone().join("model.onnx")).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(remote(format!("reading {dir}/model.onnx"), e)),
            };
            let stamp = format!("{}\n{}\n", identity(&model), identity(&manifest));
            let local = self.cache.join(name).join(&version);
            let cached = std::fs::read_to_string(local.join(".source")).is_ok_and(|s| s == stamp);
            if !cached {
                self.pull(name, &version, &dir, &stamp).await?;
                pulled.push(version.clone());
            }
            if matches!(select, Select::Highest) {
                break; // Only the highest uploaded version is wanted.
            }
        }
        if matches!(select, Select::Highest | Select::Exactly(_)) && !self.cache.join(name).is_dir() {
            return Err(StoreError::NoVersions { url: self.url.clone(), name: name.into() });
        }
        Ok(pulled)
    }

    /// Downloads one version to `.pull-<version>` and renames it over the cached copy.
    async fn pull(&self, name: &str, version: &str, dir: &ObjectPath, stamp: &str) -> Result<(), StoreError> {
        let cache_err = |path: &Path, source| StoreError::Cache { path: path.into(), source };
        let parent = self.cache.join(name);
        let staging = parent.join(format!(".pull-{version}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| cache_err(&staging, e))?;
        // model.onnx first: if bundle.json changed in between, the stamp no longer matches and
        // the next sync pulls again.
        for file in ["model.onnx", "bundle.json"] {
            let path = dir.clone().join(file);
            let bytes = match self.store.get(&path).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            }
            .map_err(|e| StoreError::Remote {
                url: self.url.clone(),
                operation: format!("downloading {path}"),
                source: e,
            })?;
            let target = staging.join(file);
            std::fs::write(&target, &bytes).map_err(|e| cache_err(&target, e))?;
        }
        let source = staging.join(".source");
        std::fs::write(&source, stamp).map_err(|e| cache_err(&source, e))?;
        let local = parent.join(version);
        if local.exists() {
            // A served model is in memory already; its files can go.
            std::fs::remove_dir_all(&local).map_err(|e| cache_err(&local, e))?;
        }
        std::fs::rename(&staging, &local).map_err(|e| cache_err(&local, e))?;
        tracing::info!(url = %self.url, name, version, "Pulled a model version into the local cache.");
        Ok(())
    }
}

/// What identifies one upload of an object.
fn identity(meta: &ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => format!("etag {tag}"),
        None => format!("modified {} size {}", meta.last_modified.to_rfc3339(), meta.size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_roots_are_told_apart_from_paths() {
        assert!(is_remote(Path::new("s3://bucket/models")));
        assert!(is_remote(Path::new("gs://bucket")));
        assert!(is_remote(Path::new("az://container/models")));
        assert!(is_remote(Path::new("file:///srv/models")));
        assert!(!is_remote(Path::new("models")));
        assert!(!is_remote(Path::new("/srv/models")));
    }

    /// A `file://` root goes through the same listing, stamp and pull code as the clouds.
    #[test]
    fn file_root_pulls_highest_then_newer_and_repulls_a_changed_upload() {
        let remote_dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let put = |version: &str, model: &[u8], with_manifest: bool| {
            let d = remote_dir.path().join("m").join(version);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("model.onnx"), model).unwrap();
            if with_manifest {
                std::fs::write(d.join("bundle.json"), format!("{{\"version\": \"{version}\"}}")).unwrap();
            }
        };
        put("1", b"one", true);
        put("2", b"two", true);
        put("10", b"ten", false); // still uploading: no bundle.json yet
        let url = format!("file://{}", remote_dir.path().display());
        let root = RemoteRoot::open(&url, cache.path()).unwrap();

        assert_eq!(root.sync("m", Select::Highest).unwrap(), vec!["2"]);
        assert_eq!(std::fs::read(cache.path().join("m/2/model.onnx")).unwrap(), b"two");
        assert!(!cache.path().join("m/1").exists(), "only the highest is pulled at start");
        assert!(root.sync("m", Select::NewerThan("2")).unwrap().is_empty(), "10 is not complete");

        put("10", b"ten", true);
        assert_eq!(root.sync("m", Select::NewerThan("2")).unwrap(), vec!["10"]);
        assert!(root.sync("m", Select::NewerThan("2")).unwrap().is_empty(), "cached and unchanged");

        std::thread::sleep(std::time::Duration::from_millis(20));
        put("10", b"ten, fixed", true);
        assert_eq!(root.sync("m", Select::NewerThan("2")).unwrap(), vec!["10"]);
        assert_eq!(std::fs::read(cache.path().join("m/10/model.onnx")).unwrap(), b"ten, fixed");
        assert_eq!(root.sync("m", Select::Exactly("1")).unwrap(), vec!["1"]);
        assert!(matches!(root.sync("other", Select::Highest), Err(StoreError::NoVersions { .. })));
    }
}
