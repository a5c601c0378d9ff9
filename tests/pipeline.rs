//! The worker end to end against a real broker process, checked with an independent client.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;

/// Produces a bundle's fixture events, and checks every prediction against the values that
/// `scripts/build_bundles.py` computed with numpy and Python onnxruntime.
fn check_fixture(bundle: &str) {
    let topics = Topics::create(3);
    let events = jsonl(&repo().join(format!("tests/fixtures/{bundle}/events.jsonl")));
    let expected = jsonl(&repo().join(format!("tests/fixtures/{bundle}/expected.jsonl")));
    let payloads: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e["series_id"].as_str().unwrap().to_string(), e.to_string().into_bytes())).collect();
    let records: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        payloads.iter().map(|(k, p)| (Some(k.as_str()), p.as_slice(), &[][..])).collect();
    produce(&topics.input, &records);

    let mut worker = Worker::start(&topics.config(bundle, "1", ""));
    let mut reader = Reader::new(&topics.predictions);
    let all = reader.read_until(Duration::from_secs(90), |r| ids_of(r).len() >= events.len());
    assert!(all, "only {} of {} predictions:\n{}", ids_of(&reader.records).len(), events.len(), worker.log_text());
    reader.settle(Duration::from_secs(2));

    let ids = ids_of(&reader.records);
    assert_eq!(ids.len(), events.len());
    assert!(ids.values().all(|n| *n == 1), "an id was predicted twice");
    let by_id: HashMap<String, serde_json::Value> =
        reader.records.iter().map(|r| (r.json()["id"].as_str().unwrap().to_string(), r.json())).collect();
    let mut warmups = 0;
    for e in &expected {
        let id = e["id"].as_str().unwrap();
        let p = &by_id[id];
        assert_eq!(p["series_id"], e["series_id"]);
        assert_eq!(p["model"]["name"], bundle);
        assert_eq!(p["model"]["version"], "1");
        assert_eq!(p["variant"], "primary");
        assert_eq!(p["warmup"].as_bool().unwrap_or(false), e["warmup"].as_bool().unwrap(), "warmup flag of {id}");
        warmups += usize::from(e["warmup"].as_bool().unwrap());
        let got: Vec<f64> = p["prediction"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let want: Vec<f64> = e["prediction"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.len(), want.len(), "horizon of {id}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4, "{id}: worker {g}, expected {w}");
        }
    }
    assert!(warmups > 0 && warmups < events.len(), "the fixture exercises both warm-up and full windows");
    // Predictions are keyed by series id, so a series stays on one partition.
    for r in &reader.records {
        assert_eq!(r.key.as_deref(), Some(r.json()["series_id"].as_str().unwrap().as_bytes()));
    }
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "clean exit on SIGTERM, got {status}:\n{}", worker.log_text());
}

#[test]
fn flat_mlp_predictions_match_independent_computation() {
    check_fixture("co2-mlp");
}

#[test]
fn sequence_gru_predictions_match_independent_computation() {
    check_fixture("co2-gru");
}

