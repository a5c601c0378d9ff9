//! `streamcast produce` against the real broker, checked against the shipped CSV directly.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn produce_sends_every_row_and_each_rows_actual_from_the_next_row() {
    let topics = Topics::create(3);
    let out = std::process::Command::new(bin())
        .args(["produce", "data/co2_weekly.csv", "--quiet", "--series", "co2", "--actuals-column", "co2"])
        .args(["--actuals-delay", "0.2", "--bootstrap-servers", &bootstrap()])
        .args(["--topic", &topics.input, "--actuals-topic", &topics.actuals])
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let text = std::fs::read_to_string(repo().join("data/co2_weekly.csv")).unwrap();
    let rows: Vec<Vec<String>> = text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert!(stderr.contains(&format!("sent {} events", rows.len())), "{stderr}");

    let mut input = Reader::new(&topics.input);
    assert!(input.read_until(Duration::from_secs(60), |r| r.len() >= rows.len()));
    let mut actuals = Reader::new(&topics.actuals);
    assert!(actuals.read_until(Duration::from_secs(60), |r| r.len() >= rows.len() - 1));

    for r in &input.records {
        let e = r.json();
        assert_eq!(r.key.as_deref(), Some(&b"co2"[..]));
        let n: usize = e["id"].as_str().unwrap().trim_start_matches("obs-").parse().unwrap();
        let row = &rows[n - 1];
        assert_eq!(e["timestamp"], row[0].as_str());
        assert_eq!(e["features"]["co2"].as_f64().unwrap(), row[1].parse::<f64>().unwrap());
        assert_eq!(e["features"]["month_sin"].as_f64().unwrap(), row[2].parse::<f64>().unwrap());
    }
    for r in &actuals.records {
        let a = r.json();
        let n: usize = a["id"].as_str().unwrap().trim_start_matches("obs-").parse().unwrap();
        // The truth of row n is the co2 of row n + 1.
        assert_eq!(a["actual"].as_f64().unwrap(), rows[n][1].parse::<f64>().unwrap(), "{a}");
        assert_eq!(a["timestamp"], rows[n][0].as_str());
    }
    assert_eq!(actuals.records.len(), rows.len() - 1);
}
