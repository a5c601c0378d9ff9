//! The reference retrainer (`python/streamcast_retrainer`) closing the loop against a real broker,
//! a real worker (with its monitor) and the retrainer as a subprocess:
//!
//! drift -> `retrain_requested` -> a new version trained with the serving bundle's recipe,
//! scored against the serving one on the newest windows -> published to the model root (or
//! `retrain_rejected`) -> hot reload -> the monitor's RMSE for the new version.
//!
//! The stream is the demo's: series replaying stretches of the weekly CO2 record, and from some
//! week on the `co2` feature is shifted by one training standard deviation while the actuals stay
//! true. Every alert read back is validated against `schemas/alert.schema.json` (the reader does
//! it for the alerts topic; the retrainer's own alerts are checked again explicitly).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One scenario at a time: each runs a worker, a monitor and a training subprocess, and `make
/// test` gives the whole suite two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MODEL: &str = "co2-mlp";
/// The first version's recipe (recorded in its bundle; the retrainer trains the next one alike).
const SEED_RECIPE: &str = r#"{"kind": "sklearn-mlp", "hidden": [16], "alpha": 0.01, "max_iter": 300, "seed": 0}"#;
/// Series in the stream, and weeks per series in each phase.
const SERIES: usize = 6;
/// Weeks sent before any actual: the worker's windows fill up (24 weeks) and warm-up forecasts
/// are not scored.
const WARMUP: usize = 24;
/// Unshifted weeks with actuals (phase A), then shifted ones (phase B: the drift the retrainer
/// answers), then shifted ones after the retrainer's answer (phase C).
const PHASE_A: usize = 40;
const PHASE_B: usize = 160;
const PHASE_C: usize = 60;
const THRESHOLD: f64 = 3.0;
/// The newest input records (and actuals) the retrainer reads: the last 150 weeks of each series,
/// all in phase B.
const HISTORY: usize = 900;
const HOLDOUT: usize = 120;

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