#[test]
fn poison_messages_go_to_the_dlq_with_their_kind_and_good_events_are_predicted() {
    let topics = Topics::create(1);
    let poison = jsonl(&repo().join("tests/fixtures/poison.jsonl"));
    let oversized = format!(
        r#"{{"id":"big","series_id":"s-9","timestamp":"2026-11-26T19:00:00Z","features":[1,2,3],"note":"{}"}}"#,
        "x".repeat(5000)
    );
    let mut payloads: Vec<(String, Vec<u8>, Option<&str>)> = Vec::new();
    let mut good_ids = Vec::new();
    for (i, p) in poison.iter().enumerate() {
        let good = format!("good-{i}");
        payloads.push((good.clone(), event(&good, "s-1", &[330.0 + i as f64, 0.5, 0.5]).into_bytes(), None));
        good_ids.push(good);
        payloads.push((
            p["kind"].as_str().unwrap().into(),
            p["payload"].as_str().unwrap().as_bytes().to_vec(),
            Some("poison"),
        ));
    }
    payloads.push(("oversized".into(), oversized.clone().into_bytes(), Some("poison")));
    let too_many = r#"{"id":"p-x","series_id":"s-1","timestamp":"2026-11-26T19:00:00Z","features":[1,2,3,4]}"#;
    payloads.push(("unknown_feature".into(), too_many.as_bytes().to_vec(), Some("poison")));
    good_ids.push("good-last".into());
    payloads.push(("good-last".into(), event("good-last", "s-1", &[331.0, 0.5, 0.5]).into_bytes(), None));
    let records: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        payloads.iter().map(|(_, p, k)| (*k, p.as_slice(), &[][..])).collect();
    produce(&topics.input, &records);

    let worker = Worker::start(&topics.config("co2-mlp", "1", "[validation]\nmax_message_bytes = 4096\n"));
    let mut dlq = Reader::new(&topics.dlq);
    let n_bad = poison.len() + 2;
    assert!(
        dlq.read_until(Duration::from_secs(90), |r| r.len() >= n_bad),
        "DLQ got {} of {n_bad}:\n{}",
        dlq.records.len(),
        worker.log_text()
    );
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(30), |r| ids_of(r).len() >= good_ids.len()), "{}", worker.log_text());
    dlq.settle(Duration::from_secs(1));
    assert_eq!(dlq.records.len(), n_bad, "each poison message dead-lettered exactly once");

    // DLQ records keep the original bytes, and say why and where they came from.
    let mut expected_kinds: Vec<(Vec<u8>, String)> = poison
        .iter()
        .map(|p| (p["payload"].as_str().unwrap().as_bytes().to_vec(), p["kind"].as_str().unwrap().to_string()))
        .collect();
    expected_kinds.push((oversized.into_bytes(), "oversized".into()));
    expected_kinds.push((too_many.as_bytes().to_vec(), "unknown_feature".into()));
    for r in &dlq.records {
        let kind = &r.headers["streamcast-error-kind"];
        assert!(
            expected_kinds.iter().any(|(payload, k)| *payload == r.payload && k == kind),
            "unexpected DLQ record kind {kind} for {:?}",
            String::from_utf8_lossy(&r.payload)
        );
        assert!(!r.headers["streamcast-error"].is_empty());
        assert_eq!(r.headers["streamcast-source-topic"], topics.input);
        assert_eq!(r.headers["streamcast-source-partition"], "0");
        assert!(r.headers["streamcast-source-offset"].parse::<i64>().is_ok());
        assert_eq!(r.key.as_deref(), Some(&b"poison"[..]));
    }
    let kinds: HashSet<&str> = dlq.records.iter().map(|r| r.headers["streamcast-error-kind"].as_str()).collect();
    for k in [
        "invalid_json",
        "missing_field",
        "invalid_field",
        "missing_feature",
        "unknown_feature",
        "non_finite",
        "window_length",
        "oversized",
    ] {
        assert!(kinds.contains(k), "no {k} in the DLQ");
    }
    let ids = ids_of(&preds.records);
    for g in &good_ids {
        assert!(ids.contains_key(g), "good event {g} was not predicted");
    }
}

/// Produces `n` observation events for co2 bundles, ids `{prefix}-000000`.., on `series` series
/// keyed by series id.
fn produce_observations(topic: &str, prefix: &str, n: usize, series: usize) {
    let payloads: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let series = format!("{prefix}-s{}", i % series);
            let id = format!("{prefix}-{i:06}");
            (series.clone(), event(&id, &series, &[330.0 + (i % 17) as f64, 0.5, -0.5]).into_bytes())
        })
        .collect();
    let records: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        payloads.iter().map(|(k, p)| (Some(k.as_str()), p.as_slice(), &[][..])).collect();
    produce(topic, &records);
}

