//! The input decoder against generated hostile input: over a million cases of random bytes,
//! mutated valid events, deep nesting, huge numbers and duplicate keys. Every input either
//! decodes to a well-formed event or gets one of the reject kinds; nothing panics. The one-pass
//! decoder the stream uses agrees with the serde reference on every case: the same verdict, and
//! on an accepted event the same fields and values (within one f32 ulp, see `event::scan`).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use streamcast::event::{EventValues, FeatureSchema, InputEvent, RejectKind};

/// Cases per strategy; six strategies make it over a million.
const CASES: u32 = 180_000;

fn schema(window: usize) -> FeatureSchema {
    FeatureSchema {
        names: vec!["co2".into(), "month_sin".into(), "month_cos".into()],
        window,
        max_message_bytes: 64 * 1024,
        reject_unknown_features: false,
        max_id_bytes: 64,
    }
}

const VALID: &[&str] = &[
    r#"{"id":"e-1","series_id":"s-1","timestamp":"2026-11-26T19:00:00Z","features":{"co2":350.1,"month_sin":0.5,"month_cos":-0.5}}"#,
    r#"{"id":"e-2","series_id":"s-2","timestamp":"2026-11-26T19:00:00+01:00","features":[350.1,0.5,-0.5]}"#,
    r#"{"id":"e-3","series_id":"s-3","timestamp":"2026-11-26T19:00:00Z","window":[[1,2,3],[4,5,6]],"features":[7,8,9]}"#,
    r#"{"id":"e-4","series_id":"s-4","timestamp":"2026-11-26T19:00:00Z","features":{"co2":1,"month_sin":2,"month_cos":3,"extra":4}}"#,
];

/// Decodes and checks the contract: a decoded event is well formed, a refusal has a kind.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    for window in [1, 2] {
        let s = schema(window);
        let decoded = InputEvent::decode(bytes, &s);
        agree(&decoded, &InputEvent::decode_with_serde(bytes, &s), bytes)?;
        match decoded {
            Ok(e) => {
                prop_assert!(!e.id.is_empty() && e.id.len() <= s.max_id_bytes);
                prop_assert!(!e.series_id.is_empty() && e.series_id.len() <= s.max_id_bytes);
                prop_assert!(chrono::DateTime::parse_from_rfc3339(&e.timestamp).is_ok());
                let values = match &e.values {
                    EventValues::Observation(v) => {
                        prop_assert_eq!(v.len(), 3);
                        v
                    }
                    EventValues::Window(w) => {
                        prop_assert_eq!(w.len(), 3 * window);
                        w
                    }
                };
                prop_assert!(values.iter().all(|v| v.is_finite()), "non-finite value decoded from {:?}", bytes);
            }
            Err(e) => {
                prop_assert!(RejectKind::ALL.contains(&e.kind));
                prop_assert!(!e.reason.is_empty());
            }
        }
    }
    Ok(())
}

/// The one-pass decoder and the serde reference reach the same verdict: the same event (values
/// within one f32 ulp: serde's f64 parsing is not always correctly rounded), or the same kind.
fn agree(
    fast: &Result<InputEvent, streamcast::event::DecodeError>,
    reference: &Result<InputEvent, streamcast::event::DecodeError>,
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    match (fast, reference) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!((&a.id, &a.series_id, &a.timestamp), (&b.id, &b.series_id, &b.timestamp));
            prop_assert_eq!(a.extra_features, b.extra_features);
            let (EventValues::Observation(x) | EventValues::Window(x)) = &a.values;
            let (EventValues::Observation(y) | EventValues::Window(y)) = &b.values;
            prop_assert_eq!(
                std::mem::discriminant(&a.values),
                std::mem::discriminant(&b.values),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            prop_assert_eq!(x.len(), y.len());
            for (u, v) in x.iter().zip(y) {
                let ulps = (u.to_bits() as i64 - v.to_bits() as i64).abs();
                prop_assert!(u == v || ulps <= 1, "{u} vs {v} in {:?}", String::from_utf8_lossy(bytes));
            }
        }
        (Err(a), Err(b)) => prop_assert_eq!(a.kind, b.kind),
        _ => prop_assert!(
            false,
            "the decoders disagree on {:?}: {fast:?} vs {reference:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
    Ok(())
}

fn run<S: Strategy>(strategy: S, to_bytes: impl Fn(S::Value) -> Vec<u8>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner.run(&strategy, |v| check(&to_bytes(v))).unwrap();
}

#[test]
fn random_bytes() {
    run(proptest::collection::vec(any::<u8>(), 0..256), |v| v);
}

#[test]
fn mutated_valid_events() {
    let edits = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8);
    run((0..VALID.len(), edits), |(which, edits)| {
        let mut b = VALID[which].as_bytes().to_vec();
        for (at, byte, op) in edits {
            if b.is_empty() {
                break;
            }
            let i = at.index(b.len());
            match op {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                2 => {
                    b.remove(i);
                }
                _ => b.truncate(i),
            }
        }
        b
    });
}

