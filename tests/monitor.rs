//! The monitor side task (`streamcast run --role monitor`) against a real broker process.
//! Predictions, actuals and inputs are produced by the test itself, so every expected number is
//! computed here, independently of the worker.

mod common;

use std::time::Duration;

use common::*;

fn monitor_config(topics: &Topics, monitor: &str) -> String {
    topics.config("co2-mlp", "1", &format!("[monitor]\npublish_interval = \"500ms\"\n{monitor}\n"))
}

fn start_monitor(config: &str) -> Worker {
    Worker::start_args(config, &["--role", "monitor"])
}

fn prediction(id: &str, series: &str, value: f64) -> String {
    serde_json::json!({
        "id": id, "series_id": series, "timestamp": "2026-11-26T19:00:00Z", "prediction": [value],
        "model": {"name": "co2-mlp", "version": "1"}, "variant": "primary", "latency_ms": 1.0,
        "produced_at": "2026-11-26T19:00:00.001Z"
    })
    .to_string()
}

fn actual(id: &str, series: &str, value: f64) -> String {
    serde_json::json!({"id": id, "series_id": series, "timestamp": "2026-11-26T20:00:00Z", "actual": value}).to_string()
}

/// The latest snapshot that satisfies `done`, or a panic with the last one seen.
fn wait_snapshot(
    topics: &Topics,
    worker: &Worker,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut reader = Reader::new(&topics.metrics);
    let found = reader.read_until(timeout, |r| r.iter().any(|x| done(&x.json())));
    let last = reader.records.last().map(|r| r.json());
    assert!(found, "no matching snapshot; last: {last:?}\n{}", worker.log_text());
    reader.records.iter().map(|r| r.json()).find(|j| done(j)).unwrap()
}

fn value_of(i: usize) -> (f64, f64) {
    // Prediction and actual of event i: errors of varying sign and size.
    let p = 340.0 + (i % 13) as f64 * 0.7;
    let a = p - ((i % 7) as f64 - 3.0) * 0.45;
    (p, a)
}

/// `replicas` processes in role `all` (one worker and one monitor each) on `config`.
fn start_replicas(config: &str, replicas: usize) -> Vec<Worker> {
    (0..replicas).map(|_| Worker::start(config)).collect()
}

/// Which of `workers` leads the monitor election, by `streamcast_monitor_leader`; panics unless
/// exactly one does.
fn the_leader(workers: &mut [Worker]) -> usize {
    let leaders: Vec<usize> = (0..workers.len())
        .filter(|&i| {
            let port = workers[i].http_port();
            metric_value(&http_get(port, "/metrics"), "streamcast_monitor_leader") == 1.0
        })
        .collect();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    leaders[0]
}

/// The late/early/missing/duplicate scenario's inputs over `n` predictions (a multiple of 18):
/// (early actuals, predictions, late actuals). Of every 18: 5 actuals come before their
/// prediction, 10 after, 3 never; the first n/18 predictions and late actuals are duplicated, and
/// n/9 actuals have no prediction at all.
type Keyed = Vec<(String, String)>;
fn join_scenario(n: usize) -> (Keyed, Keyed, Keyed) {
    assert_eq!(n % 18, 0);
    let id = |i: usize| format!("m-{i:05}");
    let series = |i: usize| format!("s-{}", i % 9);
    let (dups, early, late) = (n / 18, n * 5 / 18, n * 15 / 18);
    let mut early_actuals = Vec::new();
    let mut predictions = Vec::new();
    let mut late_actuals = Vec::new();
    for i in 0..n {
        let (p, a) = value_of(i);
        predictions.push((series(i), prediction(&id(i), &series(i), p)));
        if i < dups {
            predictions.push((series(i), prediction(&id(i), &series(i), p))); // duplicate prediction
        }
        if i < early {
            early_actuals.push((series(i), actual(&id(i), &series(i), a)));
        } else if i < late {
            late_actuals.push((series(i), actual(&id(i), &series(i), a)));
            if i < early + dups {
                late_actuals.push((series(i), actual(&id(i), &series(i), a))); // duplicate actual
            }
        } // the rest: never
    }
    for j in 0..n / 9 {
        late_actuals.push(("s-x".into(), actual(&format!("orphan-{j}"), "s-x", 1.0)));
    }
    (early_actuals, predictions, late_actuals)
}

