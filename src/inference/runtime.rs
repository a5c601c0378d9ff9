//! Finding and loading the ONNX Runtime shared library (`ort` is built with `load-dynamic`).
//!
//! Order: `ORT_DYLIB_PATH`; then the project-local virtualenv that `make ort` fills from the pinned
//! `onnxruntime` wheel, looked up from the working directory and from the executable's ancestors
//! (so `target/release/streamcast` finds `.venv` at the repository root).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::InferenceError;

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
static LOADED: OnceLock<PathBuf> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, InferenceError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = locate_library().ok_or_else(|| {
                "ONNX Runtime library (libonnxruntime.so) not found: run `make ort` in the repository \
                 (it installs the pinned onnxruntime wheel into .venv), or set ORT_DYLIB_PATH to the library"
                    .to_string()
            })?;
            let builder =
                ort::init_from(&path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
            tracing::debug!(path = %path.display(), "Loaded ONNX Runtime.");
            let _ = LOADED.set(path);
            builder
                .with_name("streamcast")
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|message| InferenceError::Runtime(message.clone()))
}

/// The library [`environment`] loaded; it stays loaded for the life of the process.
pub fn loaded_library() -> Option<&'static Path> {
    LOADED.get().map(PathBuf::as_path)
}

/// Where the library was found (for start-up reports); `None` if it cannot be found.
pub fn locate_library() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(5).map(Path::to_path_buf));
    }
    roots.iter().find_map(|root| find_in_venv(&root.join(".venv")))
}

fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join("onnxruntime").join("capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found.pop()
}