/// Runs `python args…` from the repository root with `python/` importable; returns stdout.
fn run_python(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .current_dir(repo())
        .env("PYTHONPATH", repo().join("python"))
        .env("STREAMCAST_BIN", bin())
        .output()
        .unwrap_or_else(|e| panic!("run {} (make test installs it): {e}", python().display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// A model root holding version 1: a small MLP on weeks 0..1600 of the CO2 record with
/// `SEED_RECIPE` in its metadata, built with streamcast_bundle (and `streamcast models validate`).
fn root_with_version_1() -> (tempfile::TempDir, serde_json::Value) {
    let root = tempfile::tempdir().unwrap();
    let out = run_python(&[
        "python/examples/retrainer_seed.py",
        "--root",
        root.path().to_str().unwrap(),
        "--name",
        MODEL,
        "--rows",
        "0:1600",
        "--recipe",
        SEED_RECIPE,
        "--check",
        "always",
    ]);
    let info: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let manifest = bundle(root.path(), "1");
    assert_eq!(manifest["metadata"]["recipe"]["kind"], "sklearn-mlp", "{manifest}");
    (root, info)
}

fn bundle(root: &Path, version: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join(MODEL).join(version).join("bundle.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn versions(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(MODEL))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The retrainer as a subprocess, its log in a file.
struct Retrainer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Retrainer {
    fn start(topics: &Topics, root: &Path, extra: &[&str]) -> Retrainer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("retrainer.log");
        let history = HISTORY.to_string();
        let holdout = HOLDOUT.to_string();
        let group = unique("retrainer");
        let mut args: Vec<&str> = vec![
            "-m",
            "streamcast_retrainer",
            "--alerts-topic",
            &topics.alerts,
            "--input-topic",
            &topics.input,
            "--actuals-topic",
            &topics.actuals,
            "--model-root",
            root.to_str().unwrap(),
            "--model-name",
            MODEL,
            "--group-id",
            &group,
            "--margin",
            "0.05",
            "--history",
            &history,
            "--holdout",
            &holdout,
            "--min-train",
            "200",
            "--check",
            "always",
            // As the worker's test config. Measured on nisshi: a new group's first assignment
            // takes about 3 s with these, 23 s with librdkafka's defaults.
            "--kafka",
            "session.timeout.ms=6000",
            "--kafka",
            "heartbeat.interval.ms=500",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(python())
            .args(&args)
            .current_dir(repo())
            .env("PYTHONPATH", repo().join("python"))
            .env("STREAMCAST_BIN", bin())
            .env("STREAMCAST_BOOTSTRAP_SERVERS", bootstrap())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the retrainer");
        Retrainer { child, log, _dir: dir }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        wait_for_log_of("retrainer", &mut self.child, &self.log, needle, timeout);
    }
}

impl Drop for Retrainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (timestamp, co2, month_sin, month_cos) of every week of the shipped record.
fn weeks() -> Vec<(String, [f64; 3])> {
    let text = std::fs::read_to_string(repo().join("data/co2_weekly.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let mut cols = l.split(',');
            let ts = cols.next().unwrap().to_string();
            let v: Vec<f64> = cols.map(|x| x.parse().unwrap()).collect();
            (ts, [v[0], v[1], v[2]])
        })
        .collect()
}

/// Inputs and actuals for weeks `from..to` of every series (`(key, value)` pairs, inputs in
/// time order across series). Series s replays the record from week s × stride; from week
/// `shift_from` on its `co2` feature is shifted by `shift`. The actual of week i, sent with id
/// of week i's event, is the true co2 of week i + 1 (H = 1); weeks before `WARMUP` get none.
fn stream(from: usize, to: usize, shift_from: usize, shift: f64) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let rows = weeks();
    let total = WARMUP + PHASE_A + PHASE_B + PHASE_C;
    let stride = (rows.len() - total - 2) / SERIES;
    let (mut inputs, mut actuals) = (Vec::new(), Vec::new());
    for i in from..to {
        for s in 0..SERIES {
            let r = s * stride + i;
            let series = format!("s-{s}");
            let id = format!("w-{s}-{i}");
            let mut v = rows[r].1;
            if i >= shift_from {
                v[0] += shift;
            }
            let event = serde_json::json!({"id": id, "series_id": series, "timestamp": rows[r].0, "features": v});
            inputs.push((series.clone(), event.to_string()));
            if i >= WARMUP {
                let actual = serde_json::json!({"id": id, "series_id": series, "timestamp": rows[r + 1].0, "actual": rows[r + 1].1[0]});
                actuals.push((series, actual.to_string()));
            }
        }
    }
    (inputs, actuals)
}

fn of_kind(records: &[Record], kind: &str) -> Vec<(i64, serde_json::Value)> {
    records.iter().map(|r| (r.offset, r.json())).filter(|(_, j)| j["kind"] == kind).collect()
}

/// The newest primary snapshot of `version` that satisfies `done` (60 s at most).
fn snapshot_of(
    topics: &Topics,
    worker: &Worker,
    version: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    snapshot_where(&topics.metrics, worker, |s| {
        s["model"]["version"] == version && s["variant"] == "primary" && done(s)
    })
}

/// The worker (role all: inference and the monitor) on `root`, watching for new versions.
fn start_worker(topics: &Topics, root: &Path) -> Worker {
    let monitor = format!(
        "[monitor]\npublish_interval = \"500ms\"\nrmse_threshold = {THRESHOLD}\nmin_joined = 50\n\
         window_count = 1000\nretrain_after = \"2s\"\n"
    );
    let config = with_model_root(&topics.config(MODEL, "latest", &monitor), root, "500ms");
    let mut worker = Worker::start(&config);
    worker.wait_for_log("Worker started.", Duration::from_secs(60));
    worker.wait_for_log("Monitor leads the group", Duration::from_secs(60));
    worker
}

/// Up to the retraining request: warm-up, phase A (v1 scored before the shift), phase B (the
/// shift). Returns v1's rolling RMSE before the shift and the request.
fn drift_until_requested(
    topics: &Topics,
    worker: &Worker,
    alerts: &mut Reader,
    shift: f64,
) -> (f64, serde_json::Value) {
    let shift_from = WARMUP + PHASE_A;
    let (inputs, actuals) = stream(0, shift_from, shift_from, shift);
    send_keyed(&topics.input, &inputs);
    send_keyed(&topics.actuals, &actuals);
    let joined = (SERIES * PHASE_A) as u64;
    let before = snapshot_of(topics, worker, "1", |s| s["joined"] == joined);
    let rmse_before = before["rmse"].as_f64().unwrap();
    assert!(rmse_before < THRESHOLD, "v1 is above the threshold before any shift: {before}");

    // Phase B: every input first, then the actuals, so all of the shifted history is on the
    // topic before the error (and so the request) can rise.
    let (inputs, actuals) = stream(shift_from, shift_from + PHASE_B, shift_from, shift);
    send_keyed(&topics.input, &inputs);
    send_keyed(&topics.actuals, &actuals);
    let asked = alerts.read_until(Duration::from_secs(60), |r| !of_kind(r, "retrain_requested").is_empty());
    assert!(asked, "no retrain_requested:\n{}", worker.log_text());
    let request = of_kind(&alerts.records, "retrain_requested").remove(0).1;
    assert_eq!(request["details"]["reason"], "performance", "{request}");
    assert_eq!(request["model"]["version"], "1", "{request}");
    (rmse_before, request)
}

fn wait_for_outcome(alerts: &mut Reader, retrainer: &Retrainer, timeout: Duration) -> (i64, serde_json::Value) {
    let outcomes = ["retrain_published", "retrain_rejected", "retrain_failed"];
    let done = alerts.read_until(timeout, |r| outcomes.iter().any(|k| !of_kind(r, k).is_empty()));
    assert!(done, "the retrainer did not answer in {timeout:?}:\n{}", retrainer.log_text());
    let found = alerts
        .records
        .iter()
        .map(|r| (r.offset, r.json()))
        .find(|(_, j)| outcomes.contains(&j["kind"].as_str().unwrap()));
    let (offset, alert) = found.unwrap();
    assert_schema("alert", &alert);
    (offset, alert)
}

fn shift_of(root: &Path) -> f64 {
    // The demo's drift: one training standard deviation of the shifted feature.
    bundle(root, "1")["scaler"]["std"][0].as_f64().unwrap()
}

/// The loop closes: the drift raises `retrain_requested`; the retrainer trains version 2 with
/// version 1's recipe, finds it better on the newest windows and publishes it; the worker
/// hot-reloads it; and the monitor's rolling RMSE for version 2 is back under the threshold.
#[test]
fn drift_is_answered_by_a_retrained_version_that_the_worker_serves() {
    let _serial = serial();
    let started = Instant::now();
    let (root, seed) = root_with_version_1();
    let shift = shift_of(root.path());
    let topics = Topics::create(3);
    let mut retrainer = Retrainer::start(&topics, root.path(), &[]);
    let worker = start_worker(&topics, root.path());
    retrainer.wait_for_log("Retrainer ready.", Duration::from_secs(60));
    let mut alerts = Reader::new(&topics.alerts);

    let (rmse_before, request) = drift_until_requested(&topics, &worker, &mut alerts, shift);
    let (out_offset, outcome) = wait_for_outcome(&mut alerts, &retrainer, Duration::from_secs(120));
    let req_offset = of_kind(&alerts.records, "retrain_requested")[0].0;
    assert_eq!(outcome["kind"], "retrain_published", "{outcome}\n{}", retrainer.log_text());
    assert!(out_offset > req_offset, "published before it was asked");
    let d = &outcome["details"];
    let (cur, cand) = (d["current_rmse"].as_f64().unwrap(), d["candidate_rmse"].as_f64().unwrap());
    assert!(cand < cur * (1.0 - 0.05), "{outcome}");
    assert_eq!(d["candidate_version"], "2");
    assert_eq!(d["request"]["at"], request["at"]);
    assert_eq!(d["n_holdout"], HOLDOUT as u64);
    assert_eq!(outcome["model"], serde_json::json!({"name": MODEL, "version": "1"}));

    // Version 2 is in the root, complete, trained with version 1's recipe.
    assert_eq!(versions(root.path()), ["1", "2"]);
    let v2 = bundle(root.path(), "2");
    assert_eq!(v2["metadata"]["recipe"], bundle(root.path(), "1")["metadata"]["recipe"]);
    assert_eq!(v2["metadata"]["retrained"]["request"]["at"], request["at"]);
    assert!(v2["model_sha256"].is_string(), "{v2}");

    // Hot reload: the next weeks are scored by version 2.
    let mut worker = worker;
    // "Model swapped." is the inference thread's: every batch after it is scored by version 2.
    worker.wait_for_log("Model swapped.", Duration::from_secs(30));
    let c_from = WARMUP + PHASE_A + PHASE_B;
    let (inputs, actuals) = stream(c_from, c_from + PHASE_C, 0, shift);
    send_keyed(&topics.input, &inputs);
    send_keyed(&topics.actuals, &actuals);
    let c_ids: std::collections::HashSet<String> = inputs
        .iter()
        .map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).unwrap()["id"].as_str().unwrap().into())
        .collect();
    let mut predictions = Reader::new(&topics.predictions);
    let all_c = predictions.read_until(Duration::from_secs(60), |r| {
        r.iter().filter(|p| c_ids.contains(p.json()["id"].as_str().unwrap())).count() >= c_ids.len()
    });
    assert!(all_c, "not every phase-C event was predicted:\n{}", worker.log_text());
    for p in predictions.records.iter().map(Record::json).filter(|p| c_ids.contains(p["id"].as_str().unwrap())) {
        assert_eq!(p["model"], serde_json::json!({"name": MODEL, "version": "2"}), "{p}");
    }
    let joined = (SERIES * PHASE_C) as u64;
    let after = snapshot_of(&topics, &worker, "2", |s| s["joined"] == joined);
    let v2_rmse = after["rmse"].as_f64().unwrap();
    let v1_after = request["details"]["rmse"].as_f64().unwrap();

    println!(
        "retrain: v1 validation RMSE {:.3}; v1 served RMSE before the shift {rmse_before:.3} ({} joined), \
         after it {v1_after:.3} (at the request); holdout ({} windows, {} trained on): v1 {cur:.3}, v2 {cand:.3}; \
         v2 served RMSE {v2_rmse:.3} ({joined} joined); threshold {THRESHOLD}; shift {shift:.3}; {:.1} s",
        seed["validation"]["rmse"].as_f64().unwrap(),
        SERIES * PHASE_A,
        d["n_holdout"],
        d["n_train"],
        started.elapsed().as_secs_f64(),
    );
    eprintln!(
        "retrain summary: v1 {rmse_before:.3} -> {v1_after:.3} after the shift; holdout v1 {cur:.3} vs v2 {cand:.3}; \
         v2 served {v2_rmse:.3} (threshold {THRESHOLD})"
    );
    assert!(v1_after > THRESHOLD);
    assert!(v2_rmse < THRESHOLD, "version 2's RMSE is not back under the threshold: {after}\n{}", retrainer.log_text());
}

/// A recipe that cannot learn (one epoch, one hidden unit): the candidate scores worse than the
/// serving version, so nothing is written, `retrain_rejected` carries both scores, and the worker
/// keeps serving version 1. The request is answered once.
#[test]
fn a_candidate_that_is_not_better_is_rejected_and_version_1_keeps_serving() {
    let _serial = serial();
    let (root, _) = root_with_version_1();
    let shift = shift_of(root.path());
    let topics = Topics::create(3);
    let mut retrainer =
        Retrainer::start(&topics, root.path(), &["--recipe-override", r#"{"max_iter": 1, "hidden": [1]}"#]);
    let worker = start_worker(&topics, root.path());
    retrainer.wait_for_log("Retrainer ready.", Duration::from_secs(60));
    let mut alerts = Reader::new(&topics.alerts);

    let (_, request) = drift_until_requested(&topics, &worker, &mut alerts, shift);
    let (_, outcome) = wait_for_outcome(&mut alerts, &retrainer, Duration::from_secs(120));
    assert_eq!(outcome["kind"], "retrain_rejected", "{outcome}\n{}", retrainer.log_text());
    let d = &outcome["details"];
    let (cur, cand) = (d["current_rmse"].as_f64().unwrap(), d["candidate_rmse"].as_f64().unwrap());
    assert!(cur > 0.0 && cand >= cur * (1.0 - 0.05), "{outcome}");
    assert_eq!((&d["candidate_version"], &d["margin"]), (&"2".into(), &0.05.into()));
    assert_eq!(d["request"]["at"], request["at"]);
    assert_eq!(d["recipe"]["max_iter"], 1);

    // Nothing was written (no version, no leftover staging directory), and weeks sent now are
    // still scored by version 1.
    let c_from = WARMUP + PHASE_A + PHASE_B;
    let (inputs, _) = stream(c_from, c_from + 10, 0, shift);
    send_keyed(&topics.input, &inputs);
    let mut predictions = Reader::new(&topics.predictions);
    let total = (c_from + 10) * SERIES;
    assert!(predictions.read_until(Duration::from_secs(60), |r| r.len() >= total), "{}", worker.log_text());
    alerts.settle(Duration::from_secs(3));
    assert_eq!(versions(root.path()), ["1"]);
    assert!(predictions.records.iter().all(|p| p.json()["model"]["version"] == "1"));
    assert!(!worker.log_text().contains("New model version validated"), "{}", worker.log_text());
    let rejected = of_kind(&alerts.records, "retrain_rejected");
    assert_eq!(rejected.len(), 1, "answered more than once: {rejected:?}");
    assert!(of_kind(&alerts.records, "retrain_published").is_empty());
    println!("retrain rejected: holdout v1 {cur:.3}, candidate {cand:.3} (margin 0.05)");
    eprintln!("retrain rejected summary: holdout v1 {cur:.3} vs bad candidate {cand:.3}");
}

/// The retrainer's own unit tests (no broker): data windows and the holdout split, the scaler
/// applied as the worker applies it (golden cases of every shipped bundle), recipes, settings,
/// and the publish / reject / fail decisions with their alerts checked against the schema.
#[test]
fn the_retrainer_python_unit_tests_pass() {
    let _serial = serial();
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-s", "streamcast_retrainer/tests", "-t", "."])
        .current_dir(repo().join("python"))
        .env("PYTHONPATH", repo().join("python"))
        .env("STREAMCAST_BIN", bin())
        .output()
        .expect("run the retrainer's unit tests");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::io::stdout().write_all(text.as_bytes());
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");
}

/// The schema holds the retrainer's outcomes to their fields, in the validator the Rust tests
/// read every alert with (the kinds are conditional: other kinds keep free-form details).
#[test]
fn the_alert_schema_holds_retrainer_outcomes_to_their_fields() {
    let text = std::fs::read_to_string(repo().join("schemas/alert.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let request = serde_json::json!({"at": "2026-12-03T15:24:43.882Z", "version": "1", "reason": "performance"});
    let scored = serde_json::json!({
        "kind": "retrain_rejected", "model": {"name": MODEL, "version": "1"}, "variant": "primary",
        "at": "2026-12-03T15:24:44Z",
        "details": {"candidate_version": "2", "current_rmse": 8.3, "candidate_rmse": 21.8, "margin": 0.05,
                    "n_holdout": 120, "request": request}
    });
    assert!(validator.is_valid(&scored));
    let mut published = scored.clone();
    published["kind"] = "retrain_published".into();
    assert!(validator.is_valid(&published));
    for kind in ["retrain_rejected", "retrain_published"] {
        for key in ["candidate_version", "current_rmse", "candidate_rmse", "margin", "n_holdout", "request"] {
            let mut bad = scored.clone();
            bad["kind"] = kind.into();
            bad["details"].as_object_mut().unwrap().remove(key);
            assert!(!validator.is_valid(&bad), "{kind} without {key} validates");
        }
    }
    let failed = serde_json::json!({
        "kind": "retrain_failed", "model": {"name": MODEL, "version": "1"}, "variant": null, "at": "2026-12-03T15:24:44Z",
        "details": {"reason": "insufficient_history", "message": "12 windows", "request": request}
    });
    assert!(validator.is_valid(&failed));
    let mut bad = failed.clone();
    bad["details"].as_object_mut().unwrap().remove("reason");
    assert!(!validator.is_valid(&bad));
    let mut other = scored.clone();
    other["kind"] = "feature_drift".into();
    other["details"] = serde_json::json!({});
    assert!(validator.is_valid(&other), "other kinds keep free-form details");
}
