//! Model bundles: `models/<name>/<version>/{model.onnx,bundle.json}`.
//!
//! This module resolves versions (`latest` is numeric-aware), keeps paths inside the model root,
//! and checks everything about a bundle that does not need ONNX Runtime. The checks that do
//! (input/output names and shapes, golden cases) live in [`crate::inference::model`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::normalize::{Scaler, ScalerError, ScalerSpec};

/// Why a bundle was refused. Every message names the bundle directory and the problem.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("model directory {0} does not exist")]
    NotFound(PathBuf),
    #[error("model directory {0} holds no versions")]
    NoVersions(PathBuf),
    #[error("{path} is outside the model root {root}")]
    Escapes { path: PathBuf, root: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: field `{field}`: {message}")]
    Manifest { path: PathBuf, field: String, message: String },
    #[error("bundle {dir}: {message}")]
    Invalid { dir: PathBuf, message: String },
    #[error("bundle {dir}: model.onnx has sha256 {actual}, but bundle.json's `model_sha256` says {expected} (a corrupted or half-finished upload?)")]
    Checksum { dir: PathBuf, expected: String, actual: String },
    #[error("bundle {dir}: golden case {case} step {step}: expected {expected}, model gives {got} (tolerance 1e-4)")]
    Golden { dir: PathBuf, case: usize, step: usize, expected: f64, got: f64 },
}

/// How the input tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[N, T·F]`, time-major.
    Flat,
    /// `[N, T, F]`.
    Sequence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub name: String,
    /// One column (applied to every horizon step) or `horizon` columns.
    pub scaler: ScalerSpec,
}

/// A sample of the training distribution, used by the monitor's drift tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    #[serde(default)]
    pub features: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    pub predictions: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationMetrics {
    pub rmse: f64,
    pub mae: f64,
}

/// A raw window with its expected de-normalized prediction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    pub window: Vec<Vec<f64>>,
    pub prediction: Vec<f64>,
}

/// `bundle.json`, as written by the training pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub created_at: Option<String>,
    pub features: Vec<String>,
    pub window: usize,
    pub horizon: usize,
    /// The series' step ("7d", "1h", "15m"): windows then follow event time, not arrival order.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub frequency: Option<std::time::Duration>,
    /// How far a timestamp may sit from its step and still count as it; half a step when absent.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub frequency_tolerance: Option<std::time::Duration>,
    /// The model outputs these quantile levels (strictly increasing, 0.5 among them): its output
    /// is `[N, horizon, Q]`, and the 0.5 quantile is the point forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Vec<f64>>,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Lowercase hex SHA-256 of `model.onnx`. When present, a bundle whose model file differs is
    /// refused: a corrupted or half-finished copy is caught before ONNX Runtime sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    pub scaler: ScalerSpec,
    pub target: TargetSpec,
    #[serde(default)]
    pub reference: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationMetrics>,
    #[serde(default)]
    pub golden: Vec<GoldenCase>,
    /// Free-form metadata from the training pipeline; kept, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Manifest {
    /// Whether `other` scores the same windows as this bundle: the same features, window,
    /// horizon and quantiles. The error names this bundle's shape and `other`'s.
    pub fn check_same_shape(&self, other: &Manifest) -> Result<(), String> {
        if other.features == self.features
            && other.window == self.window
            && other.horizon == self.horizon
            && other.quantiles == self.quantiles
        {
            return Ok(());
        }
        Err(format!(
            "the served model's features {:?}, window {}, horizon {} and quantiles {:?} (this bundle has {:?}, {}, {} and {:?})",
            self.features,
            self.window,
            self.horizon,
            self.quantiles,
            other.features,
            other.window,
            other.horizon,
            other.quantiles
        ))
    }

    /// Values per window the model outputs: `horizon`, times the quantile levels for a quantile
    /// bundle (step-major: step 1's quantiles first).
    pub fn width(&self) -> usize {
        self.horizon * self.quantiles.as_ref().map_or(1, Vec::len)
    }
}

