//! Model lifecycle against the real broker: hot reload of a new version mid-stream, and refusal
//! of a broken one while the old keeps serving.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;

fn copy_bundle(from: &Path, to: &Path, edit: impl Fn(&mut serde_json::Value)) {
    std::fs::create_dir_all(to).unwrap();
    // model.onnx first and bundle.json last, like a careful deployment would.
    std::fs::copy(from.join("model.onnx"), to.join("model.onnx")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("bundle.json")).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(to.join("bundle.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn events(from: usize, to: usize) -> Vec<(String, String)> {
    co2_events("h", from, to)
}

#[test]
fn a_new_version_takes_over_mid_stream_and_a_broken_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/co2-mlp");
    copy_bundle(&shipped.join("1"), &root.path().join("co2-mlp/1"), |_| {});
    let topics = Topics::create(1);
    let config = with_model_root(&topics.config("co2-mlp", "latest", ""), root.path(), "300ms");
    let mut worker = Worker::start(&config);
    let mut reader = Reader::new(&topics.predictions);

    let first = events(0, 300);
    send_keyed(&topics.input, &first);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 300), "{}", worker.log_text());

    // A broken version (golden mismatch) is refused; version 1 keeps serving.
    copy_bundle(&shipped.join("1"), &root.path().join("co2-mlp/2"), |m| {
        m["version"] = "2".into();
        let p = m["golden"][0]["prediction"][0].as_f64().unwrap();
        m["golden"][0]["prediction"][0] = (p + 1.0).into();
    });
    worker.wait_for_log("Model version refused", Duration::from_secs(30));
    let mut alerts = Reader::new(&topics.alerts);
    assert!(alerts.read_until(Duration::from_secs(30), |r| r.iter().any(|a| a.json()["kind"] == "model_rejected")));
    let rejected = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "model_rejected").unwrap();
    assert_eq!(rejected["model"]["version"], "2");
    assert!(rejected["details"]["reason"].as_str().unwrap().contains("golden case 0"), "{rejected}");

    // A valid version 3 dropped in while events flow takes over between batches.
    feed_while(&topics.input, events(300, 3300), || {
        copy_bundle(&shipped.join("2"), &root.path().join("co2-mlp/3"), |m| m["version"] = "3".into())
    });
    let done = reader.read_until(Duration::from_secs(60), |r| r.len() >= 3300);
    assert!(done, "{} of 3300:\n{}", reader.records.len(), worker.log_text());
    reader.settle(Duration::from_secs(2));

    // Exactly one prediction per id; within each partition, in offset order, the version changes
    // once, from 1 to 3 (the input has one partition, so every series saw the swap at one point).
    assert_one_swap(&reader.records, 3300, "1", "3");
    assert!(worker.log_text().contains("Model swapped."));
    // Start-up's pages went back to the kernel once, and again after the versions the registry
    // checked (the refused version 2, unless start-up's release came after it, and version 3)
    // while events flowed: the checks below cover predictions made on code mapped back in.
    let handed_back = || worker.log_text().matches("Handed start-up's pages back").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handed_back() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(handed_back() >= 2, "{}", worker.log_text());

    // Each prediction equals what its claimed version computes for the same event history
    // (`streamcast predict` builds the same windows; the two versions differ).
    let all = events(0, 3300);
    let file = root.path().join("events.jsonl");
    std::fs::write(&file, all.iter().map(|(_, v)| v.clone() + "\n").collect::<String>()).unwrap();
    let mut by_version: HashMap<&str, HashMap<String, f64>> = HashMap::new();
    for (version, dir) in [("1", "1"), ("3", "2")] {
        let out = root.path().join(format!("v{version}.jsonl"));
        let status = std::process::Command::new(bin())
            .args(["predict", "--model", "co2-mlp", "--version", dir, "--quiet", "-o"])
            .arg(&out)
            .arg(&file)
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(status.success());
        by_version.insert(
            version,
            jsonl(&out)
                .into_iter()
                .map(|p| (p["id"].as_str().unwrap().to_string(), p["prediction"][0].as_f64().unwrap()))
                .collect(),
        );
    }
    for r in &reader.records {
        let p = r.json();
        let want = by_version[p["model"]["version"].as_str().unwrap()][p["id"].as_str().unwrap()];
        let got = p["prediction"][0].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-4, "{}: {got} vs {want}", p["id"]);
    }
}

#[test]
fn auto_falls_back_to_cpu_loudly_without_cuda() {
    // This suite runs on CPU-only machines with the CPU onnxruntime wheel.
    let topics = Topics::create(1);
    let config =
        topics.config("co2-mlp", "1", "").replace("execution_provider = \"cpu\"", "execution_provider = \"auto\"");
    let mut worker = Worker::start(&config);
    let port = worker.http_port();
    let log = worker.log_text();
    assert!(log.contains("FALLING BACK TO CPU") && log.contains("\"level\":\"WARN\""), "{log}");
    let mut alerts = Reader::new(&topics.alerts);
    assert!(alerts
        .read_until(Duration::from_secs(30), |r| r.iter().any(|a| a.json()["kind"] == "execution_provider_fallback")));
    let alert = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "execution_provider_fallback").unwrap();
    assert!(alert["details"]["reason"].as_str().unwrap().contains("CUDA"), "{alert}");
    let metrics = http_get(port, "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_execution_provider_fallback"), 1.0);
    assert!(metrics.contains("streamcast_execution_provider{provider=\"cpu\"} 1"));
    let models: serde_json::Value = serde_json::from_str(&http_get(port, "/models")).unwrap();
    assert_eq!(models["models"][0]["execution_provider"], "cpu");
}

#[test]
fn start_up_pages_go_back_to_the_kernel_and_the_worker_keeps_predicting() {
    let topics = Topics::create(1);
    let mut worker = Worker::start(&topics.config("co2-gru", "1", ""));
    let port = worker.http_port();
    // After the first assignment (`processing.release_startup_pages`, on by default).
    worker.wait_for_log("Handed start-up's pages back to the kernel.", Duration::from_secs(60));
    let released = metric_value(&http_get(port, "/metrics"), "streamcast_startup_pages_released_bytes");
    // ONNX Runtime's session set-up alone leaves about 15 MiB of its code resident.
    assert!(released > 8.0 * 1048576.0, "{released} bytes released:\n{}", worker.log_text());

    // The code the hot path needs comes back from the files: events still become predictions.
    let mut reader = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &events(0, 200));
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 200), "{}", worker.log_text());
    let rows: Vec<serde_json::Value> = reader.records.iter().map(|r| r.json()).collect();
    assert!(rows.iter().all(|p| p["prediction"].as_array().is_some_and(|v| v.len() == 4)), "{:?}", rows[0]);
}