/// Reads `topic` back with confluent-kafka (`tests/e2e/read_ids.py`) until `n` distinct ids or
/// 120 s: `(distinct ids, records)`. librdkafka 2.12 (rdkafka-sys) stalls on partitions that a
/// producer killed mid-batch wrote to nisshi 0.6.0 and reads small produce batches slowly, while
/// the newer librdkafka in the Python client reads them.
fn read_ids(topic: &str, n: usize) -> (usize, usize) {
    let out = std::process::Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/e2e/read_ids.py"))
        .args([bootstrap(), topic.to_string(), n.to_string(), "120".into()])
        .output()
        .expect("run tests/e2e/read_ids.py (make test installs confluent-kafka into .venv)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (seen["distinct"].as_u64().unwrap() as usize, seen["records"].as_u64().unwrap() as usize)
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let topics = Topics::create(3);
    let n = 20_000;
    produce_observations(&topics.input, "k", n, 50);

    // Small batches so the first worker is still mid-stream when it is killed. Progress is read
    // from its metrics rather than from `predictions`: a reader fetching while the producer is
    // killed can stall on nisshi 0.6.0, which says nothing about the worker.
    let config = topics.config("co2-mlp", "1", "[batching]\nmax_batch_size = 8\nmax_wait_ms = 1\n");
    let mut first = Worker::start(&config);
    let port = first.http_port();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric_value(&http_get(port, "/metrics"), "streamcast_events_acknowledged_total") < 2_000.0 {
        assert!(std::time::Instant::now() < deadline, "first worker made no progress:\n{}", first.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill_hard();

    let second = Worker::start(&config);
    // The worker's own output is what is under test here, so an independent client reads it.
    let (distinct, records) = read_ids(&topics.predictions, n);
    assert_eq!(distinct, n, "after restart only {distinct} of {n} ids predicted:\n{}", second.log_text());
    assert!(records >= n);
}

/// A backlog behind a busy model waits in librdkafka's prefetch, not as decoded jobs: the
/// consumer stops handing events over once eight batches (at least 256 events) wait for the
/// model, far below `consumer.max_in_flight`, and every event is still predicted.
#[test]
fn a_busy_model_holds_at_most_the_unscored_limit_of_decoded_events() {
    let topics = Topics::create(3);
    let n = 10_000;
    produce_observations(&topics.input, "u", n, 200);

    // Batches of 8 make the GRU the bottleneck (a model call per 8 events) while the consumer
    // decodes far faster: the unscored limit is then max(8 × 8, 256) = 256.
    let limit = 256.0;
    let config = topics.config("co2-gru", "1", "[batching]\nmax_batch_size = 8\nmax_wait_ms = 1\n");
    let mut worker = Worker::start(&config);
    let port = worker.http_port();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut peak, mut peak_in_flight, mut samples) = (0.0f64, 0.0f64, 0);
    loop {
        let metrics = http_get(port, "/metrics");
        peak = peak.max(metric_value(&metrics, "streamcast_unscored_events"));
        peak_in_flight = peak_in_flight.max(metric_value(&metrics, "streamcast_in_flight_events"));
        samples += 1;
        if metric_value(&metrics, "streamcast_events_acknowledged_total") >= n as f64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no drain in 120 s:\n{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(2));
    }
    // One record per 100 ms may still be handed to a consumer at its cap (to serve callbacks).
    assert!(peak <= limit + 8.0, "{peak} events waited for the model (limit {limit}), {samples} samples");
    assert!(peak > 0.0, "the gauge never moved in {samples} samples:\n{}", worker.log_text());
    eprintln!("unscored peak {peak}, in flight peak {peak_in_flight}, {samples} samples");
    // Batches of 8 make small produce batches: the Python client reads them back in seconds.
    let (distinct, _) = read_ids(&topics.predictions, n);
    assert_eq!(distinct, n, "every id predicted:\n{}", worker.log_text());
}

#[test]
fn three_replicas_share_six_partitions_and_predict_every_id() {
    let topics = Topics::create(6);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::start(&topics.config("co2-mlp", "1", ""))).collect();
    for w in workers.iter_mut() {
        w.wait_for_log("Partitions assigned", Duration::from_secs(60));
    }
    let ports: Vec<u16> = workers.iter_mut().map(Worker::http_port).collect();
    // Let the group settle: members joining one after another trigger successive rebalances.
    std::thread::sleep(Duration::from_secs(8));

    let n = 3_000;
    let payloads: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let series = format!("r-{}", i % 120);
            let id = format!("r-{i:05}");
            (series.clone(), event(&id, &series, &[335.0, 0.0, 1.0]).into_bytes())
        })
        .collect();
    let records: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        payloads.iter().map(|(k, p)| (Some(k.as_str()), p.as_slice(), &[][..])).collect();
    produce(&topics.input, &records);
    let mut reader = Reader::new(&topics.predictions);
    let done = reader.read_until(Duration::from_secs(90), |r| ids_of(r).len() >= n);
    assert!(done, "only {} of {n}", ids_of(&reader.records).len());

    for (w, port) in workers.iter().zip(&ports) {
        let metrics = http_get(*port, "/metrics");
        let consumed = metric_value(&metrics, "streamcast_events_consumed_total");
        assert!(consumed > 0.0, "replica on port {port} consumed nothing:\n{}", w.log_text());
    }
}