/// RMSE, MAE and bias of the scenario's joined pairs (the first 15 of every 18), computed here.
fn expected_errors(n: usize) -> (f64, f64, f64) {
    let joined = n * 15 / 18;
    let errors: Vec<f64> = (0..joined).map(|i| value_of(i).0 - value_of(i).1).collect();
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / joined as f64).sqrt();
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / joined as f64;
    let bias = errors.iter().sum::<f64>() / joined as f64;
    (rmse, mae, bias)
}

fn assert_close(what: &str, got: &serde_json::Value, want: f64) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what} is {got}"));
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{what} {got} vs {want}");
}

/// The scenario over `n` predictions through `replicas` replicas in role `all`: the group's
/// snapshot has the exact counts and errors, and exactly one replica leads.
fn join_scenario_through(n: usize, replicas: usize) {
    let topics = Topics::create(3);
    let (early, predictions, late) = join_scenario(n);
    send_keyed(&topics.actuals, &early);
    // A window that holds every joined pair, so the numbers do not depend on join order.
    let monitor = "join_ttl = \"30s\"\nmin_joined = 1\nwindow_count = 100000";
    let mut workers = start_replicas(&monitor_config(&topics, monitor), replicas);
    for w in workers.iter_mut() {
        w.wait_for_log("Worker started.", Duration::from_secs(60));
    }
    send_keyed(&topics.predictions, &predictions);
    std::thread::sleep(Duration::from_secs(1));
    send_keyed(&topics.actuals, &late);
    let (joined, never, orphans) = (n * 15 / 18, n * 3 / 18, n / 9);
    let snap = wait_snapshot(&topics, &workers[0], Duration::from_secs(120), |s| {
        s["joined"] == joined && s["expired"] == never && s["unmatched_actuals"] == orphans && s["pending"] == 0
    });
    let (rmse, mae, bias) = expected_errors(n);
    assert_close("rmse", &snap["rmse"], rmse);
    assert_close("mae", &snap["mae"], mae);
    assert_close("bias", &snap["bias"], bias);
    // The leader's counters give the same numbers in PromQL (deploy/prometheus-rules.yml).
    let leader = the_leader(&mut workers);
    let port = workers[leader].http_port();
    let metrics = http_get(port, "/metrics");
    let value = |name: &str| metric_value(&metrics, name);
    let count = value("streamcast_monitor_errors_total");
    assert_eq!(count, joined as f64, "{metrics}");
    assert_close("counter rmse", &(value("streamcast_monitor_squared_error_total") / count).sqrt().into(), rmse);
    assert_close("counter mae", &(value("streamcast_monitor_absolute_error_total") / count).into(), mae);
    // Its lag per topic, from librdkafka's statistics (every 5 s): caught up on predictions.
    let lag = format!("streamcast_monitor_lag_messages{{topic=\"{}\"}} 0", topics.predictions);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !http_get(port, "/metrics").contains(&lag) {
        assert!(std::time::Instant::now() < deadline, "no {lag}:\n{}", http_get(port, "/metrics"));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// 20 016 predictions (and their late, early, missing and duplicated actuals) through one
/// replica and then through three.
#[test]
fn group_numbers_are_the_same_with_one_and_three_replicas() {
    join_scenario_through(20_016, 1);
    join_scenario_through(20_016, 3);
}

/// The leader is SIGKILLed with every prediction waiting; another replica takes over from the
/// committed watermarks and the final numbers are still exact.
#[test]
fn when_the_leading_replica_dies_another_takes_over_and_the_numbers_hold() {
    let topics = Topics::create(3);
    let (early, predictions, late) = join_scenario(180);
    send_keyed(&topics.actuals, &early);
    let mut workers = start_replicas(&monitor_config(&topics, "join_ttl = \"60s\"\nmin_joined = 1"), 3);
    for w in workers.iter_mut() {
        w.wait_for_log("Worker started.", Duration::from_secs(60));
    }
    send_keyed(&topics.predictions, &predictions);
    // 50 joined at once (their actuals came first), 130 distinct predictions wait.
    wait_snapshot(&topics, &workers[0], Duration::from_secs(60), |s| s["joined"] == 50 && s["pending"] == 130);
    // One more publish, so the watermarks are committed.
    std::thread::sleep(Duration::from_secs(1));
    let leader = the_leader(&mut workers);
    let mut before = Reader::new(&topics.metrics);
    before.settle(Duration::from_millis(500));
    workers[leader].kill_hard();
    let killed = std::time::Instant::now();
    let leads = |w: &Worker| w.log_text().matches("Monitor leads the group").count();
    let led_before: Vec<usize> = workers.iter().map(leads).collect();
    while !workers.iter().enumerate().any(|(i, w)| i != leader && leads(w) > led_before[i]) {
        assert!(killed.elapsed() < Duration::from_secs(60), "nobody took over");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("failover: a replica took the lead {:.1} s after the kill", killed.elapsed().as_secs_f64());
    // The next snapshot comes from the new leader (the old one is dead).
    let seen = before.records.len();
    let mut after = Reader::new(&topics.metrics);
    assert!(after.read_until(Duration::from_secs(60), |r| r.len() > seen), "no snapshot after the failover");
    let took = killed.elapsed();
    eprintln!("failover: a new leader published {:.1} s after the kill", took.as_secs_f64());
    // session.timeout.ms (6 s) + one publish interval (0.5 s), plus the rejoin and the re-read.
    assert!(took <= Duration::from_secs(12), "took {took:?}");
    send_keyed(&topics.actuals, &late);
    // (The 20 orphan actuals wait out the 60 s join TTL before they count as unmatched.)
    let snap = wait_snapshot(&topics, &workers[(leader + 1) % 3], Duration::from_secs(60), |s| {
        s["joined"] == 150 && s["pending"] == 30
    });
    let (rmse, mae, bias) = expected_errors(180);
    assert_close("rmse", &snap["rmse"], rmse);
    assert_close("mae", &snap["mae"], mae);
    assert_close("bias", &snap["bias"], bias);
    let mut alive: Vec<Worker> =
        workers.into_iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, w)| w).collect();
    the_leader(&mut alive);
}

fn prediction_of(id: &str, version: &str, variant: &str, value: f64) -> String {
    serde_json::json!({
        "id": id, "series_id": "s", "timestamp": "2026-11-26T19:00:00Z", "prediction": [value],
        "model": {"name": "co2-mlp", "version": version}, "variant": variant, "latency_ms": 1.0,
        "produced_at": "2026-11-26T19:00:00.001Z"
    })
    .to_string()
}

/// A model root with co2-mlp versions `to`, each a copy of the shipped `from` with its version
/// rewritten.
fn model_root(versions: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (from, to) in versions {
        let dir = root.path().join("co2-mlp").join(to);
        std::fs::create_dir_all(&dir).unwrap();
        let src = repo().join("models/co2-mlp").join(from);
        std::fs::copy(src.join("model.onnx"), dir.join("model.onnx")).unwrap();
        let mut b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("bundle.json")).unwrap()).unwrap();
        b["version"] = (*to).into();
        std::fs::write(dir.join("bundle.json"), serde_json::to_vec(&b).unwrap()).unwrap();
    }
    root
}

