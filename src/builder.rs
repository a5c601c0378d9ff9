//! `streamcast models build`: a bundle from an ONNX file a team already has, its scaler as JSON,
//! and a reference CSV drawn from the training data.
//!
//! The bundle is assembled in a hidden staging directory beside its version (`.build-<version>`,
//! which version listings skip), validated there exactly as `models validate` would (signature,
//! golden cases, a full batch), and only then renamed into place: a worker watching the root
//! sees the whole version or nothing.
//!
//! Golden cases should come from the training framework (`--golden`), so an export that changed
//! the numbers is caught here. Without them the builder computes them with ONNX Runtime from the
//! reference windows, which guards later changes (a runtime upgrade, a corrupted copy) but not
//! the export itself; it says so.

use std::path::{Path, PathBuf};

use crate::bundle::{
    self, Bundle, BundleError, GoldenCase, InputSpec, Layout, Manifest, OutputSpec, Reference, TargetSpec,
};
use crate::inference::model::{probe, TensorInfo};
use crate::inference::{InferenceError, Model, SessionOptions};
use crate::normalize::ScalerSpec;

/// At most this many values per feature, and predictions, go into `reference`: enough for the
/// monitor's drift tests, small enough to keep `bundle.json` readable.
const REFERENCE_MAX: usize = 500;

/// Columns of a reference CSV that are never features unless `--features` names them.
const NOT_FEATURES: [&str; 3] = ["timestamp", "series_id", "id"];

/// What `streamcast models build` was asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub onnx: PathBuf,
    /// The input scaler, as in `bundle.json`: `{"kind": "standard", "mean": [..], "std": [..]}`.
    pub scaler: PathBuf,
    /// The target scaler; by default the input scaler's column for the target feature.
    pub target_scaler: Option<PathBuf>,
    /// Training rows of one series in time order, a column per feature.
    pub reference: PathBuf,
    /// JSON Lines of `{"window": [[..]], "prediction": [..]}` computed by the training framework.
    pub golden: Option<PathBuf>,
    pub root: PathBuf,
    pub name: String,
    /// The version to write; by default one more than the highest numeric version.
    pub version: Option<String>,
    /// Feature columns in model order; by default every reference column but timestamp/series_id/id.
    pub features: Option<Vec<String>>,
    /// The predicted feature; by default the first feature.
    pub target: Option<String>,
    pub window: usize,
    /// By default the model's declared output width.
    pub horizon: Option<usize>,
    /// By default from the model's input rank: 2 is `flat`, 3 is `sequence`.
    pub layout: Option<Layout>,
    pub frequency: Option<std::time::Duration>,
    /// Golden cases computed with ONNX Runtime when `golden` is not given.
    pub golden_count: usize,
    /// The batch validated before the version is published (the worker's `max_batch_size`).
    pub batch_size: usize,
}

/// A published bundle.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub golden: usize,
    /// Whether the golden cases came from the training framework (`--golden`).
    pub framework_golden: bool,
    pub reference_windows: usize,
}

