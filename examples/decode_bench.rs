//! Decoding cost per event, one-pass decoder against the serde reference, on the bench's two event
//! forms (24-step windows of co2-mlp's three features, and single observations), with numbers
//! written as Python's `json.dumps` writes them (shortest round-trip, up to 17 digits).
//! `cargo run --release --example decode_bench`; the minimum of seven rounds is printed.
use std::time::Instant;

use streamcast::event::{DecodeError, EventValues, FeatureSchema, InputEvent};

fn main() {
    let names = vec!["co2".into(), "month_sin".into(), "month_cos".into()];
    let schema = FeatureSchema {
        names,
        window: 24,
        max_message_bytes: 1 << 20,
        reject_unknown_features: false,
        max_id_bytes: 512,
    };
    let rows: Vec<[f64; 3]> = (0..200)
        .map(|i| [316.1 + f64::from(i) * 0.37, (f64::from(i) * 0.52).sin(), (f64::from(i) * 0.52).cos()])
        .collect();
    let (mut windows, mut observations) = (Vec::new(), Vec::new());
    for i in 0..1000usize {
        let steps: Vec<String> = (0..24)
            .map(|t| {
                let r = rows[(i + t) % 200];
                format!("[{},{},{}]", r[0], r[1], r[2])
            })
            .collect();
        let head = format!(r#""id":"tp-{i}","series_id":"s-{}","timestamp":"2026-11-26T19:00:00Z""#, i % 200);
        windows.push(format!(r#"{{{head},"window":[{}]}}"#, steps.join(",")).into_bytes());
        let r = rows[i % 200];
        observations.push(format!(r#"{{{head},"features":[{},{},{}]}}"#, r[0], r[1], r[2]).into_bytes());
    }
    type Decode = fn(&[u8], &FeatureSchema) -> Result<InputEvent, DecodeError>;
    let decoders: [(&str, Decode); 2] = [("one-pass", InputEvent::decode), ("serde", InputEvent::decode_with_serde)];
    println!("window event: {} bytes; observation event: {} bytes", windows[0].len(), observations[0].len());
    for (form, events) in [("window", &windows), ("observation", &observations)] {
        for (name, decode) in decoders {
            let mut best = f64::INFINITY;
            let mut sum = 0.0f32;
            for _ in 0..7 {
                let t = Instant::now();
                for _ in 0..20 {
                    for b in events.iter() {
                        let (EventValues::Window(v) | EventValues::Observation(v)) = decode(b, &schema).unwrap().values;
                        sum += v[0];
                    }
                }
                best = best.min(t.elapsed().as_nanos() as f64 / (20 * events.len()) as f64);
            }
            println!("{form:<12} {name:<9} {best:>7.0} ns/event  (checksum {sum})");
        }
    }
}