/// One voice for decisions: three replicas in role `all`, a worse candidate, predictions spread
/// over every partition, and exactly one `model_rollback`, decided on all of them.
#[test]
fn three_replicas_roll_a_worse_candidate_back_once_on_group_data() {
    let topics = Topics::create(3);
    let root = model_root(&[("1", "1"), ("1", "9")]);
    let config = with_model_root(
        &monitor_config(
            &topics,
            "min_joined = 1\n[variants]\ndecision_min_joined = 300\nrollback_margin = 0.1\n\
         [variants.candidate]\nversion = \"9\"\nshare = 0.5\n",
        ),
        root.path(),
        "0s",
    );
    let mut replicas = start_replicas(&config, 3);
    for w in replicas.iter_mut() {
        w.wait_for_log("Worker started.", Duration::from_secs(60));
    }
    // 400 pairs per variant over 40 series (so every partition has some): no single partition,
    // and so no replica's share, holds the 300 each variant needs.
    let series = |i: usize| format!("s-{}", i % 40);
    let mut preds = Vec::new();
    let mut acts = Vec::new();
    for i in 0..400 {
        let (p, c) = (format!("p-{i}"), format!("c-{i}"));
        let mut primary: serde_json::Value = serde_json::from_str(&prediction_of(&p, "1", "primary", 100.0)).unwrap();
        primary["series_id"] = series(i).into();
        let mut candidate: serde_json::Value =
            serde_json::from_str(&prediction_of(&c, "9", "candidate", 100.0)).unwrap();
        candidate["series_id"] = series(i).into();
        preds.push((series(i), primary.to_string()));
        preds.push((series(i), candidate.to_string()));
        acts.push((series(i), actual(&p, &series(i), 100.5)));
        acts.push((series(i), actual(&c, &series(i), 103.0)));
    }
    send_keyed(&topics.predictions, &preds);
    send_keyed(&topics.actuals, &acts);
    let mut alerts = Reader::new(&topics.alerts);
    let rolled = alerts.read_until(Duration::from_secs(60), |r| r.iter().any(|a| a.json()["kind"] == "model_rollback"));
    assert!(rolled, "no model_rollback:\n{}", replicas[0].log_text());
    alerts.settle(Duration::from_secs(3));
    let rollbacks = alerts_of_kind(&alerts.records, "model_rollback");
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    let (c, p) = (&rollbacks[0]["details"]["candidate"], &rollbacks[0]["details"]["primary"]);
    assert!(c["joined"].as_u64().unwrap() >= 300 && p["joined"].as_u64().unwrap() >= 300, "{}", rollbacks[0]);
    assert_close("candidate rmse", &c["rmse"], 3.0);
    assert_close("primary rmse", &p["rmse"], 0.5);
}

