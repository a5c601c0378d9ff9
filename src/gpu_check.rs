//! `streamcast models gpu-check`: CUDA against CPU on every bundle under a model root, through the
//! worker's own [`Model::load`] and [`Model::predict`].
//!
//! For each bundle it scores the same deterministic pseudo-random windows on both providers at
//! every batch size, reports the largest absolute difference of the de-normalized predictions
//! (the check passes within [`TOLERANCE`]), times each batch size (median of several repetitions
//! after a warm-up, the two providers interleaved so drift hits both alike) and names the
//! crossover: the smallest batch size from which CUDA is faster per batch than CPU.
//!
//! CUDA is tried first, on the first bundle, so a machine without it fails at once with
//! [`GpuCheckError::CudaUnavailable`] instead of after the CPU timings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bundle::{self, Bundle, BundleError};
use crate::config::ExecutionProviderChoice;
use crate::inference::{runtime, InferenceError, Model, SessionOptions};
use crate::normalize::ScalerSpec;

/// Largest accepted |CUDA - CPU| per prediction, in the target's own units.
pub const TOLERANCE: f64 = 1e-4;

/// Batch sizes timed when none are given.
pub const DEFAULT_BATCH_SIZES: [usize; 7] = [1, 8, 32, 128, 512, 2048, 8192];

/// Seed of the input windows: every run scores the same windows.
const SEED: u64 = 0x5eed_6c0d_e0f5_7c47;

/// Unmeasured runs per batch size and provider before timing (lazy allocation, kernel choice).
const WARM_UP_RUNS: usize = 3;

/// What to check.
#[derive(Debug, Clone)]
pub struct GpuCheckOptions {
    /// Model root; every version of every bundle under it is checked.
    pub root: PathBuf,
    /// Batch sizes timed (and compared); sorted and deduplicated by [`run`].
    pub batch_sizes: Vec<usize>,
    /// Timed repetitions per batch size and provider; the median is reported.
    pub repeats: usize,
    /// ONNX Runtime intra-op threads per session, as `model.intra_threads` in the worker.
    pub intra_threads: usize,
}

/// Why the check could not run or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum GpuCheckError {
    /// The CUDA execution provider cannot be had (no GPU build, no CUDA libraries, no GPU).
    #[error(
        "the GPU check needs ONNX Runtime's CUDA execution provider: run `make gpu-check` on a machine with an \
         NVIDIA GPU (it installs onnxruntime-gpu and its CUDA libraries with `make ort-gpu` and sets \
         ORT_DYLIB_PATH and LD_LIBRARY_PATH)"
    )]
    CudaUnavailable(#[source] InferenceError),
    #[error("no bundles under {}", .0.display())]
    NoBundles(PathBuf),
    #[error("cannot list the bundles")]
    List(#[source] BundleError),
    #[error("cannot load {} on {provider}", dir.display())]
    Load {
        dir: PathBuf,
        provider: &'static str,
        #[source]
        source: InferenceError,
    },
    #[error("scoring {batch} windows with {} on {provider} failed", dir.display())]
    Predict {
        dir: PathBuf,
        provider: &'static str,
        batch: usize,
        #[source]
        source: InferenceError,
    },
    /// Predictions differ by more than [`TOLERANCE`]; the report was still produced.
    #[error(
        "CUDA and CPU predictions differ by more than {TOLERANCE:e}: {} (the worker turns TF32 off; a \
         difference this large points at the CUDA kernels or the bundle)",
        .0.join(", ")
    )]
    Mismatch(Vec<String>),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole check, as printed and as written with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `nvidia-smi`'s name of the first GPU, when `nvidia-smi` is there.
    pub gpu: Option<String>,
    /// The ONNX Runtime library used for both providers.
    pub ort_library: Option<PathBuf>,
    /// Its version, from the file name (`libonnxruntime.so.1.31.1`).
    pub ort_version: Option<String>,
    /// ONNX Runtime's build string (branch, commit, flags).
    pub ort_build: String,
    pub tolerance: f64,
    pub intra_threads: usize,
    pub repeats: usize,
    pub bundles: Vec<BundleReport>,
}

