//! Shared by tests/byom.rs and tests/byom_torch.rs: run a bring-your-own-model walk-through,
//! check the bundle it published, and compare what the worker serves with the framework's own
//! predictions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{bin, repo, send_keyed, Reader, Topics, Worker};

/// Runs a walk-through script: the bundle goes under `root`, the events and the framework's own
/// predictions to `out/events.jsonl` and `out/expected.jsonl`, which are returned.
pub fn walkthrough(python: &Path, script: &str, args: &[&str], root: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let (events, expected) = (out.join("events.jsonl"), out.join("expected.jsonl"));
    let run = Command::new(python)
        .arg(repo().join(script))
        .arg("--root")
        .arg(root)
        .arg("--events")
        .arg(&events)
        .arg("--expected")
        .arg(&expected)
        .args(["--streamcast", bin()])
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{script} failed ({}):\n{text}", run.status);
    eprintln!("{text}");
    (events, expected)
}

/// The bundle directory holds model.onnx and a bundle.json that validates against the schema and
/// names model.onnx's SHA-256; nothing else (no staging directory) is left beside the version.
pub fn check_bundle_files(root: &Path, name: &str, version: &str) -> Value {
    let dir = root.join(name).join(version);
    let model = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).expect("bundle.json")).unwrap();
    super::assert_schema("bundle", &manifest);
    let sha = format!("{:x}", Sha256::digest(&model));
    assert_eq!(manifest["model_sha256"], sha.as_str(), "model_sha256 is model.onnx's");
    assert_eq!(manifest["version"], version);
    let mut entries: Vec<String> =
        std::fs::read_dir(root.join(name)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert!(entries.iter().all(|e| !e.starts_with('.')), "left behind: {entries:?}");
    manifest
}

/// The golden rule: `|got - want| <= 1e-4 · max(1, |want|)`.
pub fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-4 * want.abs().max(1.0)
}

/// What float32 inference and float32 de-normalization leave, with a margin of about ten: the
/// largest differences measured are 2.6e-5 ppm (scikit-learn) and 4.0e-5 ppm (PyTorch) at about
/// 350 ppm. The golden rule allows 0.035 ppm there, which would hide a scaler converted 0.1 %
/// wrong (1.5e-3 ppm); this does not.
pub fn float32_close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 * want.abs().max(1.0)
}

/// Produces `events` (keyed by series) and checks every prediction against `expected`; returns
/// the largest |served - framework| over every step.
pub fn serve_and_compare(
    topics: &Topics,
    worker: &Worker,
    events: &[Value],
    expected: &HashMap<String, Value>,
    (name, version): (&str, &str),
) -> f64 {
    let records: Vec<(String, String)> =
        events.iter().map(|e| (e["series_id"].as_str().unwrap().to_string(), e.to_string())).collect();
    send_keyed(&topics.input, &records);
    let mut reader = Reader::new(&topics.predictions);
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let all = |r: &[super::Record]| {
        let seen = super::ids_of(r);
        ids.iter().all(|id| seen.contains_key(*id))
    };
    assert!(reader.read_until(Duration::from_secs(120), all), "not every event was predicted:\n{}", worker.log_text());
    let mut worst = 0.0f64;
    for p in reader.records.iter().map(|r| r.json()) {
        let id = p["id"].as_str().unwrap();
        if !ids.contains(&id) {
            continue;
        }
        let want = &expected[id];
        assert_eq!(p["model"]["name"], name, "{p}");
        assert_eq!(p["model"]["version"], version, "{p}");
        assert_eq!(p["series_id"], want["series_id"], "{p}");
        assert_ne!(p["warmup"], true, "an event with its own window is never warm-up: {p}");
        let got = p["prediction"].as_array().unwrap();
        let want = want["prediction"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{p}");
        for (h, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(close(g, w), "{id} step {}: the worker serves {g}, the framework predicts {w}", h + 1);
            assert!(
                float32_close(g, w),
                "{id} step {}: the worker serves {g}, the framework predicts {w}: within the golden tolerance, \
                 but beyond float32 rounding",
                h + 1
            );
            worst = worst.max((g - w).abs());
        }
    }
    worst
}

/// The walk-through's traffic: its input events (each valid against the input schema, at least
/// 150 of them) and the framework's own predictions keyed by id, one per event.
pub fn traffic(events: &Path, expected: &Path) -> (Vec<Value>, HashMap<String, Value>) {
    let events = super::jsonl(events);
    assert!(events.len() >= 150, "{} events", events.len());
    for e in &events {
        super::assert_schema("input_event", e);
    }
    let expected: HashMap<String, Value> =
        super::jsonl(expected).into_iter().map(|e| (e["id"].as_str().unwrap().to_string(), e)).collect();
    assert_eq!(expected.len(), events.len());
    (events, expected)
}

/// Runs the package's unit tests (`python/tests`) with `python`; returns unittest's report.
pub fn unit_tests(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-m", "unittest", "discover", "-s", "python/tests", "-v"])
        .env("STREAMCAST_BIN", bin())
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{text}");
    assert!(out.status.success(), "python/tests failed:\n{text}{}", String::from_utf8_lossy(&out.stdout));
    assert!(text.contains("\nOK"), "{text}");
    text
}