/// The monitor follows a hot reload it sees on `predictions`: snapshots under the new version,
/// and the candidate compared with the new primary.
#[test]
fn after_a_hot_reload_the_monitor_scores_and_decides_against_the_new_primary() {
    let topics = Topics::create(3);
    let root = model_root(&[("1", "1"), ("2", "2"), ("1", "9")]);
    let config = with_model_root(
        &monitor_config(
            &topics,
            "min_joined = 1\n[variants]\ndecision_min_joined = 100\nrollback_margin = 0.1\n\
         [variants.candidate]\nversion = \"9\"\nshare = 0.5\n",
        ),
        root.path(),
        "0s",
    );
    let mut monitor = start_monitor(&config);
    monitor.wait_for_log("Monitor leads the group", Duration::from_secs(60));
    let key = |_: &str| "s".to_string();
    let mut preds: Vec<(String, String)> =
        (0..20).map(|i| (key(""), prediction_of(&format!("a-{i}"), "1", "primary", 100.0))).collect();
    // Hot-reloaded: version 2 serves the primary from here on.
    preds.extend((0..200).map(|i| (key(""), prediction_of(&format!("b-{i}"), "2", "primary", 100.0))));
    preds.extend((0..200).map(|i| (key(""), prediction_of(&format!("c-{i}"), "9", "candidate", 100.0))));
    send_keyed(&topics.predictions, &preds);
    let mut acts: Vec<(String, String)> = (0..200).map(|i| (key(""), actual(&format!("b-{i}"), "s", 100.5))).collect();
    acts.extend((0..200).map(|i| (key(""), actual(&format!("c-{i}"), "s", 103.0))));
    send_keyed(&topics.actuals, &acts);
    monitor.wait_for_log("Monitor follows the served model.", Duration::from_secs(60));
    let snap = wait_snapshot(&topics, &monitor, Duration::from_secs(60), |s| {
        s["model"]["version"] == "2" && s["variant"] == "primary" && s["joined"] == 200
    });
    assert_close("rmse", &snap["rmse"], 0.5);
    let mut alerts = Reader::new(&topics.alerts);
    let rolled = alerts.read_until(Duration::from_secs(60), |r| r.iter().any(|a| a.json()["kind"] == "model_rollback"));
    assert!(rolled, "no model_rollback:\n{}", monitor.log_text());
    let a = alerts.records.iter().map(|a| a.json()).find(|a| a["kind"] == "model_rollback").unwrap();
    assert_eq!((&a["details"]["primary_version"], &a["model"]["version"]), (&"2".into(), &"9".into()), "{a}");
    assert_close("primary rmse", &a["details"]["primary"]["rmse"], 0.5);
}

