//! Hostile input and faults against the real broker: records the producer could not take as they
//! are, and a SIGTERM while control messages wait for an idle inference thread. The worker must
//! neither crash-loop nor hang.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Produces records larger than librdkafka's default limit (the broker takes them).
fn produce_large(topic: &str, records: &[(Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: Some(v) });
        }
        let mut r = BaseRecord::to(topic).key(&key[..]).payload(&payload[..]).headers(h);
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(format!("{e}").contains("Queue full"), "{e}");
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    assert!(p.flush(Duration::from_secs(30)).is_ok());
}

/// A dead-letter topic whose `max.message.bytes` (20 000) is far below the producer's default
/// (1 000 000). A real broker refuses a whole batch over a topic's limit, every record in it, and
/// under `processing.unproducible = "skip"` they would all be committed past. The worker reads
/// the limit at start-up and fits its producer to it, so dead letters are cut to fit and batches
/// stay within it. (nisshi stores the topic config but does not enforce it, so this checks what
/// the worker writes, which is what a real broker would judge.)
#[test]
fn dead_letters_fit_a_dead_letter_topic_with_a_small_max_message_bytes() {
    let topics = Topics::create(1);
    let small_dlq = unique("dlq-small");
    create_topics_with(&[(&small_dlq, 1, &[("max.message.bytes", "20000")])]);
    let big_junk = [b"{not json ".to_vec(), vec![b'z'; 100_000]].concat();
    let mut records = Vec::new();
    for i in 0..20 {
        let (id, s) = (format!("good-{i}"), format!("s-{}", i % 3));
        records.push((s.clone().into_bytes(), event(&id, &s, &[330.0 + i as f64, 0.5, 0.5]).into_bytes(), Vec::new()));
        // Small dead letters too, so that they share batches with the cut one.
        records.push((b"s-1".to_vec(), format!("{{bad {i}").into_bytes(), Vec::new()));
        if i % 5 == 0 {
            records.push((b"s-2".to_vec(), big_junk.clone(), Vec::new()));
        }
    }
    produce_large(&topics.input, &records);

    let config = topics.config("co2-mlp", "1", "").replace(&format!("\"{}\"", topics.dlq), &format!("\"{small_dlq}\""));
    assert!(config.contains(&small_dlq), "{config}");
    let mut worker = Worker::start(&config);
    let mut dlq = Reader::new(&small_dlq);
    assert!(dlq.read_until(Duration::from_secs(90), |r| r.len() >= 24), "{}", worker.log_text());
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(60), |r| ids_of(r).len() >= 20), "{}", worker.log_text());
    dlq.settle(Duration::from_secs(1));
    assert_eq!(dlq.records.len(), 24, "each bad record dead-lettered once");
    let cut: Vec<_> = dlq.records.iter().filter(|r| r.payload.starts_with(b"{not json ")).collect();
    assert_eq!(cut.len(), 4);
    for r in &cut {
        assert_eq!(r.headers["streamcast-truncated"], format!("payload={}", big_junk.len()));
        assert!(big_junk.starts_with(&r.payload));
        // Cut with room for the record's framing and the batch and request headers.
        let size =
            r.payload.len() + r.key.as_ref().map_or(0, Vec::len) + r.headers.values().map(String::len).sum::<usize>();
        assert!(size <= 20_000 - 2_000, "{size} bytes");
    }
    assert!(worker.log_text().contains("are lowered to it"), "{}", worker.log_text());
    let metrics = http_get(worker.http_port(), "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_unproducible_records_total"), 0.0);
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.log_text());
}

