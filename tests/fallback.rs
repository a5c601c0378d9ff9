//! Fallback and circuit breaker against the real broker, with a model that really fails.
//!
//! `tests/fixtures/models/co2-flaky/1` (built by `scripts/make_fault_fixture.py`) predicts the
//! newest co2 plus one target standard deviation, and returns NaN when the newest co2 is above
//! 900 ppm, which fails the whole batch in ONNX Runtime's output check. The fallback is the
//! documented last-value forecast, so every prediction says by its value who made it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

/// co2-mlp's (and so co2-flaky's) target standard deviation.
const TARGET_STD: f64 = 12.9500957;

fn paced(topic: &str, events: &[(String, String)], gap: Duration) {
    for e in events {
        send_keyed(topic, std::slice::from_ref(e));
        std::thread::sleep(gap);
    }
}

fn good(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| ("fb-good".to_string(), event(&format!("{prefix}-{i:03}"), "fb-good", &[340.0 + i as f64, 0.5, 0.5])))
        .collect()
}

#[test]
fn inference_errors_open_the_breaker_fallback_serves_marked_and_recovery_closes_it() {
    let topics = Topics::create(1);
    let fixtures = repo().join("tests/fixtures/models");
    let config = topics
        .config(
            "co2-flaky",
            "1",
            // One failed batch in the last two opens it: the test does not depend on how the
            // poison events fall into batches.
            "[fallback]\nkind = \"last_value\"\nwindow = 2\nmin_batches = 1\nerror_rate = 0.5\n\
             open_for = \"6s\"\nclose_after = 2\n",
        )
        .replace(
            &format!("root = \"{}\"", repo().join("models").display()),
            &format!("root = \"{}\"", fixtures.display()),
        );
    let mut worker = Worker::start(&config);
    let port = worker.http_port();
    let mut preds = Reader::new(&topics.predictions);

    // 1. Healthy: the primary serves.
    let warm = good("a", 0..30);
    send_keyed(&topics.input, &warm);
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 30), "{}", worker.log_text());

    // 2. Poison: paced well beyond max_wait_ms, so batches of one poison event fail whole.
    let poison: Vec<(String, String)> =
        (0..6).map(|i| ("fb-bad".to_string(), event(&format!("p-{i:03}"), "fb-bad", &[1000.0, 0.5, 0.5]))).collect();
    paced(&topics.input, &poison, Duration::from_millis(40));
    // Healthy events right after: the breaker is open for 6 s, so the fallback serves them too.
    let during = good("b", 30..40);
    send_keyed(&topics.input, &during);
    let opened_at = Instant::now();
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 46), "{}", worker.log_text());
    let metrics = http_get(port, "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_fallback_active"), 1.0, "{metrics}");

    // 3. Recovery: after open_for, half-open probes succeed and close the breaker.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(opened_at.elapsed()));
    let after = good("c", 40..50);
    paced(&topics.input, &after, Duration::from_millis(40));
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 56), "{}", worker.log_text());
    preds.settle(Duration::from_secs(1));

    let by_id: HashMap<String, serde_json::Value> =
        preds.records.iter().map(|r| r.json()).map(|p| (p["id"].as_str().unwrap().to_string(), p)).collect();
    assert_eq!(preds.records.len(), 56, "each event exactly one prediction");
    assert_eq!(by_id.len(), 56);
    let newest = |id: &str| -> f64 {
        let i: f64 = id[2..].parse().unwrap();
        if id.starts_with("p-") {
            1000.0
        } else {
            340.0 + i
        }
    };
    for (id, p) in &by_id {
        let fallback = p.get("fallback").and_then(|v| v.as_bool()).unwrap_or(false);
        let value = p["prediction"][0].as_f64().unwrap();
        let (expected_fallback, expected) = match &id[..1] {
            "a" => (false, newest(id) + TARGET_STD),
            "p" | "b" => (true, newest(id)),
            _ => (fallback, if fallback { newest(id) } else { newest(id) + TARGET_STD }),
        };
        assert_eq!(fallback, expected_fallback, "{id}: {p}");
        assert!((value - expected).abs() < 1e-3, "{id}: {value} vs {expected} ({p})");
        assert_eq!(p["variant"], "primary");
        let version = p["model"]["version"].as_str().unwrap();
        assert_eq!(version, if fallback { "fallback-last_value" } else { "1" }, "{p}");
    }
    // The breaker closed: the last events after recovery came from the primary again.
    let closed = (47..50).all(|i| by_id[&format!("c-{i:03}")].get("fallback").is_none());
    assert!(closed, "the breaker did not close:\n{}", worker.log_text());
    let metrics = http_get(port, "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_fallback_active"), 0.0);
    assert!(metric_value(&metrics, "streamcast_fallback_predictions_total") >= 16.0, "{metrics}");

    // Alerted once when it opened and once when it closed; nothing was dead-lettered.
    let mut alerts = Reader::new(&topics.alerts);
    let both = alerts.read_until(Duration::from_secs(30), |r| {
        r.iter().filter(|a| a.json()["kind"] == "fallback_active").count() >= 2
    });
    assert!(both, "{}", worker.log_text());
    alerts.settle(Duration::from_secs(1));
    let states: Vec<String> = alerts
        .records
        .iter()
        .map(|a| a.json())
        .filter(|a| a["kind"] == "fallback_active")
        .map(|a| a["details"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["firing", "resolved"]);
    let mut dlq = Reader::new(&topics.dlq);
    dlq.settle(Duration::from_secs(1));
    assert!(dlq.records.is_empty(), "nothing is dead-lettered while a fallback serves");
}

