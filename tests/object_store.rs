//! Bundles from object storage: a local S3-compatible server (moto, from PyPI) holds the model
//! root, boto3 uploads to it as a publisher would, and the worker pulls, verifies and hot-reloads
//! from it on the real broker.

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// moto's S3 server on a free port, stopped on drop.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    fn start() -> S3 {
        let port = free_port();
        let mut child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/e2e/s3.py"))
            .args(["serve", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()) // moto logs every request
            .spawn()
            .expect("start moto (make test-deps installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines.by_ref().take(20).map_while(Result::ok).any(|l| l.contains("moto S3 on"));
        assert!(started, "moto did not start");
        S3 { child, port }
    }

    /// Uploads `dir` as s3://models/`prefix`/ with boto3 (model.onnx first, bundle.json last).
    fn put(&self, prefix: &str, dir: &Path, extra: &[&str]) {
        let out = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/e2e/s3.py"))
            .args(["put", &self.port.to_string(), "models", prefix])
            .arg(dir)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "upload failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events(from: usize, to: usize) -> Vec<(String, String)> {
    co2_events("s3", from, to)
}

fn s3_config(topics: &Topics, cache: &Path) -> String {
    s3_config_with(topics, cache, "")
}

fn s3_config_with(topics: &Topics, cache: &Path, extra: &str) -> String {
    with_model_root(&topics.config("co2-mlp", "latest", extra), Path::new("s3://models/team"), "300ms").replace(
        "root = \"s3://models/team\"",
        &format!("root = \"s3://models/team\"\ncache_dir = \"{}\"", cache.display()),
    )
}

#[test]
fn a_bundle_in_s3_is_served_a_new_upload_takes_over_and_a_corrupt_one_is_refused() {
    let s3 = S3::start();
    let shipped = repo().join("models/co2-mlp");
    s3.put("team/co2-mlp/1", &shipped.join("1"), &[]);
    let topics = Topics::create(1);
    let cache = tempfile::tempdir().unwrap();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = Worker::start_with(&s3_config(&topics, cache.path()), &env);
    let mut reader = Reader::new(&topics.predictions);

    let first = events(0, 300);
    send_keyed(&topics.input, &first);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 300), "{}", worker.log_text());
    assert!(reader.records.iter().all(|r| r.json()["model"]["version"] == "1"));
    assert!(cache.path().join("co2-mlp/1/model.onnx").is_file(), "version 1 is cached locally");

    // A corrupted upload: model.onnx no longer matches bundle.json's checksum. Refused with
    // `model_rejected` naming the checksum; version 1 keeps serving.
    s3.put("team/co2-mlp/2", &shipped.join("2"), &["--version", "2", "--corrupt"]);
    let mut alerts = Reader::new(&topics.alerts);
    let rejected = |r: &[Record]| r.iter().any(|a| a.json()["kind"] == "model_rejected");
    assert!(alerts.read_until(Duration::from_secs(30), rejected), "{}", worker.log_text());
    let alert = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "model_rejected").unwrap();
    assert_schema("alert", &alert);
    assert_eq!(alert["model"]["version"], "2");
    let reason = alert["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("sha256") && reason.contains("model_sha256"), "{reason}");
    assert_eq!(alert["details"]["serving"], "1");

    // A valid version 3 uploaded while events flow takes over between batches, with every id
    // predicted exactly once.
    feed_while(&topics.input, events(300, 3300), || s3.put("team/co2-mlp/3", &shipped.join("2"), &["--version", "3"]));
    let done = reader.read_until(Duration::from_secs(60), |r| r.len() >= 3300);
    assert!(done, "{} of 3300:\n{}", reader.records.len(), worker.log_text());
    reader.settle(Duration::from_secs(2));

    assert_one_swap(&reader.records, 3300, "1", "3");
    assert!(cache.path().join("co2-mlp/3/.source").is_file());

    // Version 3's predictions are the shipped version 2's (the same model.onnx).
    let file = cache.path().join("events.jsonl");
    std::fs::write(&file, events(0, 3300).iter().map(|(_, v)| v.clone() + "\n").collect::<String>()).unwrap();
    let out = cache.path().join("v2.jsonl");
    let status = Command::new(bin())
        .args(["predict", "--model", "co2-mlp", "--version", "2", "--quiet", "-o"])
        .arg(&out)
        .arg(&file)
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success());
    let want: HashMap<String, f64> = jsonl(&out)
        .into_iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["prediction"][0].as_f64().unwrap()))
        .collect();
    let mut compared = 0;
    for r in &reader.records {
        let p = r.json();
        if p["model"]["version"] == "3" {
            let (got, id) = (p["prediction"][0].as_f64().unwrap(), p["id"].as_str().unwrap());
            assert!((got - want[id]).abs() <= 1e-4, "{id}: {got} vs {}", want[id]);
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} predictions came from version 3");
    worker.terminate(Duration::from_secs(20));
}

