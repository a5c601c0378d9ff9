//! A quantile bundle on the real broker. The shipped co2-quantile (linear quantile regression,
//! H = 4, levels 0.05/0.5/0.95, weekly `frequency`) serves 120 consecutive weeks of one series,
//! with the input as its own ground truth. Its served quantiles must equal scikit-learn's own
//! predictions of the same windows (the fixture, written by `scripts/build_bundles.py`), come
//! ordered, carry the 0.5 level as the point forecast, and the monitor's pinball loss must equal
//! the loss recomputed here from the served quantiles and the observations.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{jsonl, repo, send_keyed, Reader, Topics, Worker};
use serde_json::Value;

const LEVELS: [f64; 3] = [0.05, 0.5, 0.95];

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1.0)
}

#[test]
fn a_quantile_bundle_serves_ordered_quantiles_and_the_monitor_scores_its_pinball_loss() {
    let events = jsonl(&repo().join("tests/fixtures/co2-quantile/events.jsonl"));
    let expected: HashMap<String, Value> = jsonl(&repo().join("tests/fixtures/co2-quantile/expected.jsonl"))
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e))
        .collect();
    let n = events.len();
    let topics = Topics::create(1);
    let extra =
        "[monitor]\njoin_by = \"time\"\nactuals_from_input = true\npublish_interval = \"200ms\"\nmin_joined = 1\n";
    let worker = Worker::start(&topics.config("co2-quantile", "1", extra));
    send_keyed(&topics.input, &events.iter().map(|e| ("q-0".to_string(), e.to_string())).collect::<Vec<_>>());

    let mut predictions = Reader::new(&topics.predictions);
    assert!(predictions.read_until(Duration::from_secs(120), |r| r.len() >= n), "{}", worker.log_text());
    let predictions: Vec<Value> = predictions.records.iter().map(|r| r.json()).collect();
    for p in &predictions {
        let want = &expected[p["id"].as_str().unwrap()];
        let q = &p["quantiles"];
        assert_eq!(q["levels"], serde_json::json!(LEVELS), "{p}");
        assert_eq!(p["warmup"].as_bool().unwrap_or(false), want["warmup"], "{p}");
        for h in 0..4 {
            let values: Vec<f64> = q["values"][h].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(values.windows(2).all(|w| w[0] <= w[1]), "step {} not ordered: {p}", h + 1);
            assert_eq!(p["prediction"][h].as_f64().unwrap(), values[1], "the point is the 0.5 quantile: {p}");
            for (j, v) in values.iter().enumerate() {
                let w = want["quantiles"]["values"][h][j].as_f64().unwrap();
                assert!(close(*v, w, 1e-4), "step {} level {}: {v} against scikit-learn's {w}", h + 1, LEVELS[j]);
            }
        }
    }

    // Pinball loss per level over every joined step: forecast i, step h, judged by week i + h.
    let week: HashMap<&str, usize> =
        events.iter().enumerate().map(|(i, e)| (e["timestamp"].as_str().unwrap(), i)).collect();
    let observed: Vec<f64> = events.iter().map(|e| f64::from(e["features"]["co2"].as_f64().unwrap() as f32)).collect();
    let mut losses = vec![Vec::new(); LEVELS.len()];
    for p in &predictions {
        let i = week[p["timestamp"].as_str().unwrap()];
        for h in 0..4 {
            let Some(y) = observed.get(i + h + 1) else { continue };
            for (j, tau) in LEVELS.iter().enumerate() {
                let q = p["quantiles"]["values"][h][j].as_f64().unwrap();
                let d = y - q;
                losses[j].push(if d >= 0.0 { tau * d } else { (tau - 1.0) * d });
            }
        }
    }
    let joined = losses[0].len();
    assert_eq!(joined, (n - 1) + (n - 2) + (n - 3) + (n - 4));
    let complete = |s: &Value| s["pinball"][0]["count"].as_u64() == Some(joined as u64);
    let snapshot = common::snapshot_where(&topics.metrics, &worker, complete);
    for (j, tau) in LEVELS.iter().enumerate() {
        let entry = &snapshot["pinball"][j];
        assert_eq!(entry["level"], *tau);
        let want = losses[j].iter().sum::<f64>() / joined as f64;
        let got = entry["loss"].as_f64().unwrap();
        assert!(close(got, want, 1e-9), "level {tau}: pinball {got} against {want}");
        eprintln!("level {tau}: pinball loss {got:.4} over {joined} joined steps");
    }
    // The same in Prometheus: `streamcast_monitor_pinball_loss{..., quantile="τ"}`.
    let mut worker = worker;
    let text = common::http_get(worker.http_port(), "/metrics");
    for (j, tau) in LEVELS.iter().enumerate() {
        let label = format!("quantile=\"{tau}\"");
        let line = text
            .lines()
            .find(|l| l.starts_with("streamcast_monitor_pinball_loss{") && l.contains(&label))
            .unwrap_or_else(|| panic!("no pinball gauge for {tau}:\n{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let want = snapshot["pinball"][j]["loss"].as_f64().unwrap();
        assert!(close(value, want, 1e-9), "{line} against the snapshot's {want}");
    }
}
