//! TLS and SASL against a real broker. nisshi 0.6.0 cannot serve TLS itself, so a
//! TLS-terminating proxy (`tests/e2e/tls_proxy.py`, Python's standard library) sits in front of
//! a nisshi that advertises the proxy's address; a throwaway CA and certificates come from
//! `openssl`. Every client here, the worker and the test's own, speaks TLS.
//!
//! nisshi's own SASL cannot be used either: with `--authentication`, librdkafka reaches its
//! SCRAM exchange but no user can exist (`nisshi user create` must itself authenticate to such a
//! broker and fails with "early eof", and the memory storage does not survive a restart). So a
//! SASL-authenticating proxy (`tests/e2e/sasl_proxy.py`: SaslHandshake and SaslAuthenticate,
//! SCRAM per RFC 5802 and PLAIN, written from the RFCs, also checked by hand against
//! kafka-python, a second client implementation) stands in for the broker's SASL. The same
//! proxy serves an OAuth 2.0 token endpoint and checks OAUTHBEARER tokens, for OIDC.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, jsonl, repo, wait_exit, Worker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate, and a second,
/// unrelated CA.
fn certificates(dir: &Path) {
    for (key, pem, cn) in [("ca.key", "ca.pem", "test-ca"), ("other.key", "other-ca.pem", "other-ca")] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                key,
                "-out",
                pem,
            ],
        );
    }
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "streamcast-test")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

/// What fronts the broker.
#[derive(Clone, Copy)]
enum Front {
    /// A TLS proxy, requiring client certificates when `mtls`.
    Tls { mtls: bool },
    /// A SASL proxy for user `alice` with [`PASSWORD`], speaking TLS when `tls` (SASL_SSL).
    Sasl { tls: bool },
}

const PASSWORD: &str = "pw-8f2c41d9e7";

/// A nisshi broker reachable only through a proxy.
struct TlsCluster {
    dir: tempfile::TempDir,
    /// The TLS address every client uses.
    tls: String,
    /// The broker's own plaintext port (advertising the TLS address).
    plain: String,
    /// The SASL proxy's OAuth 2.0 token endpoint (client id `alice`, secret [`PASSWORD`]).
    token_url: String,
    _broker: Guard,
    proxy: Guard,
}

impl TlsCluster {
    fn start(front: Front) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let (plain_port, tls_port, oidc_port) = (free_port(), free_port(), free_port());
        let home = std::env::var("HOME").unwrap_or_default();
        let nisshi = std::env::var("NISSHI")
            .unwrap_or_else(|_| format!("{home}/.local/share/streamcast/nisshi-0.6.0/bin/nisshi"));
        let broker = Command::new(nisshi)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{plain_port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{tls_port}")])
            .args(["--storage-engine", "memory://tls/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nisshi (make broker installs it)");
        let mut proxy = Command::new("python3");
        let target = format!("127.0.0.1:{plain_port}");
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        match front {
            Front::Tls { mtls } => {
                proxy
                    .arg(repo().join("tests/e2e/tls_proxy.py"))
                    .arg(tls_port.to_string())
                    .arg(target)
                    .arg(cert)
                    .arg(key);
                if mtls {
                    proxy.arg(dir.path().join("ca.pem"));
                }
            }
            Front::Sasl { tls } => {
                proxy.arg(repo().join("tests/e2e/sasl_proxy.py")).arg(tls_port.to_string()).arg(target);
                proxy.args(["alice", PASSWORD]).env("OIDC_PORT", oidc_port.to_string());
                if tls {
                    proxy.arg(cert).arg(key);
                }
            }
        }
        let proxy = proxy.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("python3");
        let mut ports = vec![plain_port, tls_port];
        if matches!(front, Front::Sasl { .. }) {
            ports.push(oidc_port);
        }
        for port in ports {
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "port {port} did not open");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TlsCluster {
            tls: format!("127.0.0.1:{tls_port}"),
            plain: format!("127.0.0.1:{plain_port}"),
            token_url: format!("http://127.0.0.1:{oidc_port}/token"),
            dir,
            _broker: Guard(broker),
            proxy: Guard(proxy),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// librdkafka properties of a TLS client trusting `ca` (with the client certificate when
    /// `mtls`).
    fn properties(&self, ca: &str, mtls: bool) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("bootstrap.servers", self.tls.clone()),
            ("security.protocol", "ssl".to_string()),
            ("ssl.ca.location", self.path(ca).display().to_string()),
        ];
        if mtls {
            p.push(("ssl.certificate.location", self.path("client.pem").display().to_string()));
            p.push(("ssl.key.location", self.path("client.key").display().to_string()));
        }
        p
    }

    /// librdkafka properties of a SASL client (`protocol` SASL_SSL or SASL_PLAINTEXT).
    fn sasl_properties(&self, protocol: &str, mechanism: &str, password: &str) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("bootstrap.servers", self.tls.clone()),
            ("security.protocol", protocol.to_string()),
            ("sasl.mechanism", mechanism.to_string()),
            ("sasl.username", "alice".to_string()),
            ("sasl.password", password.to_string()),
        ];
        if protocol.eq_ignore_ascii_case("sasl_ssl") {
            p.push(("ssl.ca.location", self.path("ca.pem").display().to_string()));
        }
        p
    }
}

