//! A/B and shadow variants against the real broker.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

#[test]
fn ab_split_matches_the_share_over_10000_series_and_is_sticky() {
    let topics = Topics::create(3);
    let config = topics.config("co2-mlp", "1", "[variants.candidate]\nversion = \"2\"\nshare = 0.3\n");
    let worker = Worker::start(&config);
    let series = 10_000;
    let events: Vec<(String, String)> = (0..2 * series)
        .map(|i| {
            let s = format!("ab-{}", i % series);
            (s.clone(), event(&format!("ab-{i:05}"), &s, &[330.0 + (i % 7) as f64, 0.5, 0.5]))
        })
        .collect();
    send_keyed(&topics.input, &events);
    let mut reader = Reader::new(&topics.predictions);
    assert!(reader.read_until(Duration::from_secs(120), |r| r.len() >= events.len()), "{}", worker.log_text());

    let mut per_series: HashMap<String, Vec<String>> = HashMap::new();
    for r in &reader.records {
        let p = r.json();
        let variant = p["variant"].as_str().unwrap().to_string();
        let version = p["model"]["version"].as_str().unwrap();
        match variant.as_str() {
            "primary" => assert_eq!(version, "1"),
            "candidate" => assert_eq!(version, "2"),
            other => panic!("unexpected variant {other}"),
        }
        per_series.entry(p["series_id"].as_str().unwrap().to_string()).or_default().push(variant);
    }
    assert_eq!(per_series.len(), series);
    assert!(per_series.values().all(|v| v.iter().all(|x| *x == v[0])), "a series switched variants");
    let candidates = per_series.values().filter(|v| v[0] == "candidate").count() as f64 / series as f64;
    // Binomial standard deviation at n = 10 000, p = 0.3 is 0.0046; allow about 6 of them.
    assert!((candidates - 0.3).abs() < 0.03, "candidate share {candidates}");
}

#[test]
fn shadow_predictions_never_reach_predictions_but_are_scored() {
    let topics = Topics::create(3);
    let shadow_topic = unique("shadow");
    create_topics(&[(&shadow_topic, 3)]);
    let config = topics
        .config(
            "co2-mlp",
            "1",
            "[variants.shadow]\nversion = \"2\"\n[monitor]\npublish_interval = \"500ms\"\nmin_joined = 1\n",
        )
        .replace(
            &format!("alerts = \"{}\"", topics.alerts),
            &format!("alerts = \"{}\"\nshadow = \"{shadow_topic}\"", topics.alerts),
        );
    let worker = Worker::start(&config);
    let n = 300;
    let events: Vec<(String, String)> = (0..n)
        .map(|i| {
            let s = format!("sh-{}", i % 6);
            (s.clone(), event(&format!("sh-{i:04}"), &s, &[331.0 + (i % 11) as f64, 0.5, -0.5]))
        })
        .collect();
    send_keyed(&topics.input, &events);
    let mut shadow = Reader::new(&shadow_topic);
    assert!(shadow.read_until(Duration::from_secs(60), |r| r.len() >= n), "{}", worker.log_text());
    assert!(shadow.records.iter().all(|r| r.json()["variant"] == "shadow" && r.json()["model"]["version"] == "2"));
    let actuals: Vec<(String, String)> = (0..n)
        .map(|i| {
            let s = format!("sh-{}", i % 6);
            let a = serde_json::json!({"id": format!("sh-{i:04}"), "series_id": s, "timestamp": "2026-11-26T20:00:00Z", "actual": 335.0});
            (s, a.to_string())
        })
        .collect();
    send_keyed(&topics.actuals, &actuals);
    let mut metrics = Reader::new(&topics.metrics);
    let scored = metrics.read_until(Duration::from_secs(60), |r| {
        r.iter().any(|m| m.json()["variant"] == "shadow" && m.json()["joined"] == n)
    });
    assert!(scored, "no shadow snapshot with {n} joined:\n{}", worker.log_text());
    let snap = metrics.records.iter().map(|m| m.json()).find(|m| m["variant"] == "shadow").unwrap();
    assert_eq!(snap["model"]["version"], "2");
    // The primary was scored too, and nothing of the shadow's went to `predictions`.
    assert!(metrics.records.iter().any(|m| m.json()["variant"] == "primary" && m.json()["joined"] == n));
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(30), |r| r.len() >= n));
    preds.settle(Duration::from_secs(1));
    assert_eq!(preds.records.len(), n);
    assert!(preds.records.iter().all(|r| r.json()["variant"] == "primary"));
}
