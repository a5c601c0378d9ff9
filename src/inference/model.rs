//! A loaded, validated model: one ONNX Runtime session plus its bundle's scalers.
//!
//! `Session::run` takes `&mut self`, so a [`Model`] belongs to exactly one thread: the inference
//! thread of a worker, a `streamcast predict` run, or a validation.

use std::sync::Arc;
use std::time::Instant;

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::{runtime, InferenceError};
use crate::bundle::{Bundle, BundleError, Layout};
use crate::config::ExecutionProviderChoice;
use crate::event::ModelRef;

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Cpu,
    Cuda,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }
}

/// How a session ended up on its provider; `fallback_reason` is set when CUDA was wanted but
/// could not be used.
#[derive(Debug, Clone)]
pub struct ProviderReport {
    pub provider: Provider,
    pub fallback_reason: Option<String>,
}

/// Session options that are not part of the bundle.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    pub provider: ExecutionProviderChoice,
    pub intra_threads: usize,
}

impl From<&crate::config::ModelConfig> for SessionOptions {
    fn from(m: &crate::config::ModelConfig) -> Self {
        SessionOptions { provider: m.execution_provider, intra_threads: m.intra_threads }
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { provider: ExecutionProviderChoice::Cpu, intra_threads: 1 }
    }
}

/// A bundle with its ONNX Runtime session, ready to score windows.
pub struct Model {
    bundle: Arc<Bundle>,
    model_ref: ModelRef,
    session: Session,
    provider: ProviderReport,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("model", &self.model_ref).field("provider", &self.provider).finish()
    }
}

impl Model {
    /// Creates the session, checks the model's signature against the bundle, and runs every golden
    /// case. A bundle that fails any check is refused with a message naming the problem.
    pub fn load(bundle: Bundle, options: SessionOptions) -> Result<Model, InferenceError> {
        let (session, provider) = build_session(&bundle, options)?;
        let model_ref = ModelRef { name: bundle.manifest.name.clone(), version: bundle.manifest.version.clone() };
        let mut model = Model { bundle: Arc::new(bundle), model_ref, session, provider, scratch: Vec::new() };
        model.check_signature()?;
        model.check_golden()?;
        Ok(model)
    }

    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    pub fn model_ref(&self) -> &ModelRef {
        &self.model_ref
    }

    pub fn provider(&self) -> &ProviderReport {
        &self.provider
    }

    pub fn horizon(&self) -> usize {
        self.bundle.manifest.horizon
    }

    /// Values per window in [`Model::predict`]'s output: the horizon, times the quantile levels
    /// of a quantile bundle.
    pub fn width(&self) -> usize {
        self.bundle.manifest.width()
    }

    /// A quantile bundle's levels.
    pub fn quantiles(&self) -> Option<&[f64]> {
        self.bundle.manifest.quantiles.as_deref()
    }