/// One bundle's agreement and timings.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    /// Windows compared (the largest batch size: every smaller batch is a prefix of it).
    pub windows: usize,
    /// Largest |CUDA - CPU| over every prediction at every batch size, in target units.
    pub max_abs_diff: f64,
    pub passed: bool,
    pub timings: Vec<Timing>,
    /// Smallest batch size from which CUDA is faster per batch than CPU; `None` if none in range.
    pub crossover: Option<usize>,
}

/// Median time of one batch on each provider.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub batch_size: usize,
    pub cpu_ms: f64,
    pub cuda_ms: f64,
    pub cpu_us_per_row: f64,
    pub cuda_us_per_row: f64,
    /// Largest |CUDA - CPU| at this batch size.
    pub max_abs_diff: f64,
}

impl Timing {
    fn new(batch_size: usize, cpu: Duration, cuda: Duration, max_abs_diff: f64) -> Timing {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let per_row = |d: Duration| d.as_secs_f64() * 1e6 / batch_size as f64;
        Timing {
            batch_size,
            cpu_ms: ms(cpu),
            cuda_ms: ms(cuda),
            cpu_us_per_row: per_row(cpu),
            cuda_us_per_row: per_row(cuda),
            max_abs_diff,
        }
    }
}

/// Runs the check on every bundle under `options.root`. `progress` is told which bundle is next.
///
/// Predictions that differ do not stop the run: they show in the report, and
/// [`Report::verdict`] turns them into [`GpuCheckError::Mismatch`].
pub fn run(options: &GpuCheckOptions, mut progress: impl FnMut(&Path)) -> Result<Report, GpuCheckError> {
    let mut batch_sizes = options.batch_sizes.clone();
    batch_sizes.retain(|b| *b > 0);
    batch_sizes.sort_unstable();
    batch_sizes.dedup();
    let dirs = bundle_dirs(&options.root)?;
    if dirs.is_empty() || batch_sizes.is_empty() {
        return Err(GpuCheckError::NoBundles(options.root.clone()));
    }
    let session = |provider| SessionOptions { provider, intra_threads: options.intra_threads.max(1) };
    let repeats = options.repeats.max(1);
    let mut bundles = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        progress(dir);
        // CUDA first: without it nothing else is worth measuring.
        let mut cuda = load(dir, session(ExecutionProviderChoice::Cuda))?;
        let mut cpu = load(dir, session(ExecutionProviderChoice::Cpu))?;
        bundles.push(check_bundle(dir, &mut cpu, &mut cuda, &batch_sizes, repeats)?);
    }
    let ort_library = runtime::locate_library();
    Ok(Report {
        gpu: gpu_name(),
        ort_version: ort_library.as_deref().and_then(library_version),
        ort_library,
        // The library is loaded by now (the sessions above), which `ort::info` needs.
        ort_build: ort::info().to_string(),
        tolerance: TOLERANCE,
        intra_threads: options.intra_threads.max(1),
        repeats,
        bundles,
    })
}

impl Report {
    /// `Err(Mismatch)` naming each bundle whose CUDA predictions are off by more than the tolerance.
    pub fn verdict(&self) -> Result<(), GpuCheckError> {
        let failed: Vec<String> = self
            .bundles
            .iter()
            .filter(|b| !b.passed)
            .map(|b| format!("{} version {} (max {:.3e})", b.name, b.version, b.max_abs_diff))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(GpuCheckError::Mismatch(failed))
        }
    }

    /// Writes the report as pretty-printed JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), GpuCheckError> {
        let write_error = |source| GpuCheckError::Write { path: path.to_path_buf(), source };
        let text = serde_json::to_vec_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        std::fs::write(path, text).map_err(write_error)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "GPU:          {}", self.gpu.as_deref().unwrap_or("unknown (no nvidia-smi)"))?;
        let library = self.ort_library.as_ref().map(|p| p.display().to_string());
        let version = self.ort_version.as_deref().unwrap_or("version unknown");
        writeln!(f, "ONNX Runtime: {version}, {}", library.as_deref().unwrap_or("?"))?;
        writeln!(f, "              {}", self.ort_build.trim())?;
        writeln!(
            f,
            "Timing:       median of {} runs per point after {WARM_UP_RUNS} warm-up runs; {} intra-op thread(s)",
            self.repeats, self.intra_threads
        )?;
        for b in &self.bundles {
            writeln!(f)?;
            writeln!(
                f,
                "{} version {} ({}): max |cuda - cpu| = {:.3e} over {} windows, {}",
                b.name,
                b.version,
                b.dir.display(),
                b.max_abs_diff,
                b.windows,
                if b.passed {
                    format!("ok (<= {:e})", self.tolerance)
                } else {
                    format!("FAIL (> {:e})", self.tolerance)
                }
            )?;
            writeln!(
                f,
                "  {:>6}  {:>10}  {:>10}  {:>12}  {:>12}  {:>10}",
                "batch", "cpu ms", "cuda ms", "cpu µs/row", "cuda µs/row", "max diff"
            )?;
            for t in &b.timings {
                writeln!(
                    f,
                    "  {:>6}  {:>10.3}  {:>10.3}  {:>12.2}  {:>12.2}  {:>10.2e}",
                    t.batch_size, t.cpu_ms, t.cuda_ms, t.cpu_us_per_row, t.cuda_us_per_row, t.max_abs_diff
                )?;
            }
            match b.crossover {
                Some(n) => writeln!(f, "  crossover: {n} (CUDA is faster per batch from {n} windows up)")?,
                None => writeln!(f, "  crossover: none in range (CPU is as fast or faster at the largest batch)")?,
            }
        }
        Ok(())
    }
}