#[test]
fn an_unusable_object_store_root_stops_start_up_naming_it() {
    let topics = Topics::create(1);
    let cache = tempfile::tempdir().unwrap();
    let config = s3_config(&topics, cache.path()).replace("s3://models/team", "ftp://models/team");
    let log = Worker::start(&config).setup_failure();
    assert!(
        log.contains("model.root") && log.contains("ftp://models/team") && log.contains("unsupported scheme"),
        "{log}"
    );

    // A reachable store with nothing under the prefix.
    let s3 = S3::start();
    s3.put("elsewhere/co2-mlp/1", &repo().join("models/co2-mlp/1"), &[]);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = Worker::start_with(&s3_config(&topics, cache.path()), &env).setup_failure();
    assert!(log.contains("no version of `co2-mlp` has a bundle.json"), "{log}");
}

#[test]
fn a_pinned_version_is_served_from_s3_and_the_worker_stops_cleanly() {
    let s3 = S3::start();
    s3.put("team/co2-mlp/1", &repo().join("models/co2-mlp/1"), &[]);
    s3.put("team/co2-mlp/2", &repo().join("models/co2-mlp/2"), &[]);
    let topics = Topics::create(1);
    let cache = tempfile::tempdir().unwrap();
    // Pinned and without a monitor: no thread holds the store, so start-up's own (async) handle
    // is the last one.
    let config = s3_config_with(&topics, cache.path(), "[monitor]\nenabled = false\n")
        .replace("version = \"latest\"", "version = \"1\"");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = Worker::start_with(&config, &env);
    let mut reader = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &events(0, 50));
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 50), "{}", worker.log_text());
    assert!(reader.records.iter().all(|r| r.json()["model"]["version"] == "1"));
    assert!(!cache.path().join("co2-mlp/2").exists(), "only the pinned version is pulled");
    let status = worker.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", worker.log_text());
}

/// Azure Blob Storage through Azurite (Microsoft's emulator, from npm), with Azure's own Python
/// SDK as the uploader: the same pull path as S3, another cloud's protocol and auth.
#[test]
fn a_bundle_in_azure_blob_storage_is_served() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let azurite = repo().join(".venv/node/node_modules/.bin/azurite-blob");
    let mut server = Command::new(&azurite)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--skipApiVersionCheck", "--silent"])
        .arg("--location")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (make test-deps installs it): {e}", azurite.display()));
    let upload = || {
        Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/e2e/azblob.py"))
            .args(["put", &port.to_string(), "models", "team/co2-mlp/1"])
            .arg(repo().join("models/co2-mlp/1"))
            .output()
            .unwrap()
    };
    // Azurite takes a moment to listen.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = upload();
    while !out.status.success() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        out = upload();
    }
    assert!(out.status.success(), "upload to Azurite failed: {}", String::from_utf8_lossy(&out.stderr));

    let topics = Topics::create(1);
    let cache = tempfile::tempdir().unwrap();
    let config = s3_config(&topics, cache.path()).replace("s3://models/team", "az://models/team");
    let url = format!("http://127.0.0.1:{port}");
    let env = [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", url.as_str())];
    let mut worker = Worker::start_with(&config, &env);
    let mut reader = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &events(0, 50));
    let done = reader.read_until(Duration::from_secs(60), |r| r.len() >= 50);
    let _ = server.kill();
    let _ = server.wait();
    assert!(done, "{}", worker.log_text());
    assert!(reader.records.iter().all(|r| r.json()["model"]["version"] == "1"));
    assert!(cache.path().join("co2-mlp/1/.source").is_file(), "pulled from Azurite into the cache");
    worker.terminate(Duration::from_secs(20));
}
