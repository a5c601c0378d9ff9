"""`make bench`: the worker against the local nisshi broker, with confluent-kafka as the client.

For each case (passthrough ceiling, co2-mlp, co2-gru) on fresh topics:
  1. throughput: once the worker is assigned and warm, a burst of N events is produced as fast as
     the client can; the span between the first and last output record's timestamps (set by the
     worker's producer) gives sustained events/s. The worker's CPU seconds over the burst (from
     /proc) give CPU-seconds per 1,000 events, which stays meaningful when the local broker or the
     Python producer is the bottleneck;
  2. latency: events are produced at a fixed rate while the worker runs; end-to-end latency is
     the time from handing an event to the producer to reading its prediction back.
The co2-mlp case runs a second time over TLS ("co2-mlp-tls"): nisshi cannot serve TLS, so a
second nisshi sits behind the TLS-terminating proxy of the tests (tests/e2e/tls_proxy.py, Python
asyncio) with a throwaway CA; the worker and the bench's own clients all speak TLS. The worker's
CPU per 1,000 events is the cost of encryption to the worker; events/s and latency are bounded by
the single-threaded Python proxy, not by the worker.
Results are printed and written to .bench/results.json. This is a benchmark, not a test.

Environment: STREAMCAST_TEST_BOOTSTRAP (set by scripts/with-broker.sh), NISSHI (the broker binary,
for the TLS case), BENCH_EVENTS (default 200000), BENCH_RATE (default 2000/s), BENCH_SECONDS
(default 10), BENCH_CASES (a comma-separated subset of passthrough,co2-mlp,co2-gru,co2-mlp-tls).
"""
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "streamcast"
BOOT = os.environ["STREAMCAST_TEST_BOOTSTRAP"]
# librdkafka properties every client (the worker's and the bench's) adds: TLS for the TLS case.
SECURITY: dict = {}
N = int(os.environ.get("BENCH_EVENTS", "200000"))
RATE = float(os.environ.get("BENCH_RATE", "2000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PARTITIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rows():
    lines = (ROOT / "data" / "co2_weekly.csv").read_text().splitlines()[1:]
    return [[float(x) for x in line.split(",")[1:]] for line in lines]


DATA = rows()


def event(i: int, prefix: str) -> tuple[str, bytes]:
    series = f"s-{i % 200}"
    values = DATA[(i * 7 + (i % 200) * 31) % len(DATA)]
    body = {"id": f"{prefix}-{i}", "series_id": series, "timestamp": "2026-11-26T19:00:00Z", "features": values}
    return series, json.dumps(body, separators=(",", ":")).encode()


def create_topics(tag: str) -> dict:
    names = {k: f"bench-{tag}-{k}-{time.time_ns()}" for k in ["in", "pred", "dlq", "act", "met", "alr"]}
    admin = AdminClient({"bootstrap.servers": BOOT, **SECURITY})
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names.values()])
    for f in futures.values():
        f.result(30)
    return names