#[test]
fn records_too_large_to_forward_are_dead_lettered_cut_to_size_and_the_worker_keeps_running() {
    let topics = Topics::create(1);
    let good = |i: usize| {
        let id = format!("good-{i}");
        let s = format!("s-{}", i % 3);
        (s.clone().into_bytes(), event(&id, &s, &[330.0 + i as f64, 0.5, 0.5]).into_bytes(), Vec::new())
    };
    let long_series = "x".repeat(600_000);
    let long_series_event = event("long-series", &long_series, &[330.0, 0.5, 0.5]).into_bytes();
    let two_mb = format!(
        r#"{{"id":"two-mb","series_id":"s-0","timestamp":"2026-11-26T19:00:00Z","features":[1,2,3],"pad":"{}"}}"#,
        "y".repeat(2_000_000)
    )
    .into_bytes();
    // Just under the input limit, not JSON, with large headers (a traceparent among them).
    let near_limit = [b"{not json ".to_vec(), vec![b'z'; 1_040_000]].concat();
    let big_headers: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("h-{i}"), vec![b'h'; 20_000]))
        .chain([("traceparent".to_string(), vec![b't'; 50_000])])
        .collect();
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(good(i));
        match i {
            5 => records.push((long_series.clone().into_bytes(), long_series_event.clone(), Vec::new())),
            10 => records.push((b"s-1".to_vec(), two_mb.clone(), Vec::new())),
            15 => records.push((b"s-2".to_vec(), near_limit.clone(), big_headers.clone())),
            _ => {}
        }
    }
    produce_large(&topics.input, &records);

    let mut worker = Worker::start(&topics.config("co2-mlp", "1", ""));
    let mut dlq = Reader::new(&topics.dlq);
    assert!(dlq.read_until(Duration::from_secs(90), |r| r.len() >= 3), "{}", worker.log_text());
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(60), |r| ids_of(r).len() >= 30), "{}", worker.log_text());
    dlq.settle(Duration::from_secs(1));
    assert_eq!(dlq.records.len(), 3, "each hostile record dead-lettered once");

    let by_offset = |needle: &[u8]| {
        dlq.records.iter().find(|r| r.payload.starts_with(needle)).unwrap_or_else(|| panic!("{needle:?} in the DLQ"))
    };
    let long = by_offset(&long_series_event[..40]);
    assert_eq!(long.headers["streamcast-error-kind"], "invalid_field");
    assert!(long.headers["streamcast-error"].contains("series_id"), "{:?}", long.headers);
    assert_eq!(long.headers["streamcast-truncated"], "key=600000");
    assert_eq!(long.key.as_ref().unwrap().len(), 1024);
    assert_eq!(long.payload, long_series_event, "the payload fits and is kept whole");

    let big = by_offset(&two_mb[..40]);
    assert_eq!(big.headers["streamcast-error-kind"], "oversized");
    assert_eq!(big.headers["streamcast-truncated"], format!("payload={}", two_mb.len()));
    assert!(big.payload.len() < 1_000_000 && two_mb.starts_with(&big.payload));

    let junk = by_offset(b"{not json ");
    assert_eq!(junk.headers["streamcast-error-kind"], "invalid_json");
    assert!(junk.headers["streamcast-error"].len() <= 1024);
    assert!(junk.key.as_deref() == Some(&b"s-2"[..]));
    for r in &dlq.records {
        assert!(r.key.as_ref().map_or(0, Vec::len) + r.payload.len() < 1_000_000);
        assert!(r.headers.values().all(|v| v.len() <= 1024), "header values are bounded");
    }

    assert!(worker.child.try_wait().unwrap().is_none(), "the worker is still running:\n{}", worker.log_text());
    let metrics = http_get(worker.http_port(), "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_unproducible_records_total"), 0.0);
    assert_eq!(metric_value(&metrics, "streamcast_delivery_failures_total"), 0.0);
}

