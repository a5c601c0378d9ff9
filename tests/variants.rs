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

/// A model root holding co2-mlp 1 (primary) and 9: the same network with its target scaler's
/// mean raised by 5 ppm, so every prediction of 9 is exactly 5 ppm too high.
fn root_with_worse_candidate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for version in ["1", "9"] {
        let to = dir.path().join("co2-mlp").join(version);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(repo().join("models/co2-mlp/1/model.onnx"), to.join("model.onnx")).unwrap();
        let mut b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("models/co2-mlp/1/bundle.json")).unwrap())
                .unwrap();
        if version == "9" {
            b["version"] = "9".into();
            let mean = b["target"]["scaler"]["mean"][0].as_f64().unwrap();
            b["target"]["scaler"]["mean"][0] = (mean + 5.0).into();
            for g in b["golden"].as_array_mut().unwrap() {
                let p = g["prediction"][0].as_f64().unwrap();
                g["prediction"][0] = (p + 5.0).into();
            }
        }
        std::fs::write(to.join("bundle.json"), serde_json::to_vec(&b).unwrap()).unwrap();
    }
    dir
}

/// `n` events from the shipped CO2 record, each with its own 24-step `window`, over 40 series,
/// and the actual of each (the next week's co2).
type Keyed = Vec<(String, String)>;

fn co2_events(prefix: &str, start: usize, n: usize) -> (Keyed, Keyed) {
    let text = std::fs::read_to_string(repo().join("data/co2_weekly.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        text.lines().skip(1).map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    let (mut events, mut actuals) = (Vec::new(), Vec::new());
    for i in start..start + n {
        let series = format!("{prefix}-s{}", i % 40);
        let id = format!("{prefix}-{i:05}");
        let window: Vec<&Vec<f64>> = rows[i..i + 24].iter().collect();
        let e =
            serde_json::json!({"id": id, "series_id": series, "timestamp": "2026-11-26T19:00:00Z", "window": window});
        events.push((series.clone(), e.to_string()));
        let a = serde_json::json!({"id": id, "series_id": series, "timestamp": "2026-11-26T20:00:00Z", "actual": rows[i + 24][0]});
        actuals.push((series, a.to_string()));
    }
    (events, actuals)
}

#[test]
fn a_worse_candidate_is_rolled_back_after_enough_actuals() {
    let topics = Topics::create(3);
    let root = root_with_worse_candidate();
    let config = topics
        .config(
            "co2-mlp",
            "1",
            "[variants]\ndecision_min_joined = 100\nrollback_margin = 0.1\n\
             [variants.candidate]\nversion = \"9\"\nshare = 0.5\n\
             [monitor]\npublish_interval = \"500ms\"\nmin_joined = 1\n",
        )
        .replace(
            &format!("root = \"{}\"", repo().join("models").display()),
            &format!("root = \"{}\"", root.path().display()),
        );
    let mut worker = Worker::start(&config);
    let (events, actuals) = co2_events("rb", 0, 400);
    send_keyed(&topics.input, &events);
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(90), |r| r.len() >= 400), "{}", worker.log_text());
    let variants: Vec<String> =
        preds.records.iter().map(|r| r.json()["variant"].as_str().unwrap().to_string()).collect();
    let candidates = variants.iter().filter(|v| *v == "candidate").count();
    assert!(candidates >= 100 && 400 - candidates >= 100, "both variants get traffic: {candidates} of 400");
    send_keyed(&topics.actuals, &actuals);

    let mut alerts = Reader::new(&topics.alerts);
    let rolled = alerts.read_until(Duration::from_secs(90), |r| r.iter().any(|a| a.json()["kind"] == "model_rollback"));
    assert!(rolled, "no model_rollback:\n{}", worker.log_text());
    let a = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "model_rollback").unwrap();
    assert_eq!(a["model"]["version"], "9");
    assert_eq!(a["details"]["source"], "monitor");
    assert_eq!(a["details"]["primary_version"], "1");
    let (c, p) = (&a["details"]["candidate"], &a["details"]["primary"]);
    assert!(c["joined"].as_u64().unwrap() >= 100 && p["joined"].as_u64().unwrap() >= 100, "{a}");
    // Every candidate prediction is 5 ppm above the primary's; the primary's RMSE is well under 5.
    let (c_rmse, p_rmse) = (c["rmse"].as_f64().unwrap(), p["rmse"].as_f64().unwrap());
    assert!(p_rmse < 1.5 && (c_rmse - 5.0).abs() < 1.5 && c_rmse > p_rmse * 1.1, "{a}");

    // The replica took it (the inference thread applies it before its next batch): new events
    // of the candidate's series are served by the primary.
    worker.wait_for_log("Applying a label-driven decision", Duration::from_secs(30));
    let (more, _) = co2_events("rb", 400, 200);
    send_keyed(&topics.input, &more);
    assert!(preds.read_until(Duration::from_secs(90), |r| r.len() >= 600), "{}", worker.log_text());
    let after: Vec<serde_json::Value> = preds.records[..]
        .iter()
        .map(|r| r.json())
        .filter(|p| p["id"].as_str().unwrap()[3..].parse::<usize>().unwrap() >= 400)
        .collect();
    assert_eq!(after.len(), 200);
    assert!(after.iter().all(|p| p["variant"] == "primary" && p["model"]["version"] == "1"), "after rollback");
    assert!(worker.log_text().contains("Candidate rolled back"));
    let models: serde_json::Value = serde_json::from_str(&http_get(worker.http_port(), "/models")).unwrap();
    let candidate = models["models"].as_array().unwrap().iter().find(|m| m["version"] == "9").unwrap().clone();
    assert_eq!((candidate["traffic_share"].as_f64(), candidate["status"].as_str()), (Some(0.0), Some("rolled_back")));

    // The operator overrides the automatic decision: the latest decision wins.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamcast.toml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["models", "promote", "--config"])
        .arg(&path)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker.log_text().matches("Applying a label-driven decision").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (last, _) = co2_events("rb", 600, 100);
    send_keyed(&topics.input, &last);
    assert!(preds.read_until(Duration::from_secs(90), |r| r.len() >= 700), "{}", worker.log_text());
    let promoted = preds
        .records
        .iter()
        .map(|r| r.json())
        .filter(|p| p["id"].as_str().unwrap()[3..].parse::<usize>().unwrap() >= 600);
    assert!(promoted.into_iter().all(|p| p["variant"] == "primary" && p["model"]["version"] == "9"));
}

