//! The monitor's join buffer keeps resident memory bounded with a million unanswered
//! predictions. Measured as the process's resident memory, so it runs alone in its own test
//! binary: in the library's unit tests, models loaded by neighbouring tests would count too.

use std::time::{Duration, Instant};

use streamcast::monitor::join::{JoinBuffer, Side, Source, WaitingPrediction};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn p(v: f64) -> WaitingPrediction {
    WaitingPrediction { key: 0, values: vec![v], first_step: 0, bounds: Vec::new(), quantiles: Vec::new() }
}

fn src(offset: i64) -> Source {
    Source { partition: 0, offset }
}

#[test]
fn memory_stays_within_the_cap_with_a_million_unanswered_predictions() {
    let t = Instant::now();
    let cap = 100_000;
    let rss_before = rss_bytes();
    let mut j = JoinBuffer::new(cap, Duration::from_secs(86_400));
    let mut peak = 0;
    for i in 0..1_000_000i64 {
        j.offer_prediction(&format!("e-{i:07}"), p(i as f64), src(i), t);
        if i % 100_000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    peak = peak.max(rss_bytes());
    let grown_mib = peak.saturating_sub(rss_before) as f64 / (1 << 20) as f64;
    eprintln!("join buffer: cap {cap}, 1,000,000 unanswered predictions, resident memory grew {grown_mib:.1} MiB");
    // About 200 bytes per waiting entry plus the remembered-id table: far below 1 GiB, and
    // flat once the cap is reached.
    assert!(grown_mib < 100.0, "grew {grown_mib:.1} MiB");
    assert_eq!(j.len(), cap);
    assert_eq!(j.counts().evicted_predictions, 1_000_000 - cap as u64);
    // The oldest went first: the commit point is the oldest entry still held.
    assert_eq!(j.commit_point(Side::Prediction, 0, 1_000_000), 1_000_000 - cap as i64);
}