#[test]
fn rmse_and_counts_are_exact_with_late_early_missing_and_duplicate_actuals() {
    let topics = Topics::create(3);
    let id = |i: usize| format!("m-{i:04}");
    let series = |i: usize| format!("s-{}", i % 9);
    let mut early_actuals = Vec::new();
    let mut predictions = Vec::new();
    let mut late_actuals = Vec::new();
    for i in 0..180 {
        let (p, a) = value_of(i);
        predictions.push((series(i), prediction(&id(i), &series(i), p)));
        if i < 10 {
            predictions.push((series(i), prediction(&id(i), &series(i), p))); // duplicate prediction
        }
        match i {
            0..50 => early_actuals.push((series(i), actual(&id(i), &series(i), a))),
            50..150 => {
                late_actuals.push((series(i), actual(&id(i), &series(i), a)));
                if i < 60 {
                    late_actuals.push((series(i), actual(&id(i), &series(i), a)));
                    // duplicate actual
                }
            }
            _ => {} // 150..180: never
        }
    }
    for j in 0..20 {
        late_actuals.push(("s-x".into(), actual(&format!("orphan-{j}"), "s-x", 1.0)));
    }
    // Bad actuals, refused and counted, never scored.
    early_actuals.push(("s-x".into(), "{not json".into()));
    // An actual for a prediction that otherwise never gets one: refused as overflow, so that
    // prediction is neither scored nor left to expire.
    early_actuals.push((series(179), actual(&id(179), &series(179), 1e200)));
    early_actuals.push((
        "s-x".into(),
        serde_json::json!({"id": "e", "series_id": "s-x", "timestamp": "2026-11-26T20:00:00Z", "actual": []})
            .to_string(),
    ));
    send_keyed(&topics.actuals, &early_actuals);
    let mut monitor = start_monitor(&monitor_config(&topics, "join_ttl = \"6s\"\nmin_joined = 1"));
    send_keyed(&topics.predictions, &predictions);
    std::thread::sleep(Duration::from_secs(1));
    send_keyed(&topics.actuals, &late_actuals);

    // Independent computation over the 150 joined pairs.
    let errors: Vec<f64> = (0..150).map(|i| value_of(i).0 - value_of(i).1).collect();
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / 150.0).sqrt();
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / 150.0;
    let snap = wait_snapshot(&topics, &monitor, Duration::from_secs(60), |s| {
        s["joined"] == 150 && s["expired"] == 29 && s["unmatched_actuals"] == 20
    });
    assert_eq!(snap["model"]["version"], "1");
    assert_eq!(snap["variant"], "primary");
    assert_eq!(snap["pending"], 0);
    let got_rmse = snap["rmse"].as_f64().unwrap();
    let got_mae = snap["mae"].as_f64().unwrap();
    assert!((got_rmse - rmse).abs() < 1e-9, "rmse {got_rmse} vs {rmse}");
    assert!((got_mae - mae).abs() < 1e-9, "mae {got_mae} vs {mae}");
    let metrics = http_get(monitor.http_port(), "/metrics");
    for reason in ["unparsable_actual", "empty", "overflow"] {
        let line = format!("streamcast_monitor_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "no {line}:\n{metrics}");
    }
}

#[test]
fn a_restarted_monitor_still_completes_pending_joins() {
    let topics = Topics::create(3);
    let config = monitor_config(&topics, "min_joined = 1");
    let mut first = start_monitor(&config);
    let preds: Vec<(String, String)> = (0..100)
        .map(|i| (format!("s-{}", i % 5), prediction(&format!("r-{i}"), &format!("s-{}", i % 5), 10.0 + i as f64)))
        .collect();
    send_keyed(&topics.predictions, &preds);
    wait_snapshot(&topics, &first, Duration::from_secs(60), |s| s["pending"] == 100);
    // Let one more publish (and its commit) pass, then stop.
    std::thread::sleep(Duration::from_secs(2));
    assert!(first.terminate(Duration::from_secs(30)).success(), "{}", first.log_text());

    let acts: Vec<(String, String)> = (0..100)
        .map(|i| (format!("s-{}", i % 5), actual(&format!("r-{i}"), &format!("s-{}", i % 5), 11.0 + i as f64)))
        .collect();
    send_keyed(&topics.actuals, &acts);
    let second = start_monitor(&config);
    let snap = wait_snapshot(&topics, &second, Duration::from_secs(60), |s| s["joined"] == 100);
    assert!((snap["rmse"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!((snap["mae"].as_f64().unwrap() - 1.0).abs() < 1e-9);
}

/// Training-range rows of the shipped CO2 record (what the bundle's reference sample holds).
fn training_rows() -> Vec<[f64; 3]> {
    let text = std::fs::read_to_string(repo().join("data/co2_weekly.csv")).unwrap();
    let rows: Vec<[f64; 3]> = text
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    let n = rows.len() * 8 / 10;
    rows[..n].to_vec()
}

fn input_stream(n: usize, co2_shift: f64) -> Vec<(String, String)> {
    let rows = training_rows();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = rows[(x % rows.len() as u64) as usize];
            let series = format!("d-{}", i % 20);
            (series.clone(), event(&format!("d-{i}"), &series, &[r[0] + co2_shift, r[1], r[2]]))
        })
        .collect()
}

fn alerts_of_kind(records: &[Record], kind: &str) -> Vec<serde_json::Value> {
    records.iter().map(|r| r.json()).filter(|j| j["kind"] == kind).collect()
}

/// One voice: three replicas in role `all`, and still one alert.
#[test]
fn one_shifted_feature_gives_exactly_one_feature_drift_alert_for_it() {
    let topics = Topics::create(3);
    let mut replicas = start_replicas(&monitor_config(&topics, ""), 3);
    for w in replicas.iter_mut() {
        w.wait_for_log("Worker started.", Duration::from_secs(60));
    }
    let monitor = &replicas[0];
    send_keyed(&topics.input, &input_stream(5_000, 30.0));
    let mut alerts = Reader::new(&topics.alerts);
    let fired = alerts.read_until(Duration::from_secs(60), |r| !alerts_of_kind(r, "feature_drift").is_empty());
    assert!(fired, "no feature_drift alert:\n{}", monitor.log_text());
    // A few more evaluations: the ongoing shift must not fire again.
    alerts.settle(Duration::from_secs(4));
    let drift = alerts_of_kind(&alerts.records, "feature_drift");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["details"]["feature"], "co2");
    assert_eq!(drift[0]["details"]["state"], "firing");
    let snap = wait_snapshot(&topics, monitor, Duration::from_secs(10), |s| {
        !s["drifted_features"].as_array().unwrap().is_empty()
    });
    assert_eq!(snap["drifted_features"], serde_json::json!(["co2"]));
    // The leader dies; its successor reads the firing alert back and, with the shift still
    // there, does not raise it again.
    let leader = the_leader(&mut replicas);
    replicas[leader].kill_hard();
    let survivor = (leader + 1) % 3;
    let before = replicas[survivor].log_text().matches("Monitor leads the group").count()
        + replicas[(leader + 2) % 3].log_text().matches("Monitor leads the group").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while replicas[survivor].log_text().matches("Monitor leads the group").count()
        + replicas[(leader + 2) % 3].log_text().matches("Monitor leads the group").count()
        == before
    {
        assert!(std::time::Instant::now() < deadline, "nobody took over");
        std::thread::sleep(Duration::from_millis(100));
    }
    send_keyed(&topics.input, &input_stream(5_000, 30.0));
    wait_snapshot(&topics, &replicas[survivor], Duration::from_secs(60), |s| s["drift"]["co2"]["samples"] == 2000);
    alerts.settle(Duration::from_secs(3));
    assert_eq!(alerts_of_kind(&alerts.records, "feature_drift").len(), 1, "fired again after the failover");
}