/// A bundle whose manifest passed every static check.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub input_scaler: Scaler,
    pub target_scaler: Scaler,
}

impl Bundle {
    /// Loads and statically validates the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("bundle.json");
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        let manifest = parse_manifest(&path, &text)?;
        let model = dir.join("model.onnx");
        if !model.is_file() {
            return Err(BundleError::Invalid { dir: dir.into(), message: "model.onnx is missing".into() });
        }
        if let Some(expected) = &manifest.model_sha256 {
            if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BundleError::Manifest {
                    path,
                    field: "model_sha256".into(),
                    message: "must be 64 hex digits (the SHA-256 of model.onnx)".into(),
                });
            }
            let actual = file_sha256(&model)?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(BundleError::Checksum { dir: dir.into(), expected: expected.clone(), actual });
            }
        }
        Bundle::from_manifest(dir, manifest)
    }

    fn from_manifest(dir: &Path, m: Manifest) -> Result<Bundle, BundleError> {
        let invalid = |message: String| BundleError::Invalid { dir: dir.into(), message };
        let field = |field: &str, message: String| BundleError::Manifest {
            path: dir.join("bundle.json"),
            field: field.into(),
            message,
        };
        if m.features.is_empty() {
            return Err(field("features", "must list at least one feature".into()));
        }
        for (i, f) in m.features.iter().enumerate() {
            if m.features[..i].contains(f) {
                return Err(field("features", format!("`{f}` is listed twice")));
            }
        }
        if m.window == 0 {
            return Err(field("window", "must be at least 1".into()));
        }
        if m.horizon == 0 {
            return Err(field("horizon", "must be at least 1".into()));
        }
        match (m.frequency, m.frequency_tolerance) {
            (Some(f), _) if f.as_millis() == 0 => {
                return Err(field("frequency", "must be at least 1 ms (for example \"7d\" or \"1h\")".into()));
            }
            (Some(f), Some(t)) if t > f / 2 => {
                return Err(field("frequency_tolerance", format!("must be at most half of `frequency` ({f:?})")));
            }
            (None, Some(_)) => {
                return Err(field("frequency_tolerance", "needs `frequency`".into()));
            }
            _ => {}
        }
        if let Some(q) = &m.quantiles {
            let increasing = q.windows(2).all(|w| w[0] < w[1]);
            if q.is_empty() || !increasing || q.iter().any(|v| !(*v > 0.0 && *v < 1.0)) || !q.contains(&0.5) {
                return Err(field(
                    "quantiles",
                    "must be strictly increasing levels between 0 and 1, 0.5 among them (the point forecast)".into(),
                ));
            }
        }
        if m.input.name.is_empty() || m.output.name.is_empty() {
            return Err(field("input.name/output.name", "must not be empty".into()));
        }
        let input_scaler = Scaler::new(&m.scaler, m.features.len()).map_err(|e| scaler_field("scaler", e, &field))?;
        let target_cols = match &m.target.scaler {
            ScalerSpec::Standard { mean, .. } => mean.len(),
            ScalerSpec::Minmax { min, .. } => min.len(),
        };
        if m.quantiles.is_some() && target_cols != 1 {
            return Err(field("target.scaler", format!("has {target_cols} columns; a quantile bundle takes 1")));
        }
        if target_cols != 1 && target_cols != m.horizon {
            return Err(field(
                "target.scaler",
                format!("has {target_cols} columns; expected 1 or horizon ({})", m.horizon),
            ));
        }
        let target_scaler =
            Scaler::new(&m.target.scaler, target_cols).map_err(|e| scaler_field("target.scaler", e, &field))?;
        for (name, values) in &m.reference.features {
            if !m.features.contains(name) {
                return Err(field("reference.features", format!("`{name}` is not one of the bundle's features")));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(field(&format!("reference.features.{name}"), "holds a non-finite value".into()));
            }
        }
        if m.reference.predictions.iter().any(|v| !v.is_finite()) {
            return Err(field("reference.predictions", "holds a non-finite value".into()));
        }
        for (i, g) in m.golden.iter().enumerate() {
            if g.window.len() != m.window || g.window.iter().any(|row| row.len() != m.features.len()) {
                return Err(field(
                    &format!("golden[{i}].window"),
                    format!("must be {} rows of {} values", m.window, m.features.len()),
                ));
            }
            if g.prediction.len() != m.width() {
                return Err(field(&format!("golden[{i}].prediction"), format!("must hold {} values", m.width())));
            }
            if g.window.iter().flatten().chain(&g.prediction).any(|v| !v.is_finite()) {
                return Err(field(&format!("golden[{i}]"), "holds a non-finite value".into()));
            }
        }
        if m.version.is_empty() {
            return Err(invalid("version is empty".into()));
        }
        Ok(Bundle { dir: dir.to_path_buf(), manifest: m, input_scaler, target_scaler })
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }

    /// Number of raw values in one model input row (`window · features`).
    pub fn input_len(&self) -> usize {
        self.manifest.window * self.manifest.features.len()
    }
}

