//! Event-time windows on the real broker. A copy of co2-gru (window 16, H = 4) declares
//! `"frequency": "7d"`; one weekly series of the shipped fixture is streamed shuffled, with
//! duplicates, a gap and a too-late observation, and every prediction is checked against
//! `streamcast predict` on the clean, sorted series (the same rules, applied in order).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{jsonl, repo, send_keyed, Reader, Topics, Worker};
use serde_json::Value;

/// `streamcast predict` over `events` (in that order) with linear gap filling: predictions by
/// timestamp.
fn batch_reference(root: &Path, events: &[Value]) -> HashMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("clean.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input, events.iter().map(|e| format!("{e}\n")).collect::<String>()).unwrap();
    let out = Command::new(common::bin())
        .args(["predict", "--model", "co2-gru", "--gaps", "linear", "--max-fill-steps", "3", "--quiet", "--models"])
        .arg(root)
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    jsonl(&output).into_iter().map(|p| (p["timestamp"].as_str().unwrap().to_string(), p)).collect()
}

/// One series of the fixture: 50 consecutive weeks. A few of its events carry their own window,
/// which never touches the series' state; here every event is an observation.
fn observations(series: &str) -> Vec<Value> {
    jsonl(&repo().join("tests/fixtures/co2-gru/events.jsonl"))
        .into_iter()
        .filter(|e| e["series_id"] == series)
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("window");
            e
        })
        .collect()
}

/// An event's co2: its features come as an object or as an array in the bundle's order (co2
/// first).
fn co2(e: &Value) -> f64 {
    e["features"].get("co2").or_else(|| e["features"].get(0)).and_then(Value::as_f64).unwrap()
}

