//! The inference-bound ceiling of a bundle: windows per second through the worker's own model
//! code (`Model::predict_rows`: normalization, one ONNX Runtime call per batch,
//! de-normalization) with no Kafka and no JSON, on the CPU provider with one intra-op thread as
//! the worker runs by default. `make bench` reports the worker's events/s against it.
//!
//! `cargo run --release --example ort_ceiling -- models/co2-nbeats/1 [batch size] [seconds]`
//! prints one JSON line: {"bundle", "batch_size", "windows_per_s", "ms_per_batch"}.
use std::path::Path;
use std::time::{Duration, Instant};

use streamcast::bundle::Bundle;
use streamcast::config::ExecutionProviderChoice;
use streamcast::gpu_check::random_windows;
use streamcast::inference::{Model, SessionOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("models/co2-nbeats/1", String::as_str);
    let batch: usize = args.get(2).map_or(256, |s| s.parse().expect("batch size"));
    let seconds: f64 = args.get(3).map_or(5.0, |s| s.parse().expect("seconds"));
    let bundle = Bundle::load(Path::new(dir)).expect("bundle loads");
    let window = bundle.manifest.window;
    let input = random_windows(&bundle.manifest.scaler, window, batch, 7);
    let options = SessionOptions { provider: ExecutionProviderChoice::Cpu, intra_threads: 1 };
    let mut model = Model::load(bundle, options).expect("model loads");
    let mut out = Vec::new();
    for _ in 0..5 {
        model.predict_rows(&input, batch, &mut out).expect("warm-up batch");
    }
    let (start, mut batches) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        model.predict_rows(&input, batch, &mut out).expect("batch");
        batches += 1;
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "{{\"bundle\":{dir:?},\"batch_size\":{batch},\"windows_per_s\":{:.1},\"ms_per_batch\":{:.4}}}",
        (batches as f64 * batch as f64) / took,
        took * 1e3 / batches as f64
    );
}
