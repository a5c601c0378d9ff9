//! OTLP export against a stand-in collector: an HTTP server in the test that records what the
//! worker posts to `/v1/traces` and `/v1/metrics` (OTLP/HTTP protobuf bodies, searched for the
//! raw trace and span ids and the names they must carry).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP posts and answers 200 with an empty body.
fn collector() -> (u16, Posts) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts: Posts = Arc::default();
    let p = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    p.lock().unwrap().push((path, body));
                    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if stream.write_all(ok.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, posts)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn otlp_export_sends_messaging_spans_in_the_callers_trace_and_the_metrics() {
    let (port, posts) = collector();
    let topics = Topics::create(1);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let e = event("ot-1", "s-ot", &[330.0, 0.5, 0.5]);
    produce(&topics.input, &[(Some("s-ot"), e.as_bytes(), &[("traceparent", parent.as_str())])]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut worker = Worker::start_with(
        &topics.config("co2-mlp", "1", ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    );
    let mut reader = Reader::new(&topics.predictions);
    assert!(reader.read_until(Duration::from_secs(60), |r| !r.is_empty()), "{}", worker.log_text());
    // Same trace, new span: the prediction's parent is the worker's `send` span.
    let out = reader.records[0].headers.get("traceparent").cloned().expect("a traceparent on the prediction");
    let parts: Vec<&str> = out.split('-').collect();
    assert_eq!((parts[0], parts[1]), ("00", trace_id), "{out}");
    assert_ne!(parts[2], "00f067aa0ba902b7");
    let send_span = hex(parts[2]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut traced, mut measured) = (false, false);
    while !(traced && measured) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        for (path, body) in posts.lock().unwrap().iter() {
            if path == "/v1/traces"
                && contains(body, &hex(trace_id))
                && contains(body, &send_span)
                && contains(body, format!("process {}", topics.input).as_bytes())
                && contains(body, format!("send {}", topics.predictions).as_bytes())
                && contains(body, b"messaging.system")
                && contains(body, b"messaging.kafka.offset")
                && contains(body, b"streamcast.model.version")
            {
                traced = true;
            }
            if path == "/v1/metrics" && contains(body, b"streamcast_events_consumed_total") {
                measured = true;
            }
        }
    }
    let paths: Vec<String> = posts.lock().unwrap().iter().map(|(p, b)| format!("{p} ({} bytes)", b.len())).collect();
    assert!(traced, "no trace export with the caller's trace id and the send span: {paths:?}\n{}", worker.log_text());
    assert!(measured, "no metrics export: {paths:?}");
    assert!(worker.terminate(Duration::from_secs(30)).success());
}

#[test]
fn otlp_export_is_off_without_an_endpoint() {
    let topics = Topics::create(1);
    let mut worker = Worker::start(&topics.config("co2-mlp", "1", ""));
    let mut reader = Reader::new(&topics.predictions);
    send_keyed(&topics.input, &[("s".into(), event("off-1", "s", &[330.0, 0.5, 0.5]))]);
    assert!(reader.read_until(Duration::from_secs(60), |r| !r.is_empty()), "{}", worker.log_text());
    assert!(!reader.records[0].headers.contains_key("traceparent"));
    assert!(!worker.log_text().contains("OTLP export on"));
    assert!(worker.terminate(Duration::from_secs(30)).success());
}