    /// Scores `n` raw windows (`n · T · F` values, each window time-major) and writes `n · H`
    /// de-normalized predictions to `out` (cleared first); a quantile bundle writes `n · H · Q`,
    /// each step's quantiles in increasing order. A non-finite prediction fails the call.
    pub fn predict(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        self.predict_rows(raw, n, out)?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(InferenceError::NonFinite);
        }
        Ok(())
    }

    /// Like [`Model::predict`], but leaves non-finite predictions in `out` for the caller to
    /// judge row by row (the streaming path fails only the rows they belong to).
    pub fn predict_rows(&mut self, raw: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let m = &self.bundle.manifest;
        let (t, f, h) = (m.window, m.features.len(), m.width());
        if raw.len() != n * t * f {
            return Err(InferenceError::Shape(format!("{} input values for {n} windows of {t}x{f}", raw.len())));
        }
        out.clear();
        if n == 0 {
            return Ok(());
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(raw);
        self.bundle.input_scaler.normalize(&mut self.scratch);
        let tensor = match m.input.layout {
            Layout::Flat => TensorRef::from_array_view(([n, t * f], &*self.scratch)),
            Layout::Sequence => TensorRef::from_array_view(([n, t, f], &*self.scratch)),
        }
        .map_err(|e| InferenceError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![m.input.name.as_str() => tensor])
            .map_err(|e| InferenceError::Run(e.to_string()))?;
        let value = outputs
            .get(&m.output.name)
            .ok_or_else(|| InferenceError::Shape(format!("output `{}` missing from the run", m.output.name)))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| InferenceError::Run(e.to_string()))?;
        if data.len() != n * h || shape.first().copied() != Some(n as i64) {
            let want = match &m.quantiles {
                Some(q) => format!("[{n}, {}, {}]", m.horizon, q.len()),
                None => format!("[{n}, {h}]"),
            };
            return Err(InferenceError::Shape(format!("output shape {shape:?}; expected {want}")));
        }
        out.extend_from_slice(data);
        self.bundle.target_scaler.denormalize(out);
        if let Some(q) = &m.quantiles {
            rearrange(out, q.len());
        }
        Ok(())
    }

    fn check_signature(&self) -> Result<(), InferenceError> {
        let m = &self.bundle.manifest;
        let invalid =
            |message: String| InferenceError::Bundle(BundleError::Invalid { dir: self.bundle.dir.clone(), message });
        let names = |outlets: &[ort::value::Outlet]| {
            outlets.iter().map(|o| o.name().to_string()).collect::<Vec<_>>().join(", ")
        };
        let input = self.session.inputs().iter().find(|o| o.name() == m.input.name).ok_or_else(|| {
            invalid(format!("model has no input `{}` (its inputs: {})", m.input.name, names(self.session.inputs())))
        })?;
        let output = self.session.outputs().iter().find(|o| o.name() == m.output.name).ok_or_else(|| {
            invalid(format!("model has no output `{}` (its outputs: {})", m.output.name, names(self.session.outputs())))
        })?;
        let (t, f, h) = (m.window as i64, m.features.len() as i64, m.horizon as i64);
        let want_in: Vec<i64> = match m.input.layout {
            Layout::Flat => vec![-1, t * f],
            Layout::Sequence => vec![-1, t, f],
        };
        check_tensor("input", input.dtype(), &want_in).map_err(invalid)?;
        let want_out: Vec<i64> = match &m.quantiles {
            Some(q) => vec![-1, h, q.len() as i64],
            None => vec![-1, h],
        };
        check_tensor("output", output.dtype(), &want_out).map_err(invalid)?;
        Ok(())
    }

    /// Scores one batch of `n` windows, the golden windows repeated in turn, and checks every
    /// row against its golden prediction: a batch axis that is fixed, or rows that influence
    /// each other, show up here rather than in the worker's first full batch. Without golden
    /// cases the batch still has to run and give `n` finite rows.
    pub fn check_batch(&mut self, n: usize) -> Result<(), InferenceError> {
        let m = &self.bundle.manifest;
        let rows: Vec<(Vec<f32>, Option<Vec<f64>>)> = if m.golden.is_empty() {
            vec![(vec![0.0; self.bundle.input_len()], None)]
        } else {
            m.golden
                .iter()
                .map(|g| (g.window.iter().flatten().map(|v| *v as f32).collect(), Some(g.prediction.clone())))
                .collect()
        };
        let raw: Vec<f32> = (0..n).flat_map(|i| rows[i % rows.len()].0.iter().copied()).collect();
        let mut out = Vec::new();
        self.predict(&raw, n, &mut out).map_err(|e| match e {
            InferenceError::Run(message) => InferenceError::Bundle(BundleError::Invalid {
                dir: self.bundle.dir.clone(),
                message: format!(
                    "a batch of {n} windows failed ({message}); export the model with a dynamic batch axis \
                     ({FIX_BATCH_AXIS})"
                ),
            }),
            other => other,
        })?;
        let width = self.width();
        for (i, got) in out.chunks_exact(width).enumerate() {
            let Some(expected) = &rows[i % rows.len()].1 else { continue };
            for (step, (got, expected)) in got.iter().zip(expected).enumerate() {
                let got = f64::from(*got);
                if (got - expected).abs() > 1e-4 * expected.abs().max(1.0) {
                    return Err(InferenceError::Bundle(BundleError::Invalid {
                        dir: self.bundle.dir.clone(),
                        message: format!(
                            "in a batch of {n}, row {i} (golden case {}) step {step} gives {got}, alone it gives \
                             {expected}: the model's rows are not independent of the batch",
                            i % rows.len()
                        ),
                    }));
                }
            }
        }
        Ok(())
    }

    fn check_golden(&mut self) -> Result<(), InferenceError> {
        let cases = self.bundle.manifest.golden.clone();
        let mut out = Vec::new();
        for (case, g) in cases.iter().enumerate() {
            let raw: Vec<f32> = g.window.iter().flatten().map(|v| *v as f32).collect();
            self.predict(&raw, 1, &mut out)?;
            for (step, (got, expected)) in out.iter().zip(&g.prediction).enumerate() {
                let got = f64::from(*got);
                if (got - expected).abs() > 1e-4 * expected.abs().max(1.0) {
                    return Err(InferenceError::Bundle(BundleError::Golden {
                        dir: self.bundle.dir.clone(),
                        case,
                        step,
                        expected: *expected,
                        got,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Runs one batch of `n` copies of the first golden window (or zeros), so the first real batch
    /// does not pay for lazy initialization. Returns how long it took.
    pub fn warm_up(&mut self, n: usize) -> Result<std::time::Duration, InferenceError> {
        let m = &self.bundle.manifest;
        let row: Vec<f32> = match m.golden.first() {
            Some(g) => g.window.iter().flatten().map(|v| *v as f32).collect(),
            None => vec![0.0; self.bundle.input_len()],
        };
        let raw: Vec<f32> = row.iter().copied().cycle().take(row.len() * n).collect();
        let start = Instant::now();
        let mut out = Vec::new();
        self.predict(&raw, n, &mut out)?;
        Ok(start.elapsed())
    }
}

/// One declared tensor of an ONNX model: its name and shape (`-1` for a dynamic axis), or no
/// shape when it is not a float32 tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub float32_shape: Option<Vec<i64>>,
}

/// The declared inputs and outputs of an ONNX file, read by ONNX Runtime without a bundle:
/// `streamcast models build` infers a bundle's layout and horizon from them.
pub fn probe(path: &std::path::Path) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>), InferenceError> {
    let env = runtime::environment()?;
    let session = Session::builder(env)
        .and_then(|mut b| b.commit_from_file(path))
        .map_err(|e| InferenceError::Runtime(format!("ONNX Runtime refused {}: {e}", path.display())))?;
    let info = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| TensorInfo {
                name: o.name().to_string(),
                float32_shape: match o.dtype() {
                    ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Some(shape.to_vec()),
                    _ => None,
                },
            })
            .collect()
    };
    Ok((info(session.inputs()), info(session.outputs())))
}

/// Sorts each step's `q` quantile values: separately fitted quantiles can cross, and sorting is
/// the monotone rearrangement (Chernozhukov, Fernández-Val and Galichon, 2010), which never
/// increases the pinball loss.
fn rearrange(values: &mut [f32], q: usize) {
    for step in values.chunks_exact_mut(q.max(1)) {
        step.sort_unstable_by(f32::total_cmp);
    }
}

/// How to export a model whose first axis is the batch, for the messages that ask for one.
const FIX_BATCH_AXIS: &str =
    "PyTorch: torch.onnx.export(..., dynamic_axes={\"input\": {0: \"batch\"}, \"output\": {0: \
                              \"batch\"}}); skl2onnx: initial_types=[(\"input\", FloatTensorType([None, n]))]";

/// Checks a declared tensor: float32, the expected rank, and each fixed dimension (`-1` in
/// `want` or in the model means dynamic).
fn check_tensor(what: &str, ty: &ValueType, want: &[i64]) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = ty else {
        return Err(format!("{what} is not a tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!(
            "{what} has element type {ty:?}; streamcast needs float32 (skl2onnx: FloatTensorType, not \
             DoubleTensorType; PyTorch: call module.float() and export with a float32 example)"
        ));
    }
    let dims: &[i64] = shape;
    if dims.len() != want.len() {
        return Err(format!(
            "{what} has shape {dims:?} (rank {}); the bundle implies {want:?}, rank {} (-1 = any; layout `flat` is \
             [N, window*features], `sequence` is [N, window, features], and outputs are [N, horizon])",
            dims.len(),
            want.len()
        ));
    }
    if dims[0] >= 0 {
        return Err(format!(
            "{what} has a fixed batch dimension {} (shape {dims:?}); the worker scores batches of any size, so \
             export the model with a dynamic batch axis ({FIX_BATCH_AXIS})",
            dims[0]
        ));
    }
    for (d, w) in dims.iter().zip(want) {
        if *w >= 0 && *d >= 0 && d != w {
            return Err(format!("{what} has shape {dims:?}; the bundle implies {want:?} (-1 = any)"));
        }
    }
    Ok(())
}

fn build_session(bundle: &Bundle, options: SessionOptions) -> Result<(Session, ProviderReport), InferenceError> {
    let env = runtime::environment()?;
    let path = bundle.model_path();
    let base = || -> Result<ort::session::builder::SessionBuilder, InferenceError> {
        Session::builder(env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3).map_err(Into::into))
            .and_then(|b| b.with_intra_threads(options.intra_threads).map_err(Into::into))
            .map_err(|e| InferenceError::Runtime(e.to_string()))
    };
    let commit = |mut builder: ort::session::builder::SessionBuilder| {
        builder.commit_from_file(&path).map_err(|e| {
            InferenceError::Bundle(BundleError::Invalid {
                dir: bundle.dir.clone(),
                message: format!("ONNX Runtime refused model.onnx: {e}"),
            })
        })
    };
    let cpu = |fallback_reason: Option<String>| -> Result<(Session, ProviderReport), InferenceError> {
        Ok((commit(base()?)?, ProviderReport { provider: Provider::Cpu, fallback_reason }))
    };
    match options.provider {
        ExecutionProviderChoice::Cpu => cpu(None),
        choice => match try_cuda(base()?) {
            Ok(builder) => Ok((commit(builder)?, ProviderReport { provider: Provider::Cuda, fallback_reason: None })),
            Err(reason) if choice == ExecutionProviderChoice::Auto => {
                tracing::warn!(%reason, model = %bundle.dir.display(), "CUDA execution provider unavailable; FALLING BACK TO CPU.");
                cpu(Some(reason))
            }
            Err(reason) => Err(InferenceError::Cuda(reason)),
        },
    }
}