impl TlsCluster {
    /// librdkafka properties of an OAUTHBEARER client over SASL_SSL that fetches its token from
    /// the proxy's token endpoint (OIDC client credentials) with `secret`.
    fn oidc_properties(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.tls.clone()),
            ("security.protocol", "SASL_SSL".to_string()),
            ("ssl.ca.location", self.path("ca.pem").display().to_string()),
            ("sasl.mechanism", "OAUTHBEARER".to_string()),
            ("sasl.oauthbearer.method", "oidc".to_string()),
            ("sasl.oauthbearer.client.id", "alice".to_string()),
            ("sasl.oauthbearer.client.secret", secret.to_string()),
            ("sasl.oauthbearer.token.endpoint.url", self.token_url.clone()),
        ]
    }
}

fn client(props: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in props {
        c.set(*k, v);
    }
    c
}

/// A worker config for `cluster` with `[kafka]` holding `kafka` (TOML lines).
fn worker_config(kafka: &str, topic: &str, model: &str) -> String {
    format!(
        r#"
[kafka]
{kafka}
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[consumer]
group_id = "{topic}-group"

[topics]
input = "{topic}-in"
predictions = "{topic}-pred"
dlq = "{topic}-dlq"
actuals = "{topic}-act"
metrics = "{topic}-met"
alerts = "{topic}-alr"

[model]
root = "{root}"
name = "{model}"
version = "1"
execution_provider = "cpu"

[monitor]
enabled = false

[http]
listen = ""

[telemetry]
log_format = "json"
"#,
        root = repo().join("models").display(),
    )
}

fn toml_lines(props: &[(&str, String)]) -> String {
    props.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect()
}

fn create_topics(client: &ClientConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = client.create().expect("admin");
    let names: Vec<String> =
        ["in", "pred", "dlq", "act", "met", "alr"].iter().map(|s| format!("{topic}-{s}")).collect();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, if t.ends_with("-in") { 2 } else { 1 }, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)))))
        .expect("create topics over TLS");
    for r in results {
        r.expect("topic created");
    }
}

/// Produces the co2-mlp fixture events with `codec` to a worker connecting with `props`, and
/// checks every prediction against the independently computed values; `secrets` never appear in
/// the worker's log. Returns the running worker.
fn predict_fixture_over(props: &[(&str, String)], topic: &str, codec: &str, secrets: &[&str]) -> Worker {
    let client = client(props);
    create_topics(&client, topic);
    let events = jsonl(&repo().join("tests/fixtures/co2-mlp/events.jsonl"));
    let expected = jsonl(&repo().join("tests/fixtures/co2-mlp/expected.jsonl"));
    let producer: BaseProducer =
        client.clone().set("linger.ms", "5").set("compression.type", codec).create().expect("producer");
    for e in &events {
        let payload = e.to_string();
        let key = e["series_id"].as_str().unwrap().to_string();
        producer.send(BaseRecord::to(&format!("{topic}-in")).key(&key).payload(&payload)).expect("enqueued");
    }
    producer.flush(Duration::from_secs(30)).expect("produced over TLS");

    let kafka = toml_lines(props);
    let worker = Worker::start(&worker_config(&kafka, topic, "co2-mlp"));
    let reader: BaseConsumer = client
        .clone()
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&format!("{topic}-pred")]).unwrap();
    let mut got: HashMap<String, Vec<f64>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < events.len() {
        assert!(Instant::now() < deadline, "{} of {} predictions:\n{}", got.len(), events.len(), worker.log_text());
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let p: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            common::assert_schema("prediction", &p);
            let values = p["prediction"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            got.insert(p["id"].as_str().unwrap().to_string(), values);
        }
    }
    for e in &expected {
        let want: Vec<f64> = e["prediction"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let have = &got[e["id"].as_str().unwrap()];
        for (h, w) in have.iter().zip(&want) {
            assert!((h - w).abs() <= 1e-4, "{}: {h} against {w}", e["id"]);
        }
    }
    let log = worker.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "a secret leaked into the log:\n{log}");
    }
    worker
}

/// [`predict_fixture_over`], then a clean SIGTERM.
fn predict_and_stop(props: &[(&str, String)], topic: &str, codec: &str, secrets: &[&str]) {
    let mut worker = predict_fixture_over(props, topic, codec, secrets);
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.log_text());
}