/// Lowercase hex SHA-256 of a file, read in blocks (a large model is not held twice in memory).
pub fn file_sha256(path: &Path) -> Result<String, BundleError> {
    use sha2::Digest;
    use std::io::Read;
    let io = |source| BundleError::Io { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn scaler_field(name: &str, e: ScalerError, field: &impl Fn(&str, String) -> BundleError) -> BundleError {
    match e {
        ScalerError::NonFinite { field: f, index } => {
            field(&format!("{name}.{f}[{index}]"), "is not a finite number".into())
        }
        other => field(name, other.to_string()),
    }
}

/// Parses `bundle.json`, naming the field at fault.
///
/// Python's `json.dump` writes `NaN` and `Infinity` for non-finite floats, which JSON cannot hold.
/// Instead of a bare syntax error, such tokens are read as `null` so the error names the field
/// that held them.
fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, BundleError> {
    let field_error = |e: serde_path_to_error::Error<serde_json::Error>| BundleError::Manifest {
        path: path.into(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Manifest>(&mut de) {
        Ok(m) => Ok(m),
        Err(e) if e.inner().is_syntax() => {
            let patched = replace_non_finite_tokens(text);
            if patched == text {
                return Err(field_error(e));
            }
            // Name the first field that held a non-finite token.
            match serde_json::from_str::<serde_json::Value>(&patched).ok().and_then(|v| first_null(&v, String::new())) {
                Some(field) => Err(BundleError::Manifest {
                    path: path.into(),
                    field,
                    message: "is not a finite number (NaN or Infinity)".into(),
                }),
                None => Err(field_error(e)),
            }
        }
        Err(e) => Err(field_error(e)),
    }
}

/// The dotted path of the first `null` in `v`, such as `scaler.std[1]`.
fn first_null(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::Null => Some(at),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, x)| first_null(x, format!("{at}[{i}]")))
        }
        serde_json::Value::Object(map) => {
            map.iter().find_map(|(k, x)| first_null(x, if at.is_empty() { k.clone() } else { format!("{at}.{k}") }))
        }
        _ => None,
    }
}

/// Replaces bare `NaN`, `Infinity` and `-Infinity` tokens outside strings with `null`.
fn replace_non_finite_tokens(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else {
            let rest = &text[i..];
            if let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t)) {
                out.push_str("null");
                i += token.len();
                continue;
            }
        }
        let ch = text[i..].chars().next().expect("index is on a char boundary: we only skip ASCII");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Compares version strings numerically where both have digits: `9 < 10`, `1.9 < 1.10`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().position(|c| *c != b'0').unwrap_or(d.len());
    &d[start..]
}