fn try_cuda(builder: ort::session::builder::SessionBuilder) -> Result<ort::session::builder::SessionBuilder, String> {
    match ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err("this ONNX Runtime build has no CUDA execution provider (the CPU `onnxruntime` wheel is \
                        installed; `make ort-gpu` installs `onnxruntime-gpu`)"
                .into())
        }
        Err(e) => return Err(format!("cannot list ONNX Runtime execution providers: {e}")),
    }
    builder
        // TF32 matmuls (ONNX Runtime's CUDA default) round inputs to 10-bit mantissas: enough to
        // break the bundle's 1e-4 golden check and agreement with CPU; small forecasting models
        // gain little from it.
        .with_execution_providers([ep::CUDA::default().with_tf32(false).build().error_on_failure()])
        .map_err(|e| format!("registering the CUDA execution provider failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::rearrange;

    #[test]
    fn crossed_quantiles_are_rearranged_step_by_step() {
        // Two steps of levels (0.05, 0.5, 0.95); the first crosses, the second does not.
        let mut values = [5.0, 3.0, 4.0, 1.0, 2.0, 3.0];
        rearrange(&mut values, 3);
        assert_eq!(values, [3.0, 4.0, 5.0, 1.0, 2.0, 3.0]);
        // The pinball loss of the rearranged step never exceeds the crossed one's.
        let pinball = |q: &[f32], y: f32| -> f32 {
            [0.05f32, 0.5, 0.95].iter().zip(q).map(|(t, q)| (t * (y - q)).max((t - 1.0) * (y - q))).sum()
        };
        for y in [2.0, 3.5, 4.5, 6.0] {
            assert!(pinball(&values[..3], y) <= pinball(&[5.0, 3.0, 4.0], y) + 1e-6, "y = {y}");
        }
    }
}