fn bundle_dirs(root: &Path) -> Result<Vec<PathBuf>, GpuCheckError> {
    let mut dirs = Vec::new();
    for name in bundle::list_models(root).map_err(GpuCheckError::List)? {
        for version in bundle::list_versions(root, &name).map_err(GpuCheckError::List)? {
            let dir = root.join(&name).join(version);
            if dir.join("bundle.json").is_file() {
                dirs.push(dir);
            }
        }
    }
    Ok(dirs)
}

fn load(dir: &Path, options: SessionOptions) -> Result<Model, GpuCheckError> {
    let provider = match options.provider {
        ExecutionProviderChoice::Cuda => "cuda",
        _ => "cpu",
    };
    let load_error = |source| GpuCheckError::Load { dir: dir.to_path_buf(), provider, source };
    let bundle = Bundle::load(dir).map_err(|e| load_error(InferenceError::Bundle(e)))?;
    Model::load(bundle, options).map_err(|e| match e {
        InferenceError::Cuda(_) => GpuCheckError::CudaUnavailable(e),
        e => load_error(e),
    })
}

fn check_bundle(
    dir: &Path,
    cpu: &mut Model,
    cuda: &mut Model,
    batch_sizes: &[usize],
    repeats: usize,
) -> Result<BundleReport, GpuCheckError> {
    let b = cpu.bundle().clone();
    let m = &b.manifest;
    let row = b.input_len();
    let windows = *batch_sizes.last().expect("run() refuses an empty list of batch sizes");
    let pool = random_windows(&m.scaler, m.window, windows, SEED);
    let (mut cpu_out, mut cuda_out) = (Vec::new(), Vec::new());
    let mut timings = Vec::with_capacity(batch_sizes.len());
    for &n in batch_sizes {
        let raw = &pool[..n * row];
        let predict_error =
            |provider, source| GpuCheckError::Predict { dir: dir.to_path_buf(), provider, batch: n, source };
        let score =
            |model: &mut Model, out: &mut Vec<f32>, provider: &'static str| -> Result<Duration, GpuCheckError> {
                let start = Instant::now();
                model.predict(raw, n, out).map_err(|e| predict_error(provider, e))?;
                Ok(start.elapsed())
            };
        for _ in 0..WARM_UP_RUNS {
            score(cpu, &mut cpu_out, "cpu")?;
            score(cuda, &mut cuda_out, "cuda")?;
        }
        let max_abs_diff = max_abs_diff(&cpu_out, &cuda_out);
        let (mut cpu_times, mut cuda_times) = (Vec::with_capacity(repeats), Vec::with_capacity(repeats));
        for _ in 0..repeats {
            cpu_times.push(score(cpu, &mut cpu_out, "cpu")?);
            cuda_times.push(score(cuda, &mut cuda_out, "cuda")?);
        }
        timings.push(Timing::new(n, median(&mut cpu_times), median(&mut cuda_times), max_abs_diff));
    }
    let max_abs_diff = timings.iter().map(|t| t.max_abs_diff).fold(0.0, f64::max);
    Ok(BundleReport {
        name: m.name.clone(),
        version: m.version.clone(),
        dir: dir.to_path_buf(),
        windows,
        max_abs_diff,
        passed: max_abs_diff <= TOLERANCE,
        crossover: crossover(&timings),
        timings,
    })
}

