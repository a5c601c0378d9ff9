//! Bring your own model, PyTorch: `python/examples/torch_walkthrough.py` trains a GRU (sequence
//! layout, H = 4) on the shipped CO₂ record and builds a bundle with
//! `streamcast_bundle.from_torch` (torch.onnx.export, dynamic batch axis). A real worker serves
//! it from its model root on the real broker, and every step of every prediction must equal
//! PyTorch's own float32 forward pass (de-normalized) within the golden tolerance,
//! 1e-4 · max(|expected|, 1).
//!
//! The package's unit tests run again with that interpreter, so that `python/tests/test_torch.py`
//! runs rather than skips.
//!
//! Needs PyTorch, which `make test` does not install: `make test-torch` builds `.venv-torch`
//! (torch, onnx, onnxruntime and `./python`) and runs this with `STREAMCAST_TORCH_PYTHON` set.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::byom::{check_bundle_files, serve_and_compare, traffic, unit_tests, walkthrough};
use common::{with_model_root, Topics, Worker};

const NAME: &str = "co2-torch";
const SCRIPT: &str = "python/examples/torch_walkthrough.py";

fn python() -> PathBuf {
    match std::env::var("STREAMCAST_TORCH_PYTHON") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            panic!("set STREAMCAST_TORCH_PYTHON to a Python with torch and ./python installed (`make test-torch` does)")
        }
    }
}

#[test]
#[ignore = "needs PyTorch: make test-torch"]
fn a_pytorch_bundle_serves_pytorchs_own_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let t0 = Instant::now();
    let (events_path, expected_path) = walkthrough(&python(), SCRIPT, &[], &root, dir.path());
    eprintln!("walk-through: {:.1} s", t0.elapsed().as_secs_f64());
    let manifest = check_bundle_files(&root, NAME, "1");
    assert_eq!(manifest["input"]["layout"], "sequence");
    assert_eq!(manifest["horizon"], 4);
    assert_eq!(manifest["golden"].as_array().unwrap().len(), 5);
    assert!(manifest["golden"].as_array().unwrap().iter().all(|g| g["prediction"].as_array().unwrap().len() == 4));

    let (events, expected) = traffic(&events_path, &expected_path);

    let topics = Topics::create(2);
    let config = with_model_root(&topics.config(NAME, "latest", ""), &root, "0s");
    let worker = Worker::start(&config);
    let worst = serve_and_compare(&topics, &worker, &events, &expected, (NAME, "1"));
    eprintln!("PyTorch: {} predictions x 4 steps, max |worker - PyTorch| = {worst:.3e}", events.len());
}

#[test]
#[ignore = "needs PyTorch: make test-torch"]
fn the_python_package_unit_tests_pass_with_pytorch() {
    let text = unit_tests(&python());
    // The PyTorch tests ran rather than skipped.
    assert!(text.contains("test_a_flat_float64_module_is_exported_in_float32 (test_torch"), "{text}");
    assert!(!text.contains("skipped 'needs PyTorch'"), "{text}");
}
