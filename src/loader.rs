//! Loading the models `streamcast run` serves: the primary (or what stands in for it when it
//! fails to load), the A/B candidate, the shadow and the fallback. Blocking: call it off the
//! async threads.

use std::sync::Arc;

use crate::bundle::{self, Bundle, BundleError};
use crate::config::{Config, FallbackKind};
use crate::event::ModelRef;
use crate::inference::fallback::{FallbackError, FallbackModel, Naive};
use crate::inference::{InferenceError, Model, SessionOptions};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Fallback(#[from] FallbackError),
}

impl LoadError {
    /// Problems of the primary's own files (manifest, signature, golden cases, a failing
    /// warm-up), which a configured fallback covers; not a missing directory, ONNX Runtime or
    /// CUDA.
    fn is_model_problem(&self) -> bool {
        match self {
            LoadError::Bundle(e) | LoadError::Inference(InferenceError::Bundle(e)) => {
                matches!(e, BundleError::Manifest { .. } | BundleError::Invalid { .. } | BundleError::Golden { .. })
            }
            LoadError::Inference(e) => {
                matches!(e, InferenceError::Run(_) | InferenceError::Shape(_) | InferenceError::NonFinite)
            }
            LoadError::Fallback(_) => false,
        }
    }
}

/// Models next to the primary: an A/B candidate with its share of series, a shadow, and the
/// fallback that serves while the circuit breaker is open.
#[derive(Default)]
pub struct Variants {
    pub candidate: Option<(Model, f64)>,
    pub shadow: Option<Model>,
    pub fallback: Option<FallbackModel>,
}

/// The primary model as start-up found it.
pub enum Primary {
    Loaded(Model),
    /// It failed to load and `[fallback]` serves until a valid version is hot-reloaded. `bundle`
    /// supplies features and window: the primary's own manifest when it was readable, else the
    /// fallback bundle's.
    Failed {
        bundle: Arc<Bundle>,
        model: ModelRef,
        reason: String,
    },
}

impl Primary {
    /// The bundle whose features, window and horizon the worker serves.
    pub fn bundle(&self) -> Arc<Bundle> {
        match self {
            Primary::Loaded(m) => m.bundle().clone(),
            Primary::Failed { bundle, .. } => bundle.clone(),
        }
    }

    pub fn model_ref(&self) -> ModelRef {
        match self {
            Primary::Loaded(m) => m.model_ref().clone(),
            Primary::Failed { model, .. } => model.clone(),
        }
    }
}

/// Loads `dir`'s bundle, checks it and warms its session up with a batch of `warm_batch`.
pub fn load_dir(dir: &std::path::Path, options: SessionOptions, warm_batch: usize) -> Result<Model, LoadError> {
    let bundle = Bundle::load(dir)?;
    let mut model = Model::load(bundle, options)?;
    model.warm_up(warm_batch)?;
    Ok(model)
}

/// Resolves, loads and validates the configured bundle, then warms its session up.
pub fn load_model(config: &Config) -> Result<Model, LoadError> {
    let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
    let bundle = Bundle::load(&dir)?;
    let mut model = Model::load(bundle, SessionOptions::from(&config.model))?;
    let warm = model.warm_up(config.batching.max_batch_size)?;
    let report = model.provider();
    tracing::info!(
        model = %model.model_ref().name,
        version = %model.model_ref().version,
        provider = report.provider.as_str(),
        fallback_reason = report.fallback_reason.as_deref().unwrap_or(""),
        warm_up_ms = warm.as_secs_f64() * 1e3,
        "Model loaded."
    );
    Ok(model)
}

/// The primary, or, when its own files are broken and a fallback is configured, what the
/// worker needs to serve on the fallback until a valid version is hot-reloaded.
pub fn load_primary(config: &Config) -> Result<Primary, LoadError> {
    match load_model(config) {
        Ok(model) => Ok(Primary::Loaded(model)),
        Err(error) if config.fallback.kind != FallbackKind::None && error.is_model_problem() => {
            failed_primary(config, error)
        }
        Err(error) => Err(error),
    }
}

/// The primary's manifest when it is readable, else the fallback bundle's; with neither, the
/// original error.
fn failed_primary(config: &Config, error: LoadError) -> Result<Primary, LoadError> {
    let dir = bundle::resolve(&config.model.root, &config.model.name, &config.model.version)?;
    let version = dir.file_name().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
    let model = ModelRef { name: config.model.name.clone(), version };
    let bundle = match Bundle::load(&dir) {
        Ok(b) => b,
        Err(_) if config.fallback.kind == FallbackKind::Bundle => {
            let name = config.fallback.model.as_deref().unwrap_or(&config.model.name);
            Bundle::load(&bundle::resolve(&config.model.root, name, &config.fallback.version)?)?
        }
        Err(_) => return Err(error),
    };
    Ok(Primary::Failed { bundle: Arc::new(bundle), model, reason: error.to_string() })
}

/// Loads the configured candidate, shadow and fallback; each bundle must keep the primary's
/// features, window and horizon, since they score the same windows.
pub fn load_variants(config: &Config, primary: &Bundle) -> Result<Variants, LoadError> {
    let options = SessionOptions::from(&config.model);
    let load = |name: &str, version: &str| -> Result<Model, LoadError> {
        let dir = bundle::resolve(&config.model.root, name, version)?;
        let b = Bundle::load(&dir)?;
        if let Err(message) = primary.manifest.check_same_shape(&b.manifest) {
            return Err(BundleError::Invalid { dir, message: format!("a variant must keep {message}") }.into());
        }
        let mut model = Model::load(b, options)?;
        model.warm_up(config.batching.max_batch_size)?;
        Ok(model)
    };
    let v = &config.variants;
    let name = config.model.name.as_str();
    let f = &config.fallback;
    let fallback = match f.kind {
        FallbackKind::None => None,
        FallbackKind::LastValue | FallbackKind::SeasonalNaive => {
            Some(FallbackModel::Naive(Naive::for_manifest(&primary.manifest, f.kind, f.season)?))
        }
        FallbackKind::Bundle => Some(FallbackModel::Bundle(load(f.model.as_deref().unwrap_or(name), &f.version)?)),
    };
    if let Some(fb) = &fallback {
        tracing::info!(fallback = %fb.model_ref().version, model = %fb.model_ref().name, "Fallback ready.");
    }
    Ok(Variants {
        candidate: v.candidate.as_ref().map(|c| load(name, &c.version).map(|m| (m, c.share))).transpose()?,
        shadow: v.shadow.as_ref().map(|c| load(name, &c.version)).transpose()?,
        fallback,
    })
}