#[test]
fn deep_nesting_in_every_field() {
    let field = prop::sample::select(vec!["id", "series_id", "timestamp", "features", "window", "other"]);
    run((field, 0usize..2000, prop::bool::ANY), |(field, depth, arrays)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        format!(
            r#"{{"id":"e","series_id":"s","timestamp":"2026-11-26T19:00:00Z","features":[1,2,3],"{field}":{nested}}}"#
        )
        .into_bytes()
    });
}

#[test]
fn huge_and_odd_numbers() {
    let number = prop_oneof![
        Just("1e999".to_string()),
        Just("-1e400".to_string()),
        Just("NaN".to_string()),
        Just("Infinity".to_string()),
        Just("-0".to_string()),
        Just("3.5e38".to_string()),
        Just("1e-400".to_string()),
        "[0-9]{1,400}".prop_map(|s| s),
        "-?[0-9]{1,30}\\.[0-9]{0,30}[eE][+-]?[0-9]{1,5}".prop_map(|s| s),
        any::<f64>().prop_map(|f| format!("{f:e}")),
    ];
    run(proptest::collection::vec(number, 3..7), |ns| {
        let window: Vec<String> = ns.chunks(3).map(|c| format!("[{}]", c.join(","))).collect();
        format!(
            r#"{{"id":"e","series_id":"s","timestamp":"2026-11-26T19:00:00Z","features":[{}],"window":[{}]}}"#,
            ns[..3].join(","),
            window.join(",")
        )
        .into_bytes()
    });
}

#[test]
fn duplicate_keys_and_shuffled_fields() {
    let key = prop::sample::select(vec!["id", "series_id", "timestamp", "features", "window", "co2"]);
    let value = prop::sample::select(vec![
        r#""x""#,
        r#""2026-11-26T19:00:00Z""#,
        "[1,2,3]",
        r#"{"co2":1,"co2":2,"month_sin":0,"month_cos":0}"#,
        "null",
        "7",
        "[[1,2,3],[4,5,6]]",
    ]);
    run(proptest::collection::vec((key, value), 0..10), |pairs| {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    });
}

#[test]
fn plain_events_with_random_numbers_and_spacing() {
    // The shapes the one-pass decoder accepts, with numbers of every length and exponent and
    // JSON whitespace anywhere, so both decoders' number parsing is compared value by value.
    let number = prop_oneof![
        any::<f64>().prop_map(|f| format!("{f}")),
        any::<f32>().prop_map(|f| format!("{f}")),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?".prop_map(|s| s),
    ];
    let ws = prop::sample::select(vec!["", " ", "\n", "\t ", "\r\n  "]);
    run(
        (proptest::collection::vec(number, 9), proptest::collection::vec(ws, 8), prop::bool::ANY),
        |(ns, w, objects)| {
            let obs = |c: &[String]| {
                if objects {
                    format!(r#"{{{}"month_cos"{}:{}, "co2":{},"month_sin":{}{}}}"#, w[0], w[1], c[2], c[0], c[1], w[2])
                } else {
                    format!("[{}{},{}{}{},{}]", w[3], c[0], c[1], w[4], w[5], c[2])
                }
            };
            let window: Vec<String> = ns[3..].chunks(3).map(obs).collect();
            format!(
            r#"{}{{"id":"e",{}"series_id"{}:"s","timestamp":"2026-11-26T19:00:00Z","features":{},"window":[{}]}}{}"#,
            w[6],
            w[7],
            w[0],
            obs(&ns[..3]),
            window[..2].join(","),
            w[1]
        )
        .into_bytes()
        },
    );
}