#[test]
fn missing_topics_stop_start_up_with_exit_code_2() {
    let topics = Topics::create(1);
    let mut config = topics.config("co2-mlp", "1", "");
    config = config.replace(&topics.predictions, "no-such-topic-here");
    let out = std::process::Command::new(bin())
        .args(["run", "--config", "/dev/stdin"])
        .current_dir(repo())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(config.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-topic-here"), "{err}");
}

#[test]
fn traceparent_on_an_input_event_comes_out_on_its_prediction() {
    let topics = Topics::create(1);
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let with = event("t-1", "s-t", &[330.0, 0.5, 0.5]);
    let without = event("t-2", "s-t", &[331.0, 0.5, 0.5]);
    produce(
        &topics.input,
        &[(Some("s-t"), with.as_bytes(), &[("traceparent", trace)]), (Some("s-t"), without.as_bytes(), &[])],
    );
    let worker = Worker::start(&topics.config("co2-mlp", "1", ""));
    let mut reader = Reader::new(&topics.predictions);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 2), "{}", worker.log_text());
    for r in &reader.records {
        match r.json()["id"].as_str().unwrap() {
            "t-1" => assert_eq!(r.headers.get("traceparent").map(String::as_str), Some(trace)),
            _ => assert!(!r.headers.contains_key("traceparent")),
        }
    }
}

#[test]
fn series_windows_move_with_their_partition_across_a_restart() {
    let topics = Topics::create(2);
    let config = topics.config("co2-mlp", "1", "");
    let text = std::fs::read_to_string(repo().join("data/co2_weekly.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        text.lines().skip(1).map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    // Two series (one per partition, most likely), 40 weekly observations each, in order.
    let all: Vec<(String, String)> = (0..40)
        .flat_map(|i| ["mv-a", "mv-b"].into_iter().enumerate().map(move |(k, s)| (i, k, s)).collect::<Vec<_>>())
        .map(|(i, k, s)| {
            let row = &rows[i + 500 * k];
            (s.to_string(), event(&format!("{s}-{i:03}"), s, row))
        })
        .collect();
    let (before, after) = all.split_at(60);

    let mut first = Worker::start(&config);
    send_keyed(&topics.input, before);
    let mut reader = Reader::new(&topics.predictions);
    assert!(reader.read_until(Duration::from_secs(60), |r| ids_of(r).len() >= 60), "{}", first.log_text());
    assert!(first.terminate(Duration::from_secs(60)).success());

    // A new replica takes both partitions over and rebuilds the two windows from their history.
    let second = Worker::start(&config);
    send_keyed(&topics.input, after);
    assert!(reader.read_until(Duration::from_secs(90), |r| ids_of(r).len() >= 80), "{}", second.log_text());
    assert!(second.log_text().contains("Series windows rebuilt"), "{}", second.log_text());

    // What one uninterrupted pass gives, from `streamcast predict` over the same 80 events.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, all.iter().map(|(_, e)| format!("{e}\n")).collect::<String>()).unwrap();
    let out_path = dir.path().join("out.jsonl");
    let run = std::process::Command::new(bin())
        .args(["predict", "--model", "co2-mlp", "--version", "1", "--quiet", "-o"])
        .arg(&out_path)
        .arg(&input)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let batch = jsonl(&out_path);
    for (_, e) in after {
        let id = serde_json::from_str::<serde_json::Value>(e).unwrap()["id"].clone();
        let expected = batch.iter().find(|b| b["id"] == id).unwrap();
        let streamed = reader.records.iter().map(|r| r.json()).rfind(|p| p["id"] == id).unwrap();
        assert!(streamed.get("warmup").is_none(), "{id} went back to warm-up: {streamed}");
        assert_eq!(streamed["prediction"], expected["prediction"], "{id}");
    }
}