/// Largest |a - b| over two equally long prediction vectors (`inf` if their lengths differ).
fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()).fold(0.0, f64::max)
}

/// The smallest batch size from which CUDA is faster per batch than CPU at that size and at
/// every larger one measured; `None` when CUDA is not faster at the largest.
pub fn crossover(timings: &[Timing]) -> Option<usize> {
    let mut sorted: Vec<&Timing> = timings.iter().collect();
    sorted.sort_by_key(|t| t.batch_size);
    let mut from = None;
    for t in sorted.iter().rev() {
        if t.cuda_ms < t.cpu_ms {
            from = Some(t.batch_size);
        } else {
            break;
        }
    }
    from
}

/// Median of `times` (sorted in place); zero for none.
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    match times.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    }
}

/// `n` raw windows of `window` steps, each value drawn uniformly from `center ± 2 · spread` of its
/// feature: mean and std for a standard scaler, the midpoint and half the range for a min-max one.
/// The same seed gives the same windows, time-major like [`Model::predict`] expects.
pub fn random_windows(scaler: &ScalerSpec, window: usize, n: usize, seed: u64) -> Vec<f32> {
    let (center, spread): (Vec<f64>, Vec<f64>) = match scaler {
        ScalerSpec::Standard { mean, std } => (mean.clone(), std.clone()),
        ScalerSpec::Minmax { min, max } => {
            min.iter().zip(max).map(|(lo, hi)| ((lo + hi) / 2.0, (hi - lo) / 2.0)).unzip()
        }
    };
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(n * window * center.len());
    for _ in 0..n * window {
        for (c, s) in center.iter().zip(&spread) {
            out.push((c + s * rng.uniform(-2.0, 2.0)) as f32);
        }
    }
    out
}

/// SplitMix64: tiny, seedable and good enough for test inputs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

/// `1.31.1` from `.../libonnxruntime.so.1.31.1`.
fn library_version(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let version = name.split_once(".so.")?.1;
    version.split('.').all(|p| p.parse::<u32>().is_ok()).then(|| version.to_string())
}