/// The distinct codecs of the record batches stored in `topic` (one partition), read on the
/// wire from the broker's plaintext port (`tests/e2e/batch_codecs.py`): clients decompress
/// transparently, so only the batch attributes show what the producer did.
fn batch_codecs(cluster: &TlsCluster, topic: &str) -> Vec<String> {
    let out = Command::new("python3")
        .arg(repo().join("tests/e2e/batch_codecs.py"))
        .args([cluster.plain.as_str(), topic, "1"])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mut codecs: Vec<String> = text.split_whitespace().skip(1).map(str::to_string).collect();
    assert!(!codecs.is_empty(), "no batches in {topic}: {text}");
    codecs.sort();
    codecs.dedup();
    codecs
}

#[test]
fn the_worker_predicts_over_tls_and_mtls_with_every_compression_codec() {
    let cluster = TlsCluster::start(Front::Tls { mtls: false });
    // The worker's own producer compresses as `[kafka]` says: its batches are zstd on the wire.
    let mut zstd = cluster.properties("ca.pem", false);
    zstd.push(("compression.type", "zstd".into()));
    predict_and_stop(&zstd, "tls-zstd", "zstd", &[]);
    assert_eq!(batch_codecs(&cluster, "tls-zstd-pred"), ["zstd"]);
    predict_and_stop(&cluster.properties("ca.pem", false), "tls-lz4", "lz4", &[]);
    assert_eq!(batch_codecs(&cluster, "tls-lz4-pred"), ["none"]);
    let mtls = TlsCluster::start(Front::Tls { mtls: true });
    predict_and_stop(&mtls.properties("ca.pem", true), "mtls-snappy", "snappy", &[]);
    predict_and_stop(&mtls.properties("ca.pem", true), "mtls-gzip", "gzip", &[]);
}

/// Starts a worker with `kafka` and expects exit code 2 within 30 s, naming `needle`.
fn refused(kafka: &str, needle: &str, secret: Option<&str>) {
    let mut worker = Worker::start(&worker_config(kafka, "refused", "co2-mlp"));
    let status = wait_exit(&mut worker.child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running after 30 s:\n{}", worker.log_text()));
    let log = worker.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains(needle), "expected {needle:?} in:\n{log}");
    if let Some(secret) = secret {
        assert!(!log.contains(secret), "the secret leaked:\n{log}");
    }
}

#[test]
fn tls_mistakes_stop_start_up_with_exit_2_naming_the_cause() {
    let cluster = TlsCluster::start(Front::Tls { mtls: false });
    // A CA that did not sign the broker's certificate.
    refused(&toml_lines(&cluster.properties("other-ca.pem", false)), "not signed by a CA this client trusts", None);
    // A plaintext client on the TLS port.
    refused(&format!("\"bootstrap.servers\" = \"{}\"\n", cluster.tls), "security.protocol", None);
    // A TLS client on the plaintext port, with a key password that must not be printed.
    let mut props = cluster.properties("ca.pem", false);
    props[0].1 = cluster.plain.clone();
    props.push(("ssl.key.password", "do-not-print-me".into()));
    // A real Kafka broker closes the connection at once; nisshi waits, so the handshake times out.
    props.push(("socket.connection.setup.timeout.ms", "5000".into()));
    refused(&toml_lines(&props), "a TLS client on a plaintext listener", Some("do-not-print-me"));
}

/// `--print-config` with `props` in `[kafka]` lists `key` but never the `secret` it holds.
fn print_config_redacts(props: &[(&str, String)], key: &str, secret: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamcast.toml");
    std::fs::write(&path, worker_config(&toml_lines(props), "print", "co2-mlp")).unwrap();
    let out = Command::new(common::bin()).args(["run", "--print-config", "--config"]).arg(&path).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains(key), "{printed}");
    assert!(!printed.contains(secret), "--print-config printed the value of {key}:\n{printed}");
}

#[test]
fn sasl_scram_and_plain_predict_and_a_wrong_password_exits_2() {
    let ssl = TlsCluster::start(Front::Sasl { tls: true });
    let scram512 = ssl.sasl_properties("SASL_SSL", "SCRAM-SHA-512", PASSWORD);
    print_config_redacts(&scram512, "sasl.password", PASSWORD);

    predict_and_stop(&scram512, "sasl-scram512", "zstd", &[PASSWORD]);
    predict_and_stop(&ssl.sasl_properties("SASL_SSL", "PLAIN", PASSWORD), "sasl-plain", "lz4", &[PASSWORD]);
    let wrong = "pw-wrong-2b7d0c";
    refused(
        &toml_lines(&ssl.sasl_properties("SASL_SSL", "SCRAM-SHA-512", wrong)),
        "authentication failed",
        Some(wrong),
    );
    let plaintext = TlsCluster::start(Front::Sasl { tls: false });
    let scram256 = plaintext.sasl_properties("SASL_PLAINTEXT", "SCRAM-SHA-256", PASSWORD);
    predict_and_stop(&scram256, "sasl-scram256", "gzip", &[PASSWORD]);
}