def config(names: dict, model: str, passthrough: bool) -> str:
    return f"""
[kafka]
"bootstrap.servers" = "{BOOT}"
{"".join(f'"{k}" = "{v}"' + chr(10) for k, v in SECURITY.items())}"session.timeout.ms" = 6000
# nisshi holds a fetch for the whole fetch.wait.max.ms even when data is there; Kafka does not.
"fetch.wait.max.ms" = 5
[consumer]
group_id = "bench-{names['in']}"
[topics]
input = "{names['in']}"
predictions = "{names['pred']}"
dlq = "{names['dlq']}"
actuals = "{names['act']}"
metrics = "{names['met']}"
alerts = "{names['alr']}"
[model]
root = "{ROOT / 'models'}"
name = "{model}"
version = "1"
execution_provider = "cpu"
[processing]
passthrough = {str(passthrough).lower()}
[http]
listen = ""
[telemetry]
log_format = "text"
log_level = "warn"
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def reader(topic: str) -> Consumer:
    c = Consumer({"bootstrap.servers": BOOT, **SECURITY, "group.id": f"bench-reader-{time.time_ns()}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 5})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return c


def start_worker(cfg_text: str, log: Path) -> subprocess.Popen:
    cfg = Path(tempfile.mkstemp(suffix=".toml")[1])
    cfg.write_text(cfg_text)
    # --role worker: the monitor side task would add its own reads to the worker's CPU figures.
    return subprocess.Popen([str(BIN), "run", "--role", "worker", "--config", str(cfg)], stderr=log.open("w"), stdout=subprocess.DEVNULL)


def read_ids(c: Consumer, sink: dict, timeout: float) -> list:
    """Consumes what is available; returns the messages (errors dropped)."""
    return [m for m in c.consume(5000, timeout) if not m.error()]


def run_case(tag: str, model: str, passthrough: bool) -> dict:
    names = create_topics(tag)
    log = ROOT / ".bench" / f"{tag}.log"
    prod = Producer({"bootstrap.servers": BOOT, **SECURITY, "linger.ms": 5, "queue.buffering.max.messages": 2000000})
    c = reader(names["pred"])
    proc = start_worker(config(names, model, passthrough), log)

    # Wait until the worker is assigned and warm: one event in, its prediction out.
    key, value = event(0, "warm")
    prod.produce(names["in"], key=key, value=value)
    prod.flush(30)
    deadline = time.monotonic() + 90
    while not read_ids(c, {}, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{tag}: worker did not start (see {log})")

    # Throughput: a burst of N events; the worker's own record timestamps time the drain.
    cpu0 = cpu_seconds(proc.pid)
    for i in range(N):
        key, value = event(i, "tp")
        prod.produce(names["in"], key=key, value=value)
        if i % 10000 == 0:
            prod.poll(0)
    prod.flush(120)
    stamps = []
    deadline = time.monotonic() + 300
    while len(stamps) < N and time.monotonic() < deadline:
        stamps.extend(m.timestamp()[1] for m in read_ids(c, {}, 0.5))
    cpu1 = cpu_seconds(proc.pid)
    drained = len(stamps)
    span = (max(stamps) - min(stamps)) / 1e3 if stamps else float("nan")
    throughput = (drained - 1) / span if span and span > 0 else float("nan")
    cpu_per_1000 = (cpu1 - cpu0) / (drained / 1000) if drained else float("nan")

    # Latency at a fixed rate.
    sent: dict[str, float] = {}
    lat: list[float] = []

    def collect(timeout: float) -> None:
        for m in read_ids(c, {}, timeout):
            ident = json.loads(m.value())["id"]
            t = sent.pop(ident, None)
            if t is not None:
                lat.append((time.monotonic() - t) * 1e3)

    total = int(RATE * SECONDS)
    t0 = time.monotonic()
    for i in range(total):
        target = t0 + i / RATE
        while time.monotonic() < target:
            collect(0)
        key, value = event(i, "lat")
        sent[f"lat-{i}"] = time.monotonic()
        prod.produce(names["in"], key=key, value=value)
        prod.poll(0)
    prod.flush(30)
    deadline = time.monotonic() + 30
    while sent and time.monotonic() < deadline:
        collect(0.1)
    proc.terminate()
    proc.wait(60)
    c.close()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * (len(lat) - 1)))] if lat else float("nan")  # noqa: E731
    return {
        "case": tag,
        "model": None if passthrough else model,
        "burst_events": N,
        "drained": drained,
        "throughput_events_per_s": round(throughput, 1),
        "worker_cpu_seconds_per_1000_events": round(cpu_per_1000, 4),
        "latency_rate_events_per_s": RATE,
        "latency_events": total,
        "latency_answered": len(lat),
        "latency_p50_ms": round(q(0.50), 2),
        "latency_p99_ms": round(q(0.99), 2),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"port {port} did not open")
            time.sleep(0.1)


def tls_cluster(tmp: Path) -> list:
    """Starts a nisshi behind the TLS proxy and points BOOT and SECURITY at it; returns the
    processes to stop."""
    global BOOT
    ssl = lambda *a: subprocess.run(["openssl", *a], cwd=tmp, check=True, capture_output=True)  # noqa: E731
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.pem")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    plain, tls = free_port(), free_port()
    broker = subprocess.Popen([os.environ.get("NISSHI", "nisshi"), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
                               "--advertised-listener-url", f"tcp://127.0.0.1:{tls}", "--storage-engine", "memory://bench-tls/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, str(ROOT / "tests" / "e2e" / "tls_proxy.py"), str(tls), f"127.0.0.1:{plain}",
                              str(tmp / "server.pem"), str(tmp / "server.key")], stdout=subprocess.DEVNULL)
    wait_port(plain)
    wait_port(tls)
    BOOT = f"127.0.0.1:{tls}"
    SECURITY.update({"security.protocol": "ssl", "ssl.ca.location": str(tmp / "ca.pem")})
    return [proxy, broker]


def main() -> None:
    (ROOT / ".bench").mkdir(exist_ok=True)
    cases = [("passthrough", "co2-mlp", True), ("co2-mlp", "co2-mlp", False), ("co2-gru", "co2-gru", False),
             ("co2-mlp-tls", "co2-mlp", False)]
    only = os.environ.get("BENCH_CASES")
    if only:
        cases = [c for c in cases if c[0] in only.split(",")]
    results = []
    stop = []
    try:
        for tag, model, passthrough in cases:
            if tag.endswith("-tls") and not stop:
                stop = tls_cluster(Path(tempfile.mkdtemp(prefix="bench-tls-")))
            print(f"bench: {tag} ...", file=sys.stderr, flush=True)
            results.append(run_case(tag, model, passthrough))
    finally:
        for p in stop:
            p.kill()
    machine = {
        "cpus": os.cpu_count(),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor()),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "broker": "nisshi 0.6.0, memory storage, same machine",
    }
    out = {"machine": machine, "results": results, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (ROOT / ".bench" / "results.json").write_text(json.dumps(out, indent=2))
    print(f"machine: {machine['cpus']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB; {machine['broker']}")
    print(f"{'case':<12} {'events/s':>10} {'CPU s/1k ev':>12} {'p50 ms':>8} {'p99 ms':>8}  (latency at {RATE:.0f} ev/s)")
    for r in results:
        print(f"{r['case']:<12} {r['throughput_events_per_s']:>10.0f} {r['worker_cpu_seconds_per_1000_events']:>12.4f} {r['latency_p50_ms']:>8.2f} {r['latency_p99_ms']:>8.2f}")
    print(f"written to {ROOT / '.bench' / 'results.json'}")


if __name__ == "__main__":
    main()