fn sample(metrics: &str, case: &str) -> f64 {
    let prefix = format!("streamcast_window_observations_total{{case=\"{case}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
}

#[test]
fn shuffled_duplicated_gapped_and_late_observations_follow_event_time() {
    let root = common::weekly_co2_gru_root();
    let series = observations("s-0");
    assert_eq!(series.len(), 50);
    // The clean series has a real two-week gap (weeks 20 and 21 never arrive).
    let clean: Vec<Value> =
        series.iter().enumerate().filter(|(i, _)| ![20, 21].contains(i)).map(|(_, e)| e.clone()).collect();
    let expected = batch_reference(root.path(), &clean);
    assert_eq!(expected.len(), clean.len());
    // Weeks 22 to 36 hold a filled step in their 16-step window.
    assert_eq!(expected.values().filter(|p| p["gap_filled"] == 2).count(), 14, "{expected:?}");
    assert_eq!(expected.values().filter(|p| p["gap_filled"].as_u64().is_some()).count(), 15, "{expected:?}");

    // The stream: three adjacent pairs swapped, two weeks sent twice (new ids, same step and
    // values), and at the end week 2 again, 47 steps behind: too late for a 16-step window.
    let mut stream = clean.clone();
    for i in [5, 30, 40] {
        stream.swap(i, i + 1);
    }
    let duplicate = |e: &Value, tag: &str| {
        let mut d = e.clone();
        d["id"] = format!("{}-{tag}", e["id"].as_str().unwrap()).into();
        d
    };
    stream.insert(12, duplicate(&clean[10], "dup"));
    stream.insert(36, duplicate(&clean[33], "dup"));
    stream.push(duplicate(&clean[2], "late"));
    let late_id = stream.last().unwrap()["id"].as_str().unwrap().to_string();
    // Mid-stream, an observation stamped decades ahead (windows.max_future is 1 day): refused
    // before it can move the series' newest step, so everything after it is scored as usual.
    let mut future = duplicate(&clean[24], "future");
    future["timestamp"] = "2099-01-01T00:00:00Z".into();
    let future_id = future["id"].as_str().unwrap().to_string();
    stream.insert(26, future);

    let topics = Topics::create(1);
    let extra = "[windows]\ngaps = \"linear\"\nmax_fill_steps = 3\n";
    let config = common::with_model_root(&topics.config("co2-gru", "latest", extra), root.path(), "1h");
    let mut worker = Worker::start(&config);
    send_keyed(&topics.input, &stream.iter().map(|e| ("s-0".to_string(), e.to_string())).collect::<Vec<_>>());

    let mut predictions = Reader::new(&topics.predictions);
    let mut dlq = Reader::new(&topics.dlq);
    let want = stream.len() - 2;
    assert!(
        predictions.read_until(Duration::from_secs(120), |r| r.len() >= want),
        "{} of {want} predictions:\n{}",
        predictions.records.len(),
        worker.log_text()
    );
    assert!(dlq.read_until(Duration::from_secs(30), |r| r.len() >= 2), "no dead letters:\n{}", worker.log_text());
    predictions.settle(Duration::from_secs(2));
    assert_eq!(predictions.records.len(), want);
    assert_eq!(dlq.records.len(), 2);
    let letter_id = |i: usize| serde_json::from_slice::<Value>(&dlq.records[i].payload).unwrap()["id"].clone();
    assert_eq!(dlq.records[0].headers["streamcast-error-kind"], "invalid_field");
    assert!(dlq.records[0].headers["streamcast-error"].contains("windows.max_future"), "{:?}", dlq.records[0].headers);
    assert_eq!(letter_id(0), future_id.as_str());
    assert_eq!(dlq.records[1].headers["streamcast-error-kind"], "late_observation");
    assert_eq!(letter_id(1), late_id.as_str());

    // Every prediction equals the reference for its timestamp, flags included, except the three
    // weeks that arrived before their predecessor: those saw a one-step gap, filled linearly.
    let swapped_first: Vec<&str> = [5, 30, 40].iter().map(|&i| clean[i + 1]["id"].as_str().unwrap()).collect();
    let mut compared = 0;
    for record in &predictions.records {
        let p = record.json();
        let id = p["id"].as_str().unwrap();
        let reference = &expected[p["timestamp"].as_str().unwrap()];
        if swapped_first.contains(&id) {
            let before = reference["gap_filled"].as_u64().unwrap_or(0);
            assert_eq!(p["gap_filled"].as_u64(), Some(before + 1), "{p} against {reference}");
            continue;
        }
        assert_eq!(p.get("gap_filled"), reference.get("gap_filled"), "{id}");
        assert_eq!(p.get("warmup"), reference.get("warmup"), "{id}");
        let (have, want) = (p["prediction"].as_array().unwrap(), reference["prediction"].as_array().unwrap());
        assert_eq!(have.len(), 4);
        for (h, w) in have.iter().zip(want) {
            let (h, w) = (h.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((h - w).abs() <= 1e-4 * w.abs().max(1.0), "{id}: {h} against {w}");
        }
        compared += 1;
    }
    assert_eq!(compared, want - 3);

    // Each case is counted: 3 out of order, 2 duplicates, 1 late; steps filled: the real gap's
    // 2 and one per swapped pair.
    let port = worker.http_port();
    let metrics = common::http_get(port, "/metrics");
    let counts: Vec<f64> = ["out_of_order", "duplicate", "late", "off_grid", "future", "gap_reset", "gap_filled_step"]
        .iter()
        .map(|c| sample(&metrics, c))
        .collect();
    assert_eq!(counts, [3.0, 2.0, 1.0, 0.0, 1.0, 0.0, 5.0], "{metrics}");
    assert_eq!(common::metric_value(&metrics, "streamcast_events_rejected_total{kind=\"late_observation\"}"), 1.0);
    assert_eq!(common::metric_value(&metrics, "streamcast_events_rejected_total{kind=\"invalid_field\"}"), 1.0);
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.log_text());
}

/// `monitor.join_by = "time"`: actuals are `{series_id, timestamp, actual}` with no id, and each
/// one scores step h of the forecast issued h weeks earlier. Every step's RMSE, MAE and bias in
/// the snapshot equal a computation here that aligns the forecasts read back from `predictions`
/// with the observed values by target time.
#[test]
fn actuals_addressed_by_time_are_scored_step_by_step() {
    let root = common::weekly_co2_gru_root();
    let series = observations("s-1");
    let topics = Topics::create(2);
    let extra = "[monitor]\njoin_by = \"time\"\npublish_interval = \"500ms\"\nmin_joined = 1\n";
    let config = common::with_model_root(&topics.config("co2-gru", "latest", extra), root.path(), "1h");
    let worker = Worker::start(&config);
    send_keyed(&topics.input, &series.iter().map(|e| ("s-1".to_string(), e.to_string())).collect::<Vec<_>>());
    // The actuals come once the forecasts are out, in time order, as a real feed would: each
    // then finds the observation the naive forecast uses, and MASE covers every pair.
    let mut out = Reader::new(&topics.predictions);
    assert!(out.read_until(Duration::from_secs(120), |r| r.len() >= series.len()), "{}", worker.log_text());
    let actuals: Vec<(String, String)> = series
        .iter()
        .map(|e| {
            let a = serde_json::json!({"series_id": "s-1", "timestamp": e["timestamp"], "actual": co2(e)});
            ("s-1".to_string(), a.to_string())
        })
        .collect();
    send_keyed(&topics.actuals, &actuals);

    assert_steps_match(&topics, &worker, &series, &series.iter().map(co2).collect::<Vec<_>>());
}

/// Reads the predictions of `series` back, aligns forecast i's step h with `observed[i + h]`,
/// and checks every step's RMSE, MAE, bias and MASE (against the naive forecast: the value
/// observed at issue time, `observed[i]`) in a snapshot against that alignment.
fn assert_steps_match(topics: &Topics, worker: &Worker, series: &[Value], observed: &[f64]) {
    let mut predictions = Reader::new(&topics.predictions);
    assert!(predictions.read_until(Duration::from_secs(120), |r| r.len() >= series.len()), "{}", worker.log_text());
    // The independent alignment: forecast i, step h targets week i + h.
    let week_of: HashMap<String, usize> =
        series.iter().enumerate().map(|(i, e)| (e["timestamp"].as_str().unwrap().to_string(), i)).collect();
    let mut errors: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut naive: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for record in &predictions.records {
        let p = record.json();
        let i = week_of[p["timestamp"].as_str().unwrap()];
        for (h, value) in p["prediction"].as_array().unwrap().iter().enumerate() {
            if let Some(actual) = observed.get(i + h + 1) {
                errors[h].push(value.as_f64().unwrap() - actual);
                naive[h].push(observed[i] - actual);
            }
        }
    }
    let joined: usize = errors.iter().map(Vec::len).sum();
    assert_eq!(joined, 49 + 48 + 47 + 46);

    let mut metrics = Reader::new(&topics.metrics);
    let found = metrics.read_until(Duration::from_secs(60), |r| r.iter().any(|x| x.json()["joined"] == joined));
    assert!(
        found,
        "no snapshot with {joined} joined: {:?}\n{}",
        metrics.records.last().map(|r| r.json()),
        worker.log_text()
    );
    let snap = metrics.records.iter().map(|r| r.json()).find(|s| s["joined"] == joined).unwrap();
    let close = |what: &str, got: &Value, want: f64| {
        let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{what}: {got} against {want}");
    };
    for (h, e) in errors.iter().enumerate() {
        let n = e.len() as f64;
        let step = &snap["per_step"][h];
        assert_eq!(step["count"].as_u64(), Some(e.len() as u64), "{snap}");
        close(&format!("step {} rmse", h + 1), &step["rmse"], (e.iter().map(|x| x * x).sum::<f64>() / n).sqrt());
        close(&format!("step {} mae", h + 1), &step["mae"], e.iter().map(|x| x.abs()).sum::<f64>() / n);
        close(&format!("step {} bias", h + 1), &step["bias"], e.iter().sum::<f64>() / n);
        let naive_mae = naive[h].iter().map(|x| x.abs()).sum::<f64>() / n;
        let mase = e.iter().map(|x| x.abs()).sum::<f64>() / n / naive_mae;
        close(&format!("step {} mase", h + 1), &step["mase"], mase);
        eprintln!("step {}: RMSE {:.4}, MASE {} over {} forecasts", h + 1, step["rmse"], step["mase"], e.len());
    }
}

/// `monitor.actuals_from_input`: no actuals topic at all. The co2 observations on `input_data`
/// score the forecasts (as the worker read them: f32); a stray record on the actuals topic is
/// not scored.
#[test]
fn the_input_stream_is_its_own_ground_truth() {
    let root = common::weekly_co2_gru_root();
    let series = observations("s-2");
    let topics = Topics::create(2);
    let extra =
        "[monitor]\njoin_by = \"time\"\nactuals_from_input = true\npublish_interval = \"500ms\"\nmin_joined = 1\n";
    let config = common::with_model_root(&topics.config("co2-gru", "latest", extra), root.path(), "1h");
    let worker = Worker::start(&config);
    let stray = serde_json::json!({"series_id": "s-2", "timestamp": series[10]["timestamp"], "actual": 0.0});
    send_keyed(&topics.actuals, &[("s-2".to_string(), stray.to_string())]);
    send_keyed(&topics.input, &series.iter().map(|e| ("s-2".to_string(), e.to_string())).collect::<Vec<_>>());
    let observed: Vec<f64> = series.iter().map(|e| f64::from(co2(e) as f32)).collect();
    assert_steps_match(&topics, &worker, &series, &observed);
}

/// Joining by time needs the bundle's step: without one, start-up stops with exit 2 naming both.
#[test]
fn join_by_time_without_a_frequency_stops_start_up() {
    let topics = Topics::create(1);
    let log = Worker::start(&topics.config("co2-mlp", "1", "[monitor]\njoin_by = \"time\"\n")).setup_failure();
    assert!(log.contains("monitor.join_by") && log.contains("frequency"), "{log}");
}