/// OAUTHBEARER with OIDC: librdkafka fetches a token from the endpoint with the client
/// credentials (this needs the libcurl built into rdkafka), and the proxy checks it like a broker
/// with an OIDC validator. A wrong client secret gets no token, and the worker exits 2 naming the
/// `sasl.oauthbearer.*` keys; neither secret is ever printed.
#[test]
fn oauthbearer_oidc_predicts_and_a_wrong_client_secret_exits_2() {
    let cluster = TlsCluster::start(Front::Sasl { tls: true });
    let oidc = cluster.oidc_properties(PASSWORD);
    print_config_redacts(&oidc, "sasl.oauthbearer.client.secret", PASSWORD);

    predict_and_stop(&oidc, "oidc", "zstd", &[PASSWORD]);
    let wrong = "secret-wrong-5c19e2";
    refused(&toml_lines(&cluster.oidc_properties(wrong)), "sasl.oauthbearer.client.secret", Some(wrong));
}

/// librdkafka retries a refused login forever; the worker stops instead, so the orchestrator
/// restarts it and the start-up probe says what is wrong.
#[test]
fn a_password_rotated_under_a_running_worker_stops_it_with_exit_2() {
    let cluster = TlsCluster::start(Front::Sasl { tls: true });
    let props = cluster.sasl_properties("SASL_SSL", "SCRAM-SHA-512", PASSWORD);
    let mut worker = predict_fixture_over(&props, "sasl-rotated", "zstd", &[PASSWORD]);
    // The proxy takes a new password and drops every connection: the worker's logins now fail.
    unsafe {
        libc::kill(cluster.proxy.0.id() as i32, libc::SIGUSR1);
    }
    let rotated = Instant::now();
    let status = wait_exit(&mut worker.child, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("still running 90 s after the rotation:\n{}", worker.log_text()));
    let log = worker.log_text();
    eprintln!("stopped {:.1} s after the rotation", rotated.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("refused the connection: authentication failed"), "{log}");
    assert!(!log.contains(PASSWORD), "the password leaked:\n{log}");
}

/// SASL against a real broker, when one is given: no broker available here completes librdkafka's
/// SASL handshake (nisshi 0.6.0's `--authentication` closed the connection when probed). Set
/// `STREAMCAST_TEST_SASL_BOOTSTRAP`, `_MECHANISM` (e.g. SCRAM-SHA-512), `_USERNAME`, `_PASSWORD`,
/// and `_PROTOCOL` (SASL_SSL or SASL_PLAINTEXT; `_CA` for a private CA) to run it: the right
/// password starts a worker, a wrong one exits 2 naming authentication without printing it.
#[test]
#[ignore = "needs a SASL broker: set STREAMCAST_TEST_SASL_* and run with --ignored"]
fn sasl_with_the_right_and_a_wrong_password_when_a_broker_is_given() {
    let var = |k: &str| std::env::var(format!("STREAMCAST_TEST_SASL_{k}")).ok();
    let (Some(servers), Some(user), Some(password)) = (var("BOOTSTRAP"), var("USERNAME"), var("PASSWORD")) else {
        eprintln!("skipped: set STREAMCAST_TEST_SASL_BOOTSTRAP, _USERNAME and _PASSWORD to run it");
        return;
    };
    let mut props = vec![
        ("bootstrap.servers", servers),
        ("security.protocol", var("PROTOCOL").unwrap_or_else(|| "SASL_SSL".into())),
        ("sasl.mechanism", var("MECHANISM").unwrap_or_else(|| "SCRAM-SHA-512".into())),
        ("sasl.username", user),
    ];
    if let Some(ca) = var("CA") {
        props.push(("ssl.ca.location", ca));
    }
    let wrong = format!("{password}-wrong");
    let with = |pw: &str| {
        let mut p = props.clone();
        p.push(("sasl.password", pw.to_string()));
        toml_lines(&p)
    };
    refused(&with(&wrong), "authentication failed", Some(&wrong));
    let mut worker = Worker::start(&worker_config(&with(&password), "sasl", "co2-mlp"));
    // Past the probe: the topics this config names may not exist there, which is a later error.
    std::thread::sleep(Duration::from_secs(20));
    let log = worker.log_text();
    assert!(!log.contains("refused the connection"), "{log}");
    assert!(!log.contains(&password), "the password leaked:\n{log}");
    let _ = worker.child.kill();
}