/// Drift is the group's: 20 000 served inputs through three replicas, a drift sample that holds
/// them all, and every feature's KS statistic equal to scipy's `ks_2samp` on the union sample
/// against the bundle's reference (both as served, through f32).
#[test]
fn drift_statistics_match_scipy_on_the_union_sample_with_three_replicas() {
    let topics = Topics::create(3);
    let mut replicas = start_replicas(&monitor_config(&topics, "drift_sample_size = 20000"), 3);
    for w in replicas.iter_mut() {
        w.wait_for_log("Worker started.", Duration::from_secs(60));
    }
    let inputs = input_stream(20_000, 5.0);
    send_keyed(&topics.input, &inputs);
    let snap =
        wait_snapshot(&topics, &replicas[0], Duration::from_secs(120), |s| s["drift"]["co2"]["samples"] == 20_000);
    let rows: Vec<serde_json::Value> =
        inputs.iter().map(|(_, e)| serde_json::from_str::<serde_json::Value>(e).unwrap()["features"].clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.json"), serde_json::to_vec(&rows).unwrap()).unwrap();
    let script = r#"
import json, sys
import numpy as np
from scipy.stats import ks_2samp
bundle = json.load(open(sys.argv[1]))
rows = np.array(json.load(open(sys.argv[2])), dtype=np.float64)
served = lambda v: np.asarray(v, dtype=np.float32).astype(np.float64)
out = {f: float(ks_2samp(served(bundle["reference"]["features"][f]), served(rows[:, i])).statistic)
       for i, f in enumerate(bundle["features"])}
print(json.dumps(out))
"#;
    let out = std::process::Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(repo().join("models/co2-mlp/1/bundle.json"))
        .arg(dir.path().join("rows.json"))
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scipy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (feature, d) in scipy.as_object().unwrap() {
        let ours = snap["drift"][feature]["ks_statistic"].as_f64().unwrap();
        let d = d.as_f64().unwrap();
        assert!((ours - d).abs() <= 1e-9, "{feature}: KS {ours} against scipy {d}");
    }
    assert_eq!(snap["drifted_features"], serde_json::json!(["co2"]), "{snap}");
}

#[test]
fn an_unshifted_stream_of_50000_events_gives_no_drift_alert() {
    let topics = Topics::create(3);
    let monitor = start_monitor(&monitor_config(&topics, ""));
    send_keyed(&topics.input, &input_stream(50_000, 0.0));
    // Wait until the monitor has evaluated a full sample of recent values, then a while longer.
    wait_snapshot(&topics, &monitor, Duration::from_secs(90), |s| s["drift"]["co2"]["samples"] == 2000);
    let mut alerts = Reader::new(&topics.alerts);
    alerts.settle(Duration::from_secs(4));
    assert!(
        alerts_of_kind(&alerts.records, "feature_drift").is_empty(),
        "{:?}",
        alerts.records.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
}

/// Once per episode, across a restart too: the new monitor resumes the RMSE gate and the
/// retraining request from the alerts topic.
#[test]
fn sustained_high_error_requests_retraining_once() {
    let topics = Topics::create(3);
    let config = monitor_config(
        &topics,
        "rmse_threshold = 1.0\nmin_joined = 20\nretrain_after = \"2s\"\nalert_cooldown = \"1h\"",
    );
    let mut monitor = start_monitor(&config);
    let preds: Vec<(String, String)> =
        (0..200).map(|i| ("s".into(), prediction(&format!("h-{i}"), "s", 100.0))).collect();
    let acts: Vec<(String, String)> = (0..200).map(|i| ("s".into(), actual(&format!("h-{i}"), "s", 95.0))).collect();
    send_keyed(&topics.predictions, &preds);
    send_keyed(&topics.actuals, &acts);
    let mut alerts = Reader::new(&topics.alerts);
    let asked = alerts.read_until(Duration::from_secs(60), |r| !alerts_of_kind(r, "retrain_requested").is_empty());
    assert!(asked, "no retrain_requested:\n{}", monitor.log_text());
    alerts.settle(Duration::from_secs(4));
    let retrain = alerts_of_kind(&alerts.records, "retrain_requested");
    assert_eq!(retrain.len(), 1, "{retrain:?}");
    assert_eq!(retrain[0]["details"]["reason"], "performance");
    assert_eq!(alerts_of_kind(&alerts.records, "rmse_above_threshold").len(), 1);

    // Restarted, the monitor rebuilds the same high RMSE from the committed watermarks (the pairs
    // in the window are held) and stays quiet about it.
    assert!(monitor.terminate(Duration::from_secs(30)).success(), "{}", monitor.log_text());
    let mut restarted = start_monitor(&config);
    restarted.wait_for_log("Monitor leads the group", Duration::from_secs(60));
    wait_snapshot(&topics, &restarted, Duration::from_secs(60), |s| {
        s["joined"] == 200 && s["at"].as_str() > retrain[0]["at"].as_str()
    });
    alerts.settle(Duration::from_secs(5));
    assert_eq!(alerts_of_kind(&alerts.records, "rmse_above_threshold").len(), 1, "raised again after a restart");
    assert_eq!(alerts_of_kind(&alerts.records, "retrain_requested").len(), 1, "requested again after a restart");
}

/// The schedule's period runs from the last request published, not from process start: a
/// restart in mid-period neither fires at once nor starts the period over.
#[test]
fn a_retrain_schedule_keeps_its_period_across_a_restart() {
    let topics = Topics::create(1);
    let config = monitor_config(&topics, "retrain_schedule = \"8s\"");
    let mut first = start_monitor(&config);
    let mut alerts = Reader::new(&topics.alerts);
    assert!(alerts.read_until(Duration::from_secs(60), |r| !alerts_of_kind(r, "retrain_requested").is_empty()));
    std::thread::sleep(Duration::from_secs(4));
    assert!(first.terminate(Duration::from_secs(30)).success(), "{}", first.log_text());
    let second = start_monitor(&config);
    let two = alerts.read_until(Duration::from_secs(60), |r| alerts_of_kind(r, "retrain_requested").len() >= 2);
    assert!(two, "{}", second.log_text());
    let at = |a: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(a["at"].as_str().unwrap()).unwrap();
    let requests = alerts_of_kind(&alerts.records, "retrain_requested");
    let gap = (at(&requests[1]) - at(&requests[0])).num_milliseconds() as f64 / 1e3;
    // 8 s after the first (publishes tick every 0.5 s); a schedule restarted at the restart
    // would have waited 8 s from there, about 12 s after the first.
    assert!((7.5..10.5).contains(&gap), "second request {gap} s after the first");
}

#[test]
fn a_retrain_schedule_requests_retraining_on_time_and_only_then() {
    let topics = Topics::create(1);
    let mut worker = start_monitor(&monitor_config(&topics, "retrain_schedule = \"3s\""));
    worker.wait_for_log("Monitor started.", Duration::from_secs(60));
    let started = std::time::Instant::now();
    let mut alerts = Reader::new(&topics.alerts);
    let two = alerts.read_until(Duration::from_secs(30), |r| alerts_of_kind(r, "retrain_requested").len() >= 2);
    let elapsed = started.elapsed();
    assert!(two, "{}", worker.log_text());
    let requests = alerts_of_kind(&alerts.records, "retrain_requested");
    assert!(requests.iter().all(|a| a["details"]["reason"] == "schedule"), "{requests:?}");
    // Two periods of 3 s: not before 6 s (publish ticks every 0.5 s, so at most ~1 s late each).
    assert!(elapsed >= Duration::from_millis(5500), "two scheduled requests after {elapsed:?}");
    // No error-driven request without actuals, and nothing else fired.
    assert!(alerts.records.iter().all(|a| a.json()["kind"] == "retrain_requested"));
}

/// Forecasts with three horizon steps: the snapshot and the gauges carry RMSE, MAE and bias per
/// step, each equal to a computation over that step's errors alone.
#[test]
fn per_step_errors_match_an_independent_computation() {
    let topics = Topics::create(3);
    let step_values = |i: usize| -> (Vec<f64>, Vec<f64>) {
        // Errors that grow with the step, of varying sign, so the steps differ.
        let p: Vec<f64> = (0..3).map(|h| 340.0 + (i % 11) as f64 * 0.3 + h as f64).collect();
        let a: Vec<f64> =
            (0..3).map(|h| p[h] - ((i % 5) as f64 - 1.5) * 0.2 * (h + 1) as f64 - 0.1 * h as f64).collect();
        (p, a)
    };
    let mut predictions = Vec::new();
    let mut actuals = Vec::new();
    for i in 0..120 {
        let (p, a) = step_values(i);
        let (id, series) = (format!("h-{i:04}"), format!("s-{}", i % 7));
        let pred = serde_json::json!({
            "id": id, "series_id": series, "timestamp": "2026-11-26T19:00:00Z", "prediction": p,
            "model": {"name": "co2-mlp", "version": "1"}, "variant": "primary", "latency_ms": 1.0,
            "produced_at": "2026-11-26T19:00:00.001Z"
        });
        predictions.push((series.clone(), pred.to_string()));
        let act = serde_json::json!({"id": id, "series_id": series, "timestamp": "2026-11-26T20:00:00Z", "actual": a});
        actuals.push((series, act.to_string()));
    }
    let mut monitor = start_monitor(&monitor_config(&topics, "min_joined = 1"));
    send_keyed(&topics.predictions, &predictions);
    send_keyed(&topics.actuals, &actuals);
    let snap = wait_snapshot(&topics, &monitor, Duration::from_secs(60), |s| s["joined"] == 360);
    let steps = snap["per_step"].as_array().unwrap_or_else(|| panic!("no per_step: {snap}"));
    assert_eq!(steps.len(), 3, "{snap}");
    let metrics = http_get(monitor.http_port(), "/metrics");
    for h in 0..3 {
        let errors: Vec<f64> = (0..120).map(|i| step_values(i).0[h] - step_values(i).1[h]).collect();
        let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / 120.0).sqrt();
        let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / 120.0;
        let bias = errors.iter().sum::<f64>() / 120.0;
        let s = &steps[h];
        assert_eq!((s["step"].as_u64(), s["count"].as_u64()), (Some(h as u64 + 1), Some(120)), "{s}");
        assert_close(&format!("step {} rmse", h + 1), &s["rmse"], rmse);
        assert_close(&format!("step {} mae", h + 1), &s["mae"], mae);
        assert_close(&format!("step {} bias", h + 1), &s["bias"], bias);
        let gauge = format!(
            "streamcast_monitor_step_rmse{{model=\"co2-mlp\",step=\"{}\",variant=\"primary\",version=\"1\"}}",
            h + 1
        );
        assert_close(&format!("gauge {gauge}"), &metric_value(&metrics, &gauge).into(), rmse);
    }
    // Over all steps, as before.
    let all: Vec<f64> = (0..120).flat_map(|i| (0..3).map(move |h| step_values(i).0[h] - step_values(i).1[h])).collect();
    assert_close("rmse", &snap["rmse"], (all.iter().map(|e| e * e).sum::<f64>() / 360.0).sqrt());
}