/// Lists the version directories of `root/name`, in ascending version order.
pub fn list_versions(root: &Path, name: &str) -> Result<Vec<String>, BundleError> {
    let dir = root.join(name);
    let entries = std::fs::read_dir(&dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BundleError::NotFound(dir.clone())
        } else {
            BundleError::Io { path: dir.clone(), source }
        }
    })?;
    let mut versions: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|v| !v.starts_with('.'))
        .collect();
    versions.sort_by(|a, b| compare_versions(a, b));
    Ok(versions)
}

/// Lists the bundle names under `root`.
pub fn list_models(root: &Path) -> Result<Vec<String>, BundleError> {
    let entries = std::fs::read_dir(root).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BundleError::NotFound(root.into())
        } else {
            BundleError::Io { path: root.into(), source }
        }
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|v| !v.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Resolves `root/name/version` (`latest` = highest) to a directory that stays inside `root`.
pub fn resolve(root: &Path, name: &str, version: &str) -> Result<PathBuf, BundleError> {
    let version = if version == "latest" {
        list_versions(root, name)?.pop().ok_or_else(|| BundleError::NoVersions(root.join(name)))?
    } else {
        version.to_string()
    };
    let dir = root.join(name).join(&version);
    if !dir.is_dir() {
        return Err(BundleError::NotFound(dir));
    }
    let canon_root = root.canonicalize().map_err(|source| BundleError::Io { path: root.into(), source })?;
    let canon = dir.canonicalize().map_err(|source| BundleError::Io { path: dir.clone(), source })?;
    if !canon.starts_with(&canon_root) {
        return Err(BundleError::Escapes { path: dir, root: root.into() });
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_and_its_tolerance_are_checked() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/co2-gru/1");
        let text = std::fs::read_to_string(shipped.join("bundle.json")).unwrap();
        let load = |extra: &str| {
            let dir = tempfile::tempdir().unwrap();
            let edited = text.replacen('{', &format!("{{{extra}"), 1);
            std::fs::write(dir.path().join("bundle.json"), edited).unwrap();
            std::fs::copy(shipped.join("model.onnx"), dir.path().join("model.onnx")).unwrap();
            Bundle::load(dir.path())
                .map(|b| (b.manifest.frequency, b.manifest.frequency_tolerance))
                .map_err(|e| e.to_string())
        };
        let week = std::time::Duration::from_secs(7 * 86_400);
        assert_eq!(load(r#""frequency": "7d","#), Ok((Some(week), None)));
        assert!(load(r#""frequency": "7d", "frequency_tolerance": "4d","#)
            .unwrap_err()
            .contains("frequency_tolerance"));
        assert!(load(r#""frequency_tolerance": "1d","#).unwrap_err().contains("needs `frequency`"));
        assert!(load(r#""frequency": "weekly","#).is_err());
    }

    #[test]
    fn versions_order_numerically() {
        let mut v = vec!["10", "9", "1.10", "1.9", "2", "v3", "v12"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, vec!["1.9", "1.10", "2", "9", "10", "v3", "v12"]);
        assert_eq!(compare_versions("007", "7"), Ordering::Equal);
    }

    #[test]
    fn non_finite_tokens_outside_strings_become_null() {
        let t = r#"{"a": NaN, "b": "NaN", "c": [-Infinity, Infinity], "d": "x\"NaN"}"#;
        assert_eq!(replace_non_finite_tokens(t), r#"{"a": null, "b": "NaN", "c": [null, null], "d": "x\"NaN"}"#);
    }

    #[test]
    fn latest_resolves_to_highest_and_paths_stay_inside_root() {
        let root = tempfile::tempdir().unwrap();
        for v in ["2", "10", "9"] {
            std::fs::create_dir_all(root.path().join("m").join(v)).unwrap();
        }
        assert!(resolve(root.path(), "m", "latest").unwrap().ends_with("m/10"));
        assert!(resolve(root.path(), "m", "9").unwrap().ends_with("m/9"));
        assert!(matches!(resolve(root.path(), "m", "3"), Err(BundleError::NotFound(_))));
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("m").join("11")).unwrap();
        assert!(matches!(resolve(root.path(), "m", "11"), Err(BundleError::Escapes { .. })));
    }
}