#[test]
fn an_operator_promotes_the_candidate_on_every_replica() {
    let topics = Topics::create(2);
    let config = topics.config(
        "co2-mlp",
        "1",
        "[variants.candidate]\nversion = \"2\"\nshare = 0.2\n[monitor]\nenabled = false\n",
    );
    let a = Worker::start(&config);
    let b = Worker::start(&config);
    let events = |from: usize, to: usize| -> Vec<(String, String)> {
        (from..to)
            .map(|i| {
                let s = format!("pr-{}", i % 50);
                (s.clone(), event(&format!("pr-{i:04}"), &s, &[330.0 + (i % 7) as f64, 0.5, 0.5]))
            })
            .collect()
    };
    send_keyed(&topics.input, &events(0, 200));
    let mut preds = Reader::new(&topics.predictions);
    assert!(preds.read_until(Duration::from_secs(90), |r| r.len() >= 200), "{}\n{}", a.log_text(), b.log_text());
    assert!(preds.records.iter().any(|r| r.json()["variant"] == "candidate"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamcast.toml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["models", "promote", "--reason", "better on the holdout", "--config"])
        .arg(&path)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for w in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !w.log_text().contains("Applying a label-driven decision") {
            assert!(std::time::Instant::now() < deadline, "{}", w.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    send_keyed(&topics.input, &events(200, 400));
    assert!(preds.read_until(Duration::from_secs(90), |r| r.len() >= 400));
    let after: Vec<serde_json::Value> = preds
        .records
        .iter()
        .map(|r| r.json())
        .filter(|p| p["id"].as_str().unwrap()[3..].parse::<usize>().unwrap() >= 200)
        .collect();
    assert_eq!(after.len(), 200);
    assert!(after.iter().all(|p| p["variant"] == "primary" && p["model"]["version"] == "2"), "after promotion");
}