/// Why a bundle could not be built. Every message names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{flag}: {message}")]
    Argument { flag: &'static str, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

fn argument(flag: &'static str, message: impl Into<String>) -> BuildError {
    BuildError::Argument { flag, message: message.into() }
}

/// Builds, validates and publishes the bundle; see the module docs for the order of things.
pub fn build(o: &BuildOptions) -> Result<Built, BuildError> {
    if o.window == 0 {
        return Err(argument("--window", "must be at least 1"));
    }
    // Both become directory names under the root (and must match bundle.schema.json).
    let plain = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !plain(&o.name) {
        return Err(argument(
            "--name",
            "must be a plain name: letters, digits, `.`, `_` and `-`, not starting with a dot",
        ));
    }
    if let Some(v) = o.version.as_deref().filter(|v| !plain(v) || *v == "latest") {
        return Err(argument("--version", format!("`{v}` is not a plain version name (and `latest` is reserved)")));
    }
    let scaler = read_scaler(&o.scaler)?;
    let (columns, rows) = read_reference(&o.reference)?;
    let features = match &o.features {
        Some(f) => f.clone(),
        None => columns.iter().filter(|c| !NOT_FEATURES.contains(&c.as_str())).cloned().collect(),
    };
    let picks: Vec<usize> = features
        .iter()
        .map(|f| {
            columns.iter().position(|c| c == f).ok_or_else(|| {
                argument("--features", format!("`{f}` is not a column of {} ({columns:?})", o.reference.display()))
            })
        })
        .collect::<Result<_, _>>()?;
    let series: Vec<Vec<f64>> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            picks
                .iter()
                .map(|&c| {
                    row[c].trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| BuildError::Read {
                        path: o.reference.clone(),
                        message: format!("row {}: `{}` = {:?} is not a finite number", i + 2, columns[c], row[c]),
                    })
                })
                .collect()
        })
        .collect::<Result<_, _>>()?;
    if series.len() < o.window {
        return Err(argument("--reference", format!("{} rows is fewer than one window of {}", series.len(), o.window)));
    }
    let target = o.target.clone().unwrap_or_else(|| features[0].clone());
    let target_scaler = match &o.target_scaler {
        Some(path) => read_scaler(path)?,
        None => {
            let i = features.iter().position(|f| *f == target).ok_or_else(|| {
                argument("--target-scaler", format!("is needed: the target `{target}` is not an input feature"))
            })?;
            scaler_column(&scaler, i)
                .ok_or_else(|| argument("--scaler", format!("must have one value per feature ({})", features.len())))?
        }
    };

    let (inputs, outputs) = probe(&o.onnx)?;
    let (input, output) = (only("input", &inputs)?, only("output", &outputs)?);
    let in_shape = input.float32_shape.as_ref().ok_or_else(|| {
        argument("--onnx", format!("input `{}` is not a float32 tensor; streamcast feeds float32", input.name))
    })?;
    let layout = match (o.layout, in_shape.len()) {
        (Some(l), _) => l,
        (None, 2) => Layout::Flat,
        (None, 3) => Layout::Sequence,
        (None, r) => {
            return Err(argument(
                "--onnx",
                format!(
                    "input `{}` has rank {r}; streamcast feeds [N, T*F] (flat) or [N, T, F] (sequence)",
                    input.name
                ),
            ))
        }
    };
    let horizon = match o.horizon {
        Some(h) => h,
        None => match output.float32_shape.as_deref() {
            Some([_, h]) if *h > 0 => *h as usize,
            other => {
                return Err(argument(
                    "--horizon",
                    format!("is needed: output `{}` declares shape {other:?}, not [N, horizon]", output.name),
                ))
            }
        },
    };

    let version = match &o.version {
        Some(v) => v.clone(),
        None => next_version(&o.root, &o.name)?,
    };
    let final_dir = o.root.join(&o.name).join(&version);
    if final_dir.exists() {
        return Err(argument(
            "--version",
            format!("{} already exists; versions are never overwritten", final_dir.display()),
        ));
    }
    let staging = o.root.join(&o.name).join(format!(".build-{version}"));
    let write = |path: &Path, source| BuildError::Write { path: path.into(), source };
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| write(&staging, e))?;
    let result = (|| {
        let model_path = staging.join("model.onnx");
        std::fs::copy(&o.onnx, &model_path).map_err(|e| write(&model_path, e))?;
        let mut manifest = Manifest {
            name: o.name.clone(),
            version: version.clone(),
            created_at: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            features: features.clone(),
            window: o.window,
            horizon,
            frequency: o.frequency,
            frequency_tolerance: None,
            quantiles: None,
            input: InputSpec { name: input.name.clone(), layout },
            output: OutputSpec { name: output.name.clone() },
            model_sha256: Some(bundle::file_sha256(&model_path)?),
            scaler,
            target: TargetSpec { name: target, scaler: target_scaler },
            reference: Reference::default(),
            validation: None,
            golden: Vec::new(),
            metadata: Some(
                serde_json::json!({"built_by": "streamcast models build", "source": o.onnx.display().to_string()}),
            ),
        };
        write_manifest(&staging, &manifest)?;

        // Score the reference windows with the staged bundle (signature checked, no golden yet).
        let mut model = Model::load(Bundle::load(&staging)?, SessionOptions::default())?;
        let n_windows = series.len() - o.window + 1;
        let picked = evenly(n_windows, REFERENCE_MAX);
        let raw: Vec<f32> =
            picked.iter().flat_map(|&s| series[s..s + o.window].iter().flatten().map(|v| *v as f32)).collect();
        let mut predicted = Vec::new();
        model.predict(&raw, picked.len(), &mut predicted)?;
        let sampled = evenly(series.len(), REFERENCE_MAX);
        manifest.reference = Reference {
            features: features
                .iter()
                .enumerate()
                .map(|(j, name)| (name.clone(), sampled.iter().map(|&r| series[r][j]).collect()))
                .collect(),
            predictions: predicted.chunks_exact(horizon).map(|p| f64::from(p[0])).collect(),
        };
        manifest.golden = match &o.golden {
            Some(path) => read_golden(path)?,
            None => evenly(picked.len(), o.golden_count)
                .into_iter()
                .map(|k| GoldenCase {
                    window: series[picked[k]..picked[k] + o.window].to_vec(),
                    prediction: predicted[k * horizon..(k + 1) * horizon].iter().map(|v| f64::from(*v)).collect(),
                })
                .collect(),
        };
        write_manifest(&staging, &manifest)?;

        // The checks `models validate` makes, on the final files.
        let mut model = Model::load(Bundle::load(&staging)?, SessionOptions::default())?;
        model.check_batch(o.batch_size)?;
        Ok(Built {
            dir: final_dir.clone(),
            golden: manifest.golden.len(),
            framework_golden: o.golden.is_some(),
            reference_windows: picked.len(),
        })
    })();
    match result {
        Ok(built) => {
            std::fs::rename(&staging, &final_dir).map_err(|e| write(&final_dir, e))?;
            Ok(built)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// One more than the highest numeric version under `root/name`, or "1".
pub fn next_version(root: &Path, name: &str) -> Result<String, BuildError> {
    let versions = match bundle::list_versions(root, name) {
        Ok(v) => v,
        Err(BundleError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let highest = versions.iter().filter_map(|v| v.parse::<u64>().ok()).max().unwrap_or(0);
    Ok((highest + 1).to_string())
}

fn only<'a>(what: &'static str, tensors: &'a [TensorInfo]) -> Result<&'a TensorInfo, BuildError> {
    match tensors {
        [one] => Ok(one),
        _ => Err(argument(
            "--onnx",
            format!(
                "the model has {} {what}s ({}); streamcast feeds one input and reads one output",
                tensors.len(),
                tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// `count` indices spread evenly over `0..n` (all of them when `n <= count`).
fn evenly(n: usize, count: usize) -> Vec<usize> {
    if n <= count {
        return (0..n).collect();
    }
    (0..count).map(|i| i * (n - 1) / (count.max(2) - 1)).collect()
}

fn scaler_column(spec: &ScalerSpec, i: usize) -> Option<ScalerSpec> {
    Some(match spec {
        ScalerSpec::Standard { mean, std } => {
            ScalerSpec::Standard { mean: vec![*mean.get(i)?], std: vec![*std.get(i)?] }
        }
        ScalerSpec::Minmax { min, max } => ScalerSpec::Minmax { min: vec![*min.get(i)?], max: vec![*max.get(i)?] },
    })
}

fn read_text(path: &Path) -> Result<String, BuildError> {
    std::fs::read_to_string(path).map_err(|e| BuildError::Read { path: path.into(), message: e.to_string() })
}

fn read_scaler(path: &Path) -> Result<ScalerSpec, BuildError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| BuildError::Read {
        path: path.into(),
        message: format!(
            "{e}; expected {{\"kind\": \"standard\", \"mean\": [..], \"std\": [..]}} or {{\"kind\": \"minmax\", \"min\": [..], \"max\": [..]}}"
        ),
    })
}

fn read_reference(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), BuildError> {
    let read = |message: String| BuildError::Read { path: path.into(), message };
    let mut reader = csv::Reader::from_path(path).map_err(|e| read(e.to_string()))?;
    let columns = reader.headers().map_err(|e| read(e.to_string()))?.iter().map(str::to_string).collect();
    let rows = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_string).collect()).map_err(|e| read(e.to_string())))
        .collect::<Result<Vec<Vec<String>>, _>>()?;
    Ok((columns, rows))
}

fn read_golden(path: &Path) -> Result<Vec<GoldenCase>, BuildError> {
    read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| BuildError::Read {
                path: path.into(),
                message: format!("line {}: {e}; expected {{\"window\": [[..]], \"prediction\": [..]}}", i + 1),
            })
        })
        .collect()
}

/// Writes `bundle.json` through a temporary name, so a reader never sees half of it.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BuildError> {
    let tmp = dir.join(".bundle.json.tmp");
    let text = serde_json::to_string_pretty(manifest).expect("a manifest always serializes");
    std::fs::write(&tmp, text + "\n").map_err(|source| BuildError::Write { path: tmp.clone(), source })?;
    let path = dir.join("bundle.json");
    std::fs::rename(&tmp, &path).map_err(|source| BuildError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::evenly;

    #[test]
    fn evenly_spreads_and_keeps_both_ends() {
        assert_eq!(evenly(3, 5), vec![0, 1, 2]);
        assert_eq!(evenly(11, 3), vec![0, 5, 10]);
        assert_eq!(evenly(1000, 500).len(), 500);
        assert_eq!(*evenly(1000, 500).last().unwrap(), 999);
    }
}