/// The first GPU's name from `nvidia-smi`, if it is installed and answers.
fn gpu_name() -> Option<String> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(batch_size: usize, cpu_ms: f64, cuda_ms: f64) -> Timing {
        Timing { batch_size, cpu_ms, cuda_ms, cpu_us_per_row: 0.0, cuda_us_per_row: 0.0, max_abs_diff: 0.0 }
    }

    #[test]
    fn crossover_is_the_start_of_the_faster_tail() {
        let t = [timing(1, 0.01, 0.1), timing(8, 0.05, 0.1), timing(32, 0.2, 0.15), timing(128, 0.8, 0.2)];
        assert_eq!(crossover(&t), Some(32));
    }

    #[test]
    fn crossover_ignores_an_early_win_that_does_not_last() {
        let t = [timing(1, 0.2, 0.1), timing(8, 0.1, 0.2), timing(32, 0.5, 0.3), timing(128, 2.0, 0.4)];
        assert_eq!(crossover(&t), Some(32));
    }

    #[test]
    fn crossover_handles_unsorted_input_and_cuda_faster_everywhere() {
        let t = [timing(128, 2.0, 0.4), timing(1, 0.2, 0.1), timing(8, 0.5, 0.2)];
        assert_eq!(crossover(&t), Some(1));
    }

    #[test]
    fn no_crossover_when_cpu_wins_at_the_largest_batch_or_ties() {
        let t = [timing(1, 0.2, 0.1), timing(8, 0.1, 0.2)];
        assert_eq!(crossover(&t), None);
        assert_eq!(crossover(&[timing(8, 0.1, 0.1)]), None);
        assert_eq!(crossover(&[]), None);
    }

    #[test]
    fn windows_are_deterministic_and_stay_in_range() {
        let spec = ScalerSpec::Standard { mean: vec![333.0, 0.0], std: vec![13.0, 0.7] };
        let a = random_windows(&spec, 16, 100, 7);
        assert_eq!(a.len(), 100 * 16 * 2);
        assert_eq!(a, random_windows(&spec, 16, 100, 7));
        assert_ne!(a, random_windows(&spec, 16, 100, 8));
        for pair in a.chunks(2) {
            assert!((333.0 - 26.0..=333.0 + 26.0).contains(&pair[0]), "{}", pair[0]);
            assert!((-1.4..=1.4).contains(&pair[1]), "{}", pair[1]);
        }
        // Spread over the range, not stuck near the centre.
        let (lo, hi) = a.chunks(2).map(|p| p[0]).fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(v), h.max(v)));
        assert!(lo < 333.0 - 20.0 && hi > 333.0 + 20.0, "{lo}..{hi}");
    }

    #[test]
    fn a_smaller_batch_is_a_prefix_of_a_larger_one() {
        let spec = ScalerSpec::Minmax { min: vec![0.0], max: vec![10.0] };
        let big = random_windows(&spec, 4, 50, SEED);
        assert_eq!(&big[..10 * 4], &random_windows(&spec, 4, 10, SEED)[..]);
        assert!(big.iter().all(|v| (-5.0..=15.0).contains(v)));
    }

    #[test]
    fn library_version_from_the_file_name() {
        assert_eq!(library_version(Path::new("/v/capi/libonnxruntime.so.1.31.1")).as_deref(), Some("1.31.1"));
        assert_eq!(library_version(Path::new("/usr/lib/libonnxruntime.so")), None);
        assert_eq!(library_version(Path::new("libonnxruntime.so.1.x")), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), Duration::from_micros(2500));
        assert_eq!(median(&mut []), Duration::ZERO);
    }

    /// The whole measuring loop, with CPU standing in for CUDA (this needs ONNX Runtime, not a GPU).
    #[test]
    fn cpu_against_cpu_agrees_exactly_and_reports_every_batch_size() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/co2-gru/1");
        let mut a = load(&dir, SessionOptions::default()).unwrap();
        let mut b = load(&dir, SessionOptions::default()).unwrap();
        let bundle = check_bundle(&dir, &mut a, &mut b, &[1, 4, 16], 3).unwrap();
        assert_eq!((bundle.name.as_str(), bundle.version.as_str(), bundle.windows), ("co2-gru", "1", 16));
        assert_eq!(bundle.max_abs_diff, 0.0);
        assert!(bundle.passed);
        let sizes: Vec<usize> = bundle.timings.iter().map(|t| t.batch_size).collect();
        assert_eq!(sizes, [1, 4, 16]);
        assert!(bundle.timings.iter().all(|t| t.cpu_ms > 0.0 && t.cuda_ms > 0.0));
        let t = bundle.timings[2];
        assert!((t.cpu_us_per_row - t.cpu_ms * 1e3 / 16.0).abs() < 1e-9);

        let report = Report {
            gpu: None,
            ort_library: None,
            ort_version: None,
            ort_build: ort::info().to_string(),
            tolerance: TOLERANCE,
            intra_threads: 1,
            repeats: 3,
            bundles: vec![bundle],
        };
        let text = report.to_string();
        assert!(text.contains("co2-gru version 1") && text.contains("crossover:"), "{text}");
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("gpu-check.json");
        report.write_json(&path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["bundles"][0]["timings"].as_array().unwrap().len(), 3);
        assert_eq!(json["bundles"][0]["max_abs_diff"], 0.0);
    }

    #[test]
    fn max_abs_diff_and_verdict() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert!(max_abs_diff(&[1.0], &[]).is_infinite());
        let bundle = |name: &str, diff: f64| BundleReport {
            name: name.into(),
            version: "1".into(),
            dir: PathBuf::from(name),
            windows: 8,
            max_abs_diff: diff,
            passed: diff <= TOLERANCE,
            timings: vec![],
            crossover: None,
        };
        let mut report = Report {
            gpu: None,
            ort_library: None,
            ort_version: None,
            ort_build: String::new(),
            tolerance: TOLERANCE,
            intra_threads: 1,
            repeats: 3,
            bundles: vec![bundle("a", 5e-5), bundle("b", 2e-3)],
        };
        match report.verdict() {
            Err(GpuCheckError::Mismatch(names)) => assert_eq!(names, vec!["b version 1 (max 2.000e-3)".to_string()]),
            other => panic!("{other:?}"),
        }
        report.bundles.pop();
        assert!(report.verdict().is_ok());
    }
}
