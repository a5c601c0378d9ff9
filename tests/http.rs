//! The HTTP surface of a running worker against the real broker, with a plain HTTP client.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn readyz_metrics_and_predict_agree_with_the_stream() {
    let topics = Topics::create(1);
    let mut worker = Worker::start(
        &topics
            .config("co2-gru", "1", "[cache]\nenabled = true\n")
            .replace("[http]\nlisten = \"127.0.0.1:0\"", "[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536"),
    );
    let port = worker.http_port();
    assert_eq!(http(port, "GET", "/healthz", b"").0, 200);

    // Ready once assigned; before that the answer names the reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(port, "GET", "/readyz", b"");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(body.contains("reasons"), "{body}");
        assert!(Instant::now() < deadline, "never ready:\n{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let models: serde_json::Value = serde_json::from_str(&http_get(port, "/models")).unwrap();
    assert_eq!(models["models"][0]["execution_provider"], "cpu");

    // Stream the fixture; metrics move with it.
    let before = metric_value(&http_get(port, "/metrics"), "streamcast_events_consumed_total");
    let events = jsonl(&repo().join("tests/fixtures/co2-gru/events.jsonl"));
    let payloads: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e["series_id"].as_str().unwrap().to_string(), e.to_string().into_bytes())).collect();
    let records: Vec<(Option<&str>, &[u8], &[(&str, &str)])> =
        payloads.iter().map(|(k, p)| (Some(k.as_str()), p.as_slice(), &[][..])).collect();
    produce(&topics.input, &records);
    let mut reader = Reader::new(&topics.predictions);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= events.len()), "{}", worker.log_text());
    let metrics = http_get(port, "/metrics");
    assert_eq!(metric_value(&metrics, "streamcast_events_consumed_total") - before, events.len() as f64);
    assert!(metric_value(&metrics, "streamcast_predictions_total{variant=\"primary\"}") >= events.len() as f64);
    assert!(metrics.contains("streamcast_end_to_end_latency_seconds_bucket"));
    assert!(metrics.contains("streamcast_inference_duration_seconds_count"));

    // `streamcast predict` over the same file gives the stream's predictions, event for event.
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().join("batch.jsonl");
    let run = std::process::Command::new(bin())
        .args(["predict", "--model", "co2-gru", "--version", "1", "--quiet", "-o"])
        .arg(&out_path)
        .arg(repo().join("tests/fixtures/co2-gru/events.jsonl"))
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let batch = jsonl(&out_path);
    assert_eq!(batch.len(), events.len());
    for b in &batch {
        let streamed = reader.records.iter().map(|r| r.json()).find(|p| p["id"] == b["id"]).unwrap();
        assert_eq!(b["prediction"], streamed["prediction"], "{}", b["id"]);
        assert_eq!(b.get("warmup"), streamed.get("warmup"), "{}", b["id"]);
    }

    // Lag comes from librdkafka's statistics, every 5 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(port, "/metrics").contains("streamcast_consumer_lag_messages{partition=\"0\"} 0") {
        assert!(Instant::now() < deadline, "no consumer lag metric:\n{}", http_get(port, "/metrics"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(http_get(port, "/metrics").contains("streamcast_producer_queue_messages"));

    // The events that carry their own window, posted as one batch, get the stream's predictions.
    let windowed: Vec<&serde_json::Value> = events.iter().filter(|e| e.get("window").is_some()).collect();
    assert!(windowed.len() > 5);
    let (status, body) = http(port, "POST", "/predict", serde_json::to_string(&windowed).unwrap().as_bytes());
    assert_eq!(status, 200, "{body}");
    let answers: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(answers.len(), windowed.len());
    for (event, answer) in windowed.iter().zip(&answers) {
        assert_eq!(answer["id"], event["id"]);
        let streamed = reader.records.iter().map(|r| r.json()).find(|p| p["id"] == event["id"]).unwrap();
        let (a, b) = (answer["prediction"].as_array().unwrap(), streamed["prediction"].as_array().unwrap());
        assert_eq!(a.len(), 4);
        for (x, y) in a.iter().zip(b) {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-4, "{x} vs {y}");
        }
    }
    // Those windows were scored by the stream already: /predict got them from the cache.
    let metrics = http_get(port, "/metrics");
    let hits = metric_value(&metrics, "streamcast_cache_hits_total");
    assert!(
        hits >= windowed.len() as f64,
        "cache hits {hits}: {}",
        metrics.lines().filter(|l| l.contains("cache")).collect::<Vec<_>>().join(" | ")
    );
    assert!(metric_value(&metrics, "streamcast_cache_misses_total") >= (events.len() - windowed.len()) as f64);

    // A single event gets a single object back.
    let (status, body) = http(port, "POST", "/predict", serde_json::to_string(windowed[0]).unwrap().as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"], windowed[0]["id"]);

    // Bad requests get a 4xx with a JSON error.
    let no_window = events.iter().find(|e| e.get("window").is_none()).unwrap();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json"),
        (serde_json::to_vec(no_window).unwrap(), 400, "window_length"),
        (format!("[{}, {{\"id\": 3}}]", windowed[0]).into_bytes(), 400, "invalid_field"),
        (vec![b' '; 70_000], 413, "oversized"),
    ];
    for (body, want, kind) in cases {
        let (status, text) = http(port, "POST", "/predict", &body);
        assert_eq!(status, want, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body: {text}"));
        assert_eq!(v["kind"], kind, "{text}");
    }
    assert!(worker.terminate(Duration::from_secs(30)).success());
}

#[test]
fn readyz_tells_an_idle_extra_replica_from_one_that_holds_a_partition() {
    let topics = Topics::create(1);
    let config = topics.config("co2-mlp", "1", "[monitor]\nenabled = false\n");
    let mut a = Worker::start(&config);
    let mut b = Worker::start(&config);
    let (pa, pb) = (a.http_port(), b.http_port());
    // One partition, two replicas: once the group settles, one holds it and one is idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sa, ba) = http(pa, "GET", "/readyz", b"");
        let (sb, bb) = http(pb, "GET", "/readyz", b"");
        let idle = |s: u16, body: &str| s == 503 && body.contains("idle: this replica holds no input partition");
        if (sa == 200 && idle(sb, &bb)) || (sb == 200 && idle(sa, &ba)) {
            break;
        }
        assert!(Instant::now() < deadline, "{sa} {ba}\n{sb} {bb}\n{}\n{}", a.log_text(), b.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
}