fn copy_bundle(from: &Path, to: &Path, version: &str) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("model.onnx"), to.join("model.onnx")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("bundle.json")).unwrap()).unwrap();
    m["version"] = version.into();
    std::fs::write(to.join("bundle.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

#[test]
fn sigterm_on_an_idle_worker_with_pending_reloads_and_decisions_exits_promptly() {
    let root = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/co2-mlp/1");
    for v in ["1", "2"] {
        copy_bundle(&shipped, &root.path().join(format!("co2-mlp/{v}")), v);
    }
    let topics = Topics::create(1);
    let extra = "[variants.candidate]\nversion = \"2\"\nshare = 0.5\n[processing]\nshutdown_timeout = \"5s\"\n";
    let config = with_model_root(&topics.config("co2-mlp", "latest", extra), root.path(), "100ms");
    let mut worker = Worker::start(&config);
    worker.wait_for_log("Worker started", Duration::from_secs(60));

    // Nothing flows on the input topic. Two new versions, one after the other, and a burst of
    // decisions (more than the control queue holds) all wait for the inference thread.
    copy_bundle(&shipped, &root.path().join("co2-mlp/3"), "3");
    worker.wait_for_log("New model version validated", Duration::from_secs(30));
    copy_bundle(&shipped, &root.path().join("co2-mlp/4"), "4");
    let decision = |kind: &str| {
        format!(
            r#"{{"kind":"{kind}","model":{{"name":"co2-mlp","version":"2"}},"variant":"candidate","at":"2026-12-01T00:00:00Z","details":{{"decision":"{d}","source":"operator","candidate_version":"2","primary_version":"latest","reason":"test"}}}}"#,
            d = if kind == "model_rollback" { "rollback" } else { "promote" }
        )
    };
    let decisions: Vec<(String, String)> = (0..12)
        .map(|i| ("co2-mlp".to_string(), decision(if i % 2 == 0 { "model_promoted" } else { "model_rollback" })))
        .collect();
    send_keyed(&topics.alerts, &decisions);
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.log_text().matches("Applying a label-driven decision").count() < 12
        || worker.log_text().matches("New model version validated").count() < 2
    {
        assert!(Instant::now() < deadline, "{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let status = worker.terminate(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}:\n{}", worker.log_text());
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?} (shutdown_timeout 5 s + 5 s):\n{}",
        worker.log_text()
    );
    // The idle inference thread applied them: the last decision (a rollback) and version 4.
    let log = worker.log_text();
    assert!(log.contains("Model swapped") && log.contains("\"to\":\"4\""), "{log}");
}

/// An operator decision as `streamcast models promote|rollback` writes it, through the CLI.
fn operator(config: &str, verb: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamcast.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["models", verb, "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn with_a_decision_key_a_forged_promotion_changes_nothing_and_a_signed_one_applies() {
    let topics = Topics::create(1);
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("decision.key");
    std::fs::write(&key_file, "correct horse battery staple\n").unwrap();
    let config = topics.config(
        "co2-mlp",
        "1",
        &format!(
            "[variants]\ndecision_key_file = \"{}\"\n[variants.candidate]\nversion = \"2\"\nshare = 0.5\n[monitor]\nenabled = false\n",
            key_file.display()
        ),
    );
    let mut worker = Worker::start(&config);
    worker.wait_for_log("Worker started", Duration::from_secs(60));

    // Anyone with write access to `alerts` can publish this; without the key it is ignored.
    let forged = r#"{"kind":"model_promoted","model":{"name":"co2-mlp","version":"2"},"variant":"candidate","at":"2026-12-01T00:00:00Z","details":{"decision":"promote","source":"operator","candidate_version":"2","primary_version":"1","reason":"trust me"}}"#;
    let wrong_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong_key.path(), "not the right key at all").unwrap();
    send_keyed(&topics.alerts, &[("co2-mlp".into(), forged.into())]);
    // Signed, but with another key.
    operator(&config.replace(&key_file.display().to_string(), &wrong_key.path().display().to_string()), "promote", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.log_text().matches("Ignoring a decision").count() < 2 {
        assert!(Instant::now() < deadline, "{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = |from: usize, to: usize| -> Vec<(String, String)> {
        (from..to)
            .map(|i| {
                let s = format!("dk-{}", i % 20);
                (s.clone(), event(&format!("dk-{i:04}"), &s, &[330.0 + (i % 7) as f64, 0.5, 0.5]))
            })
            .collect()
    };
    send_keyed(&topics.input, &events(0, 100));
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 100), "{}", worker.log_text());
    assert!(preds.records.iter().any(|r| r.json()["variant"] == "candidate"), "the split still stands");
    let metrics = http_get(worker.http_port(), "/metrics");
    assert!(metrics.contains(r#"streamcast_decisions_ignored_total{reason="unsigned"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"streamcast_decisions_ignored_total{reason="bad_signature"} 1"#), "{metrics}");
    assert!(!worker.log_text().contains("Applying a label-driven decision"));

    // The operator's CLI signs with the configured key: this one applies.
    operator(&config, "promote", &[]);
    worker.wait_for_log("Applying a label-driven decision", Duration::from_secs(30));
    send_keyed(&topics.input, &events(100, 200));
    assert!(preds.read_until(Duration::from_secs(60), |r| r.len() >= 200), "{}", worker.log_text());
    let after: Vec<serde_json::Value> = preds.records[100..].iter().map(|r| r.json()).collect();
    assert!(after.iter().all(|p| p["variant"] == "primary" && p["model"]["version"] == "2"), "promoted");
}

#[test]
fn a_version_directory_that_escapes_the_root_by_symlink_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/co2-mlp/1");
    copy_bundle(&shipped, &root.path().join("co2-mlp/1"), "1");
    let topics = Topics::create(1);
    let config = with_model_root(&topics.config("co2-mlp", "latest", ""), root.path(), "100ms");
    let mut worker = Worker::start(&config);
    worker.wait_for_log("Worker started", Duration::from_secs(60));
    // A valid bundle, but it lives outside the model root.
    copy_bundle(&shipped, &outside.path().join("2"), "2");
    std::os::unix::fs::symlink(outside.path().join("2"), root.path().join("co2-mlp/2")).unwrap();
    let mut alerts = Reader::new(&topics.alerts);
    assert!(
        alerts.read_until(Duration::from_secs(30), |r| r.iter().any(|a| a.json()["kind"] == "model_rejected")),
        "{}",
        worker.log_text()
    );
    let rejected = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "model_rejected").unwrap();
    assert_eq!(rejected["model"]["version"], "2");
    assert!(rejected["details"]["reason"].as_str().unwrap().contains("outside"), "{rejected}");
    assert_eq!(rejected["details"]["serving"], "1");
    assert!(!worker.log_text().contains("Model swapped"), "{}", worker.log_text());
}