#[test]
fn without_a_fallback_failed_batches_are_dead_lettered_not_dropped() {
    let topics = Topics::create(1);
    let fixtures = repo().join("tests/fixtures/models");
    let config = topics.config("co2-flaky", "1", "").replace(
        &format!("root = \"{}\"", repo().join("models").display()),
        &format!("root = \"{}\"", fixtures.display()),
    );
    let worker = Worker::start(&config);
    let mut preds = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &good("a", 0..5));
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 5), "{}", worker.log_text());
    // The poison event in the middle of good ones: only its own row fails.
    let mut mixed = good("b", 5..8);
    mixed.push(("fb-bad".to_string(), event("p-000", "fb-bad", &[1000.0, 0.5, 0.5])));
    mixed.extend(good("c", 8..11));
    send_keyed(&topics.input, &mixed);
    let mut dlq = Reader::new(&topics.dlq);
    assert!(dlq.read_until(Duration::from_secs(60), |r| !r.is_empty()), "{}", worker.log_text());
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 11), "{}", worker.log_text());
    dlq.settle(Duration::from_secs(1));
    assert_eq!(dlq.records.len(), 1, "only the poison event is dead-lettered");
    assert_eq!(dlq.records[0].json()["id"], "p-000");
    assert_eq!(dlq.records[0].headers.get("streamcast-error-kind").map(String::as_str), Some("inference_error"));
    assert!(preds.records.iter().all(|r| r.json()["id"] != "p-000"));
}

#[test]
fn a_primary_that_fails_to_load_is_covered_by_the_fallback_until_a_valid_version_arrives() {
    let topics = Topics::create(1);
    // co2-mlp 1 with a golden case that its model does not reproduce: refused at load.
    let root = tempfile::tempdir().unwrap();
    let v1 = root.path().join("co2-mlp/1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::copy(repo().join("models/co2-mlp/1/model.onnx"), v1.join("model.onnx")).unwrap();
    let mut b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/co2-mlp/1/bundle.json")).unwrap()).unwrap();
    let p = b["golden"][0]["prediction"][0].as_f64().unwrap();
    b["golden"][0]["prediction"][0] = (p + 1.0).into();
    std::fs::write(v1.join("bundle.json"), serde_json::to_vec(&b).unwrap()).unwrap();
    let config = topics
        .config("co2-mlp", "latest", "[fallback]\nkind = \"last_value\"\n")
        .replace("execution_provider = \"cpu\"", "execution_provider = \"cpu\"\nwatch_interval = \"300ms\"")
        .replace(
            &format!("root = \"{}\"", repo().join("models").display()),
            &format!("root = \"{}\"", root.path().display()),
        );
    let mut worker = Worker::start(&config);
    worker.wait_for_log("The primary failed to load", Duration::from_secs(60));
    let port = worker.http_port();
    let models = http_get(port, "/models");
    assert!(models.contains("failed_to_load") && models.contains("golden"), "{models}");

    let mut preds = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &good("a", 0..10));
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 10), "{}", worker.log_text());
    for p in preds.records.iter().map(|r| r.json()) {
        assert_eq!(p["fallback"], true, "{p}");
        assert_eq!(p["model"]["version"], "fallback-last_value");
        let i: f64 = p["id"].as_str().unwrap()[2..].parse().unwrap();
        assert!((p["prediction"][0].as_f64().unwrap() - (340.0 + i)).abs() < 1e-3, "{p}");
    }

    // A valid version 2 is hot-reloaded: the breaker closes and the primary serves.
    let v2 = root.path().join("co2-mlp/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(repo().join("models/co2-mlp/2/model.onnx"), v2.join("model.onnx")).unwrap();
    std::fs::copy(repo().join("models/co2-mlp/2/bundle.json"), v2.join("bundle.json")).unwrap();
    worker.wait_for_log("New model version validated", Duration::from_secs(60));
    send_keyed(&topics.input, &good("b", 10..20));
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 20), "{}", worker.log_text());
    let after: Vec<serde_json::Value> =
        preds.records.iter().map(|r| r.json()).filter(|p| p["id"].as_str().unwrap().starts_with("b-")).collect();
    assert_eq!(after.len(), 10);
    assert!(after.iter().all(|p| p.get("fallback").is_none() && p["model"]["version"] == "2"), "{after:?}");
    assert_eq!(metric_value(&http_get(port, "/metrics"), "streamcast_fallback_active"), 0.0);

    let mut alerts = Reader::new(&topics.alerts);
    let both = alerts.read_until(Duration::from_secs(30), |r| {
        r.iter().filter(|a| a.json()["kind"] == "fallback_active").count() >= 2
    });
    assert!(both, "{}", worker.log_text());
    let fa: Vec<serde_json::Value> =
        alerts.records.iter().map(|a| a.json()).filter(|a| a["kind"] == "fallback_active").collect();
    assert_eq!(fa[0]["details"]["state"], "firing");
    assert_eq!(fa[0]["details"]["reason"], "primary_load_failed");
    assert!(fa[0]["details"]["last_error"].as_str().unwrap().contains("golden"), "{}", fa[0]);
    assert_eq!(fa[1]["details"]["state"], "resolved");
}
