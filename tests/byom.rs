//! Bring your own model, scikit-learn: `python/examples/sklearn_walkthrough.py` trains an
//! MLPRegressor on the shipped CO₂ record and builds a bundle with `streamcast_bundle.from_sklearn`
//! (installed into `.venv` by `make test-deps`, as a user would: `pip install ./python`). A real
//! worker serves that bundle from its model root on the real broker, and every prediction must
//! equal scikit-learn's own `.predict` (de-normalized) within the golden tolerance, 1e-4 ·
//! max(|expected|, 1). Building a second version while the worker runs must hot-reload it.
//! The package's own unit tests (`python/tests`, unittest) run here too.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::byom::{check_bundle_files, serve_and_compare, traffic, unit_tests, walkthrough};
use common::{jsonl, repo, with_model_root, Topics, Worker};
use serde_json::Value;

const NAME: &str = "co2-sklearn";
const SCRIPT: &str = "python/examples/sklearn_walkthrough.py";

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

#[test]
fn a_scikit_learn_bundle_serves_scikit_learns_own_predictions_and_hot_reloads_the_next_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let t0 = Instant::now();
    let (events_path, expected_path) = walkthrough(&python(), SCRIPT, &[], &root, dir.path());
    eprintln!("walk-through: {:.1} s", t0.elapsed().as_secs_f64());
    let manifest = check_bundle_files(&root, NAME, "1");
    assert_eq!(manifest["input"]["layout"], "flat");
    assert!(manifest["golden"].as_array().unwrap().len() == 5, "five golden cases");
    assert!(manifest["validation"]["rmse"].as_f64().unwrap() > 0.0);

    let (events, expected) = traffic(&events_path, &expected_path);

    let topics = Topics::create(2);
    let config = with_model_root(&topics.config(NAME, "latest", ""), &root, "500ms");
    let mut worker = Worker::start(&config);
    let worst = serve_and_compare(&topics, &worker, &events, &expected, (NAME, "1"));
    eprintln!("scikit-learn: {} predictions, max |worker - scikit-learn| = {worst:.3e}", events.len());

    // Serve and watch: building again into the served root publishes version 2, which the
    // worker picks up between batches.
    let dir2 = tempfile::tempdir().unwrap();
    let (_, expected2_path) = walkthrough(&python(), SCRIPT, &[], &root, dir2.path());
    check_bundle_files(&root, NAME, "2");
    let port = worker.http_port();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let models: Value = serde_json::from_str(&common::http_get(port, "/models")).unwrap();
        if models["models"][0]["version"] == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "version 2 was not loaded: {models}\n{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    // `/models` names the new version once it is handed to the inference thread, which swaps it
    // in between batches (every 100 ms when idle).
    std::thread::sleep(Duration::from_secs(1));
    let probe: Vec<Value> = events
        .iter()
        .take(10)
        .map(|e| {
            let mut e = e.clone();
            e["id"] = format!("{}-v2", e["id"].as_str().unwrap()).into();
            e
        })
        .collect();
    // Version 2's own scikit-learn predictions, from the second run.
    let rebuilt: HashMap<String, Value> =
        jsonl(&expected2_path).into_iter().map(|e| (e["id"].as_str().unwrap().to_string(), e)).collect();
    let expected2: HashMap<String, Value> = probe
        .iter()
        .zip(&events)
        .map(|(p, e)| (p["id"].as_str().unwrap().to_string(), rebuilt[e["id"].as_str().unwrap()].clone()))
        .collect();
    let worst2 = serve_and_compare(&topics, &worker, &probe, &expected2, (NAME, "2"));
    eprintln!("version 2 (same recipe, rebuilt): max |worker - scikit-learn| = {worst2:.3e}");
}

/// The scaler as a step of a scikit-learn Pipeline (over the flat window), exported into the
/// ONNX graph: the bundle's own scaler is the identity, and the numbers still match.
#[test]
fn a_scikit_learn_pipeline_with_its_scaler_inside_serves_its_own_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let (events_path, expected_path) = walkthrough(&python(), SCRIPT, &["--pipeline"], &root, dir.path());
    let name = "co2-sklearn-pipeline";
    let manifest = check_bundle_files(&root, name, "1");
    assert_eq!(manifest["scaler"]["mean"], serde_json::json!([0.0, 0.0, 0.0]), "identity: {}", manifest["scaler"]);
    assert_eq!(manifest["scaler"]["std"], serde_json::json!([1.0, 1.0, 1.0]), "identity: {}", manifest["scaler"]);
    let (events, expected) = traffic(&events_path, &expected_path);
    let topics = Topics::create(2);
    let worker = Worker::start(&with_model_root(&topics.config(name, "latest", ""), &root, "0s"));
    let worst = serve_and_compare(&topics, &worker, &events, &expected, (name, "1"));
    eprintln!("scikit-learn Pipeline: {} predictions, max |worker - scikit-learn| = {worst:.3e}", events.len());
}

#[test]
fn the_python_package_unit_tests_pass() {
    unit_tests(&python());
}
