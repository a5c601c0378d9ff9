"""`make bench`: streamcast against the alternatives, side by side, on one local nisshi broker.

Workers (BENCH_WORKERS, a comma-separated subset, in this order):
  passthrough  streamcast with `processing.passthrough = true` (consume -> produce, no decoding or
               inference): the ceiling of this broker and client;
  streamcast   target/release/streamcast `run --role worker` (so the monitor's reads are not
               counted);
  tuned        bench/tuned_worker.py: confluent-kafka batch consume, orjson, numpy, one
               onnxruntime run per batch, at-least-once;
  seed         bench/seed_worker.py: the notebook loop, kafka-python, json, pandas, one
               onnxruntime run per message.
Every worker sees the same events for each bundle (BENCH_MODELS: co2-mlp,co2-gru,co2-nbeats) and each event
form (BENCH_FORMS): `observation` events carry one observation (`features`) and the worker keeps
each series' window; `window` events also carry their whole `window` (the bundle's `window` steps
from data/co2_weekly.csv, oldest first) and are stateless.

Each case (worker x bundle x form) on fresh topics of 3 partitions, every worker with
session.timeout.ms 30000 and, for its consumer, a 5 ms fetch wait (nisshi holds a fetch for the
whole wait even when data is there; Kafka does not):
  1. start the worker, produce one warm-up event and wait for its prediction: start-up, model
     load and the group join are excluded from every figure;
  2. idle CPU: the worker's CPU (utime + stime, /proc/PID/stat) over BENCH_IDLE_SECONDS (10) of no
     traffic, in percent of one core;
  3. preloaded backlog: the worker is SIGSTOPped, BENCH_EVENTS (100000; the seed worker
     BENCH_SEED_EVENTS, 3000) events are produced and flushed, the worker is SIGCONTed and every
     prediction read back. events/s = drained / (the last prediction record's timestamp, set by
     the worker's producer, - the SIGCONT time); CPU ms per 1,000 events = the worker's CPU over
     the drain / (drained / 1000); peak RSS = the highest VmRSS sampled during the drain. The
     backlog's predictions are compared with streamcast's for the same event ids (within 1e-4,
     and the same `warmup` flag);
  4. latency at a fixed rate: BENCH_RATE (2000) events/s for BENCH_SECONDS (10); end-to-end p50 and
     p99, from handing an event to the producer to reading its prediction back; and p50 and p99 to
     the worker's produce, from handing the event over to its prediction record's timestamp (every
     worker's producer stamps a record when it is handed over: librdkafka and kafka-python by
     default, streamcast with the batch's `produced_at`), which leaves out the way back to the
     bench's reader; and for streamcast its own `latency_ms` (poll to producer). The seed worker
     runs at half its own backlog rate when that is below BENCH_RATE (BENCH_SEED_RATE overrides);
  5. streamcast and passthrough only: the same at half of streamcast's backlog rate of the same
     bundle and form (the most this pipeline drains; BENCH_HIGH_RATE overrides), in
     BENCH_HIGH_PAIRS (3) interleaved pairs (which worker runs first alternates), each run on
     fresh topics with a fresh worker. "p99 added over passthrough" is the median over the pairs
     of streamcast's p99 minus passthrough's, end to end and to the worker's produce; every
     pair's difference is kept. A run whose queues built up (more than 1 s of events waiting,
     which also stops it early, or p99 over 250 ms) or whose load fell short of the rate is noted.
The latency runs' load is examples/loadgen.rs: a librdkafka producer and reader on two threads,
sending the same event bytes as this file. BENCH_LOAD=python uses the Python loop in this file
instead (one confluent-kafka producer and reader in one loop), which took 60-90 % of a core at
115 000 events/s and slowed the broker and the worker with it. loadgen reports its own CPU
(load_cpu_percent).
BENCH_FORECAST (default 1; 0 skips it) adds what the forecasting features cost: streamcast on
co2-gru observation events on a weekly grid per series (BENCH_FORECAST_EVENTS, 200000; the median
of BENCH_FORECAST_REPEATS, 3, interleaved runs), backlog only, without intervals or
event-time windows, with calibrated intervals, with event-time windows, and with both.
The bench's producers use linger.ms 5. BENCH_TLS=1 adds streamcast co2-mlp (observation events)
over TLS ("co2-mlp-tls"): nisshi cannot serve TLS, so a second nisshi (NISSHI) sits behind the
tests' TLS-terminating proxy (tests/e2e/tls_proxy.py, single-threaded Python asyncio) with a
throwaway CA. BENCH_CASES (the older selection: passthrough, co2-mlp, co2-gru, co2-mlp-tls) still
works: the bundles it names become BENCH_MODELS and co2-mlp-tls turns on BENCH_TLS.

Results are printed and written to .bench/results.json, and the README's tables (Markdown) to
.bench/table.md; `scripts/bench.py --table` prints those tables again from .bench/results.json.
This is a benchmark, not a test: the broker, the bench's own clients and the worker share this
machine's cores.
"""
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "streamcast"
PY = sys.executable
# Set by scripts/with-broker.sh; `--table` needs no broker.
BOOT = os.environ.get("STREAMCAST_TEST_BOOTSTRAP", "")
# librdkafka properties every client (the worker's and the bench's) adds: TLS for the TLS case.
SECURITY: dict = {}
env = os.environ.get
N = int(env("BENCH_EVENTS", "100000"))
SEED_N = int(env("BENCH_SEED_EVENTS", "3000"))
RATE = float(env("BENCH_RATE", "2000"))
SECONDS = float(env("BENCH_SECONDS", "10"))
IDLE_SECONDS = float(env("BENCH_IDLE_SECONDS", "10"))
WORKERS = ["passthrough", "streamcast", "tuned", "seed"]
MODELS = ["co2-mlp", "co2-gru", "co2-nbeats"]
FORMS = ["observation", "window"]
PARTITIONS = 3
TOLERANCE = 1e-4
# A latency run whose p99 is above this had queues building up: the rate was not carried.
SATURATED_MS = 250
# A latency run stops sending once this many seconds of its events are waiting for an answer.
ABORT_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The latency runs' load: examples/loadgen.rs ("rust"), or the Python loop below ("python").
LOAD = env("BENCH_LOAD", "rust")
# Interleaved passthrough/streamcast pairs at the high rate.
HIGH_PAIRS = int(env("BENCH_HIGH_PAIRS", "3"))
LOADGEN = ROOT / "target" / "release" / "examples" / "loadgen"
LATENCY_MS = re.compile(rb'"latency_ms":(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)')
TIMESTAMP = "2026-11-26T19:00:00Z"
GRID_START = 0  # 1970-01-01, a Thursday: weekly steps from there
WEEK_S = 7 * 86400


def selection() -> tuple:
    pick = lambda name, default: [x for x in env(name, ",".join(default)).split(",") if x]  # noqa: E731
    workers, models, forms = pick("BENCH_WORKERS", WORKERS), pick("BENCH_MODELS", MODELS), pick("BENCH_FORMS", FORMS)
    tls = env("BENCH_TLS", "") not in ("", "0")
    legacy = [x for x in env("BENCH_CASES", "").split(",") if x]
    if legacy:
        models = [m for m in MODELS if m in legacy] or ([] if "co2-mlp-tls" in legacy else models)
        tls = tls or "co2-mlp-tls" in legacy
    for name, got, known in [("BENCH_WORKERS", workers, WORKERS), ("BENCH_MODELS", models, MODELS), ("BENCH_FORMS", forms, FORMS)]:
        if set(got) - set(known):
            raise SystemExit(f"{name}: unknown {sorted(set(got) - set(known))}; known: {','.join(known)}")
    return [w for w in WORKERS if w in workers], models, [f for f in FORMS if f in forms], tls


# -- events ------------------------------------------------------------------------------------
def rows() -> list:
    lines = (ROOT / "data" / "co2_weekly.csv").read_text().splitlines()[1:]
    return [[float(x) for x in line.split(",")[1:]] for line in lines]


DATA = rows()
ROW_JSON = [json.dumps(r, separators=(",", ":")) for r in DATA]


class Events:
    """Event `i` of a run is the same bytes for every worker. Observation events walk the CO2 rows
    in a scrambled order per series; window events carry `window` consecutive rows (and the last
    one as `features`)."""

    def __init__(self, form: str, window: int, grid: bool = False):
        self.form, self.window, self.grid = form, window, grid
        self._windows: dict = {}

    def __call__(self, i: int, prefix: str) -> tuple:
        series = f"s-{i % 200}"
        # On a grid, each series' events are consecutive weeks (event-time windows need that).
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(GRID_START + (i // 200) * WEEK_S)) if self.grid else TIMESTAMP
        head = f'{{"id":"{prefix}-{i}","series_id":"{series}","timestamp":"{ts}","features":'
        if self.form == "observation":
            return series, (head + ROW_JSON[(i * 7 + (i % 200) * 31) % len(DATA)] + "}").encode()
        start = (i * 7 + (i % 200) * 31) % (len(DATA) - self.window + 1)
        win = self._windows.get(start)
        if win is None:
            win = self._windows[start] = ",".join(ROW_JSON[start:start + self.window])
        return series, f'{head}{ROW_JSON[start + self.window - 1]},"window":[{win}]}}'.encode()


def bundle_window(model: str) -> int:
    return json.loads((ROOT / "models" / model / "1" / "bundle.json").read_text())["window"]


# -- broker and worker plumbing -----------------------------------------------------------------
def create_topics(tag: str) -> dict:
    names = {k: f"bench-{tag}-{k}-{time.time_ns()}" for k in ["in", "pred", "dlq", "act", "met", "alr"]}
    admin = AdminClient({"bootstrap.servers": BOOT, **SECURITY})
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names.values()])
    for f in futures.values():
        f.result(30)
    return names


def delete_topics(names: dict) -> None:
    """Frees the broker's memory (its storage is in memory) for the next cases; best effort."""
    admin = AdminClient({"bootstrap.servers": BOOT, **SECURITY})
    for f in admin.delete_topics(list(names.values()), operation_timeout=30).values():
        try:
            f.result(30)
        except Exception as e:  # noqa: BLE001 - a leftover topic only costs memory
            print(f"bench: could not delete a topic: {e}", file=sys.stderr)


def config(names: dict, model: str, passthrough: bool, extra: str = "", root: Path | None = None,
           client_defaults: bool = False, http: str = "") -> str:
    """The worker's config; `client_defaults` keeps librdkafka's session timeout and fetch wait."""
    # nisshi holds a fetch for the whole fetch.wait.max.ms even when data is there; Kafka does not.
    tuned = "" if client_defaults else '"session.timeout.ms" = 30000\n"fetch.wait.max.ms" = 5\n'
    return f"""
[kafka]
"bootstrap.servers" = "{BOOT}"
{"".join(f'"{k}" = "{v}"' + chr(10) for k, v in SECURITY.items())}{tuned}[consumer]
group_id = "bench-{names['in']}"
[topics]
input = "{names['in']}"
predictions = "{names['pred']}"
dlq = "{names['dlq']}"
actuals = "{names['act']}"
metrics = "{names['met']}"
alerts = "{names['alr']}"
[model]
root = "{root or ROOT / 'models'}"
name = "{model}"
version = "1"
execution_provider = "cpu"
[processing]
passthrough = {str(passthrough).lower()}
[http]
listen = "{http}"
[telemetry]
log_format = "text"
log_level = "warn"
{extra}"""


def start_worker(worker: str, names: dict, model: str, log: Path, extra: str = "", root: Path | None = None) -> subprocess.Popen:
    if worker in ("streamcast", "passthrough"):
        cfg = Path(tempfile.mkstemp(suffix=".toml")[1])
        cfg.write_text(config(names, model, worker == "passthrough", extra, root))
        # --role worker: the monitor side task would add its own reads to the worker's CPU figures.
        cmd = [str(BIN), "run", "--role", "worker", "--config", str(cfg)]
    else:
        cmd = [PY, str(ROOT / "bench" / f"{worker}_worker.py"), "--bootstrap", BOOT, "--input", names["in"],
               "--output", names["pred"], "--group", f"bench-{names['in']}", "--bundle", str(ROOT / "models" / model / "1")]
        if worker == "tuned":
            cmd += ["-X", "fetch.wait.max.ms=5", "-X", "session.timeout.ms=30000"]
        else:
            cmd += ["--fetch-max-wait-ms", "5", "--session-timeout-ms", "30000"]
    return subprocess.Popen(cmd, stderr=log.open("a"), stdout=subprocess.DEVNULL)


def stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reader(topic: str) -> Consumer:
    c = Consumer({"bootstrap.servers": BOOT, **SECURITY, "group.id": f"bench-reader-{time.time_ns()}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 5})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return c


def consume(c: Consumer, timeout: float) -> list:
    """What is available within `timeout`; errors dropped."""
    return [m for m in c.consume(5000, timeout) if not m.error()]


def ident(value: bytes) -> bytes:
    """The `id` of a prediction (or, for passthrough, of the input event): every worker writes it
    first, so a slice does; anything else is parsed."""
    if value.startswith(b'{"id":"'):
        return value[7:value.index(b'"', 7)]
    return orjson.loads(value)["id"].encode()


def quantile(xs: list, p: float) -> float:
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1)))] if xs else float("nan")


# -- the phases of a case -----------------------------------------------------------------------
def warm_up(rig: "Rig") -> None:
    # Index -1: on a grid, the week before every backlog event of its series.
    key, value = rig.events(-1, "warm")
    rig.prod.produce(rig.topic, key=key, value=value)
    rig.prod.flush(30)
    deadline = time.monotonic() + 120
    while not consume(rig.c, 0.2):
        if rig.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{rig.tag}: worker did not start (see {rig.log})")


def idle_cpu(pid: int) -> tuple:
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return round((cpu1 - cpu0) / (t1 - t0) * 100, 2), round(rss_mib(pid), 1)


def backlog(rig: "Rig", n: int) -> tuple:
    proc, prod, c, topic, events, tag = rig.proc, rig.prod, rig.c, rig.topic, rig.events, rig.tag
    pid = proc.pid
    os.kill(pid, signal.SIGSTOP)
    for i in range(n):
        key, value = events(i, "bl")
        while True:
            try:
                prod.produce(topic, key=key, value=value)
                break
            except BufferError:
                prod.poll(0.1)
        if i % 10000 == 0:
            prod.poll(0)
    prod.flush(120)
    cpu0 = cpu_seconds(pid)
    t_cont = time.time()
    os.kill(pid, signal.SIGCONT)
    got: list = []
    peak = rss_mib(pid)
    last_progress = time.monotonic()
    while len(got) < n:
        batch = consume(c, 0.05)
        peak = max(peak, rss_mib(pid))
        if batch:
            got.extend((m.value(), m.timestamp()[1]) for m in batch)
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > 60 or proc.poll() is not None:
            print(f"bench: {tag}: drained {len(got)} of {n} predictions, then nothing for 60 s", file=sys.stderr)
            break
    cpu1 = cpu_seconds(pid)
    drained = len(got)
    span = max(ts for _, ts in got) / 1e3 - t_cont if got else float("nan")
    figures = {
        "backlog_events": n,
        "drained": drained,
        "events_per_s": round(drained / span, 1) if span > 0 else float("nan"),
        "cpu_ms_per_1000_events": round((cpu1 - cpu0) * 1e3 / (drained / 1000), 3) if drained else float("nan"),
        "peak_rss_mib": round(peak, 1),
    }
    return figures, [v for v, _ in got]


def latency(rig: "Rig", rate: float, seconds: float, prefix: str) -> dict:
    """Events at `rate` for `seconds`: by examples/loadgen.rs unless BENCH_LOAD=python."""
    if LOAD == "python":
        return latency_python(rig, rate, seconds, prefix)
    assert not rig.events.grid, "loadgen sends the bench's plain events only"
    # The rig's reader is not used from here on: closed, so that it does not keep prefetching the
    # output (librdkafka fetches ahead without polls) from the broker during the measurement.
    if rig.c is not None:
        rig.c.close()
        rig.c = None
    rows = ROOT / ".bench" / "rows.jsonl"
    extra = [x for k, v in SECURITY.items() for x in ("-X", f"{k}={v}")]
    cmd = [str(LOADGEN), "--bootstrap", BOOT, "--input", rig.topic, "--output", rig.names["pred"],
           "--partitions", str(PARTITIONS), "--rows", str(rows), "--form", rig.events.form,
           "--window", str(rig.events.window), "--prefix", prefix, "--rate", str(rate), "--seconds", str(seconds),
           "--abort-s", str(ABORT_S), *(["--own-latency"] if rig.worker == "streamcast" else []), *extra]
    # Its worst case: 10 s for the watermarks and 10 s for metadata, the run, a 30 s flush and
    # max(30 s, the run) for the answers.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * seconds + 150)
    if done.returncode != 0:
        raise SystemExit(f"bench: {rig.tag}: loadgen failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    # No answers gives null quantiles; NaN, as the Python loop reported, keeps the checks working.
    return {k: float("nan") if v is None else v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def latency_python(rig: "Rig", rate: float, seconds: float, prefix: str) -> dict:
    """Events at `rate` for `seconds`, sent in 1 ms ticks; latency from produce to read-back.
    Reports the rate the loop achieved (it sends whatever is due when it falls behind). When more
    than ABORT_S of traffic is outstanding the worker is not keeping up: sending stops early (a
    run that piles up millions of events also slows the in-memory broker for what follows)."""
    prod, c, topic, events = rig.prod, rig.c, rig.topic, rig.events
    sent: dict = {}
    lat: list = []
    # Send time to the prediction record's timestamp (wall clock, milliseconds): the way in and
    # through the worker, without the way back to this loop's reader, which shares its core with
    # this loop's producer and is the first to fall behind at high rates.
    to_produce: list = []
    wall = time.time() - time.monotonic()
    # streamcast's own `latency_ms` (poll to producer), from every 8th prediction: parsing all of
    # them would slow this loop, the rig's bottleneck at high rates.
    in_worker: list = []

    def collect(timeout: float) -> None:
        batch = consume(c, timeout)
        now = time.monotonic()
        for m in batch:
            t = sent.pop(ident(m.value()), None)
            if t is not None:
                lat.append((now - t) * 1e3)
                kind, stamp = m.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    to_produce.append(stamp - (t + wall) * 1e3)
                if len(lat) % 8 == 0 and (own := LATENCY_MS.search(m.value())):
                    in_worker.append(float(own.group(1)))

    total = int(rate * seconds)
    limit = max(1000, rate * ABORT_S)
    aborted = False
    i = 0
    t0 = time.monotonic()
    while i < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            key, value = events(i, prefix)
            try:
                prod.produce(topic, key=key, value=value)
            except BufferError:
                prod.poll(0.01)
                continue
            sent[f"{prefix}-{i}".encode()] = time.monotonic()
            i += 1
        prod.poll(0)
        collect(0.001)
        if len(sent) > limit:
            aborted = True
            break
    sent_span = time.monotonic() - t0
    prod.flush(30)
    deadline = time.monotonic() + max(30, i / rate)
    while sent and time.monotonic() < deadline:
        collect(0.05)
    lat.sort()
    to_produce.sort()
    in_worker.sort()
    return {
        "target_rate": round(rate, 1),
        "achieved_rate": round(i / sent_span, 1),
        "events": i,
        "answered": len(lat),
        "p50_ms": round(quantile(lat, 0.50), 2),
        "p99_ms": round(quantile(lat, 0.99), 2),
        "p50_to_produce_ms": round(quantile(to_produce, 0.50), 2),
        "p99_to_produce_ms": round(quantile(to_produce, 0.99), 2),
        **({"p50_in_worker_ms": round(quantile(in_worker, 0.50), 2), "p99_in_worker_ms": round(quantile(in_worker, 0.99), 2)}
           if in_worker else {}),
        **({"aborted_after_s": round(sent_span, 1)} if aborted else {}),
        "load": "python",
    }


def compare(reference: dict | None, values: list) -> dict | None:
    """These predictions against streamcast's, over the ids both have. Equal means every value is
    within TOLERANCE relative (|a - b| <= 1e-4 * max(|b|, 1), the rule streamcast's golden check
    uses) and the `warmup` flags agree. Both sides compute in float32 with different batch sizes,
    so a few float32 ulps (about 3e-5 each near 360) of difference are expected."""
    if reference is None:
        return None
    worst, worst_rel, compared, flags, lengths = 0.0, 0.0, 0, 0, 0
    for v in values:
        p = orjson.loads(v)
        ref = reference.get(p["id"])
        if ref is None:
            continue
        compared += 1
        lengths += len(p["prediction"]) != len(ref[0])
        for a, b in zip(p["prediction"], ref[0]):
            worst = max(worst, abs(a - b))
            worst_rel = max(worst_rel, abs(a - b) / max(abs(b), 1.0))
        flags += bool(p.get("warmup")) != ref[1]
    return {"compared": compared, "max_abs_diff": worst, "max_rel_diff": worst_rel, "warmup_flag_mismatches": flags,
            "horizon_mismatches": lengths, "equal": compared > 0 and worst_rel <= TOLERANCE and flags == 0 and lengths == 0}


def shortfall(run: dict) -> str | None:
    """Why a latency run did not hold its rate: queues built up (more than ABORT_S of traffic
    outstanding, p99 over SATURATED_MS, or events left unanswered), or the load fell short."""
    if "aborted_after_s" in run:
        return (f"at {run['target_rate']:.0f} events/s more than {ABORT_S:.0f} s of events were waiting after "
                f"{run['aborted_after_s']:.1f} s, so it stopped (p99 {run['p99_ms']:.0f} ms)")
    if run["p99_ms"] != run["p99_ms"] or run["p99_ms"] > SATURATED_MS or run["answered"] < run["events"]:
        return (f"at {run['target_rate']:.0f} events/s queues built up (p99 {run['p99_ms']:.0f} ms, "
                f"{run['answered']} of {run['events']} answered)")
    if run["achieved_rate"] < 0.95 * run["target_rate"]:
        return f"the load sustained {run['achieved_rate']:.0f} of {run['target_rate']:.0f} events/s"
    return None


def high_rate(model: str, form: str, cases: dict, group: dict) -> None:
    """Step 5: passthrough and streamcast at half of streamcast's backlog rate (the slower of the
    two: the most this pipeline drains), in HIGH_PAIRS interleaved pairs (which worker runs first
    alternates), each run on fresh topics with a fresh worker. Each worker's `latency_high` is its
    run with the median p99, and `group["high_pairs"]` keeps every pair for the medians of the
    differences (`summarize`)."""
    if "passthrough" not in cases or "streamcast" not in cases or HIGH_PAIRS < 1:
        for worker in ("passthrough", "streamcast"):
            if worker in cases:
                cases[worker]["high_rate_note"] = "no high-rate runs: they need passthrough and streamcast both, and BENCH_HIGH_PAIRS >= 1"
        return
    rate = float(env("BENCH_HIGH_RATE") or 0) or round(cases["streamcast"]["events_per_s"] / 2, -2)
    if not rate > 0:  # NaN when the drain answered nothing
        cases["streamcast"]["high_rate_note"] = "no high-rate runs: the backlog gave no drain rate to halve"
        return
    group["high_rate"] = rate
    pairs: list = []
    notes: dict = {"passthrough": [], "streamcast": []}
    for k in range(HIGH_PAIRS):
        pair = {}
        # ABBA: a drift over the pairs (the broker, the machine) does not favour either worker.
        for worker in ("passthrough", "streamcast") if k % 2 == 0 else ("streamcast", "passthrough"):
            tag = f"{model}-{form[:3]}-{worker}-hr{k}"
            print(f"bench: {tag} at {rate:.0f}/s ...", file=sys.stderr, flush=True)
            rig = Rig(worker, model, form, tag)
            try:
                rig.start()
                pair[worker] = latency(rig, rate, SECONDS, f"hr{k}")
            finally:
                rig.stop()
            why = shortfall(pair[worker])
            if why:
                notes[worker].append(f"{worker} high-rate run {k + 1}: {why}")
        pairs.append(pair)
    group["high_pairs"] = pairs
    for worker in ("passthrough", "streamcast"):
        runs = sorted((p[worker] for p in pairs), key=lambda run: run["p99_ms"] if run["p99_ms"] == run["p99_ms"] else float("inf"))
        cases[worker]["latency_high"] = runs[(len(runs) - 1) // 2]
        cases[worker]["latency_high_runs"] = [p[worker] for p in pairs]
        if notes[worker]:
            cases[worker]["high_rate_note"] = "; ".join(notes[worker])


def median(xs: list) -> float | None:
    xs = sorted(x for x in xs if x is not None and x == x)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


class Rig:
    """One worker on fresh topics, warmed up, with the bench's producer and reader."""

    def __init__(self, worker: str, model: str, form: str, tag: str, extra: str = "", root: Path | None = None,
                 grid: bool = False):
        self.worker, self.model, self.tag, self.extra, self.root = worker, model, tag, extra, root
        self.events = Events(form, bundle_window(model), grid)
        self.log = ROOT / ".bench" / f"{tag}.log"
        self.log.write_text("")
        self.prod = Producer({"bootstrap.servers": BOOT, **SECURITY, "linger.ms": 5, "queue.buffering.max.messages": 2000000,
                              "queue.buffering.max.kbytes": 2097151})
        self.names: dict = {}
        self.c = self.proc = None

    def start(self) -> None:
        self.names = create_topics(self.tag)
        self.topic = self.names["in"]
        self.c = reader(self.names["pred"])
        self.proc = start_worker(self.worker, self.names, self.model, self.log, self.extra, self.root)
        warm_up(self)

    def stop(self) -> None:
        if self.proc is not None:
            stop_worker(self.proc)
        if self.c is not None:
            self.c.close()
        if self.names:
            delete_topics(self.names)
        self.c = self.proc = None
        self.names = {}


def run_case(worker: str, model: str, form: str, group: dict, tag: str) -> dict:
    rig = Rig(worker, model, form, tag)
    result = {"case": tag, "worker": worker, "model": model, "form": form}
    try:
        rig.start()
        result["idle_cpu_percent"], result["idle_rss_mib"] = idle_cpu(rig.proc.pid)
        figures, values = backlog(rig, SEED_N if worker == "seed" else N)
        result.update(figures)
        if worker == "streamcast":
            group["reference"] = {(p := orjson.loads(v))["id"]: (p["prediction"], bool(p.get("warmup"))) for v in values}
        elif worker in ("tuned", "seed"):
            result["vs_streamcast"] = compare(group.get("reference"), values)
        del values

        rate = RATE
        if worker == "seed" and env("BENCH_SEED_RATE"):
            rate = float(env("BENCH_SEED_RATE"))
        elif worker == "seed" and result["events_per_s"] / 2 < RATE:
            rate = max(10.0, round(result["events_per_s"] / 2, -1))
            result["latency_note"] = f"seed worker: latency at {rate:.0f}/s, half its backlog rate, since it cannot sustain {RATE:.0f}/s"
        result["latency"] = latency(rig, rate, SECONDS, "lat")
    finally:
        rig.stop()
    return result


# -- TLS ------------------------------------------------------------------------------------------
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


# -- report ---------------------------------------------------------------------------------------
def fmt(v, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


CEILINGS: dict = {}


def ort_ceiling(model: str) -> dict | None:
    """ONNX Runtime's own batched throughput for a bundle, through the worker's model code with
    no Kafka (examples/ort_ceiling.rs: batches of 256, one intra-op thread, 5 s)."""
    if model not in CEILINGS:
        exe = ROOT / "target" / "release" / "examples" / "ort_ceiling"
        try:
            out = subprocess.run([str(exe), str(ROOT / "models" / model / "1"), "256", "5"], capture_output=True, text=True,
                                 check=True, timeout=120).stdout
            CEILINGS[model] = json.loads(out.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            print(f"bench: no ORT ceiling for {model}: {e}", file=sys.stderr)
            CEILINGS[model] = None
    return CEILINGS[model]


def ratio(a, b):
    return a / b if a is not None and b and a == a and b == b else None


def summarize(model: str, form: str, cases: dict, group: dict) -> tuple:
    """The table and ratio lines of one bundle and form, and the ratios as a dict."""
    lines = [f"{model}, {form} events (backlog {N}; seed {SEED_N})"]
    lines.append(f"  {'worker':<12}{'events/s':>10}{'CPU ms/1k':>11}{'RSS MiB':>9}{'idle %':>8}{'p50 ms':>9}{'p99 ms':>9}{'@ ev/s':>8}"
                 f"{'p50 ms':>9}{'p99 ms':>9}{'@ ev/s':>9}")
    for w in WORKERS:
        r = cases.get(w)
        if r is None:
            continue
        lat, high = r.get("latency") or {}, r.get("latency_high") or {}
        lines.append(f"  {w:<12}{fmt(r.get('events_per_s'), ',.0f'):>10}{fmt(r.get('cpu_ms_per_1000_events'), '.2f'):>11}"
                     f"{fmt(r.get('peak_rss_mib'), '.0f'):>9}{fmt(r.get('idle_cpu_percent'), '.2f'):>8}"
                     f"{fmt(lat.get('p50_ms'), '.1f'):>9}{fmt(lat.get('p99_ms'), '.1f'):>9}{fmt(lat.get('achieved_rate'), '.0f'):>8}"
                     f"{fmt(high.get('p50_ms'), '.1f'):>9}{fmt(high.get('p99_ms'), '.1f'):>9}{fmt(high.get('achieved_rate'), '.0f'):>9}")
    get = lambda w, k: (cases.get(w) or {}).get(k)  # noqa: E731
    lat = lambda w, run, k: ((cases.get(w) or {}).get(run) or {}).get(k)  # noqa: E731
    r = {
        "tuned_cpu_per_1k_over_streamcast": ratio(get("tuned", "cpu_ms_per_1000_events"), get("streamcast", "cpu_ms_per_1000_events")),
        "seed_cpu_per_1k_over_streamcast": ratio(get("seed", "cpu_ms_per_1000_events"), get("streamcast", "cpu_ms_per_1000_events")),
        "streamcast_events_per_s_over_passthrough": ratio(get("streamcast", "events_per_s"), get("passthrough", "events_per_s")),
        "streamcast_events_per_s_over_tuned": ratio(get("streamcast", "events_per_s"), get("tuned", "events_per_s")),
        "streamcast_events_per_s_over_seed": ratio(get("streamcast", "events_per_s"), get("seed", "events_per_s")),
    }
    for run, key in [("latency", "p99_added_over_passthrough_ms"), ("latency_high", "p99_added_over_passthrough_high_rate_ms")]:
        for figure, name in [("p99_ms", key), ("p99_to_produce_ms", key.replace("p99_", "p99_to_produce_"))]:
            a, b = lat("streamcast", run, figure), lat("passthrough", run, figure)
            r[name] = round(a - b, 2) if a is not None and b is not None else None
    # At the high rate: the median of the pairs' differences (runs minutes apart differ by more
    # than the worker adds), with every pair's difference kept.
    if group.get("high_pairs"):
        for figure, name in [("p99_ms", "p99_added_over_passthrough_high_rate_ms"),
                             ("p99_to_produce_ms", "p99_to_produce_added_over_passthrough_high_rate_ms")]:
            diffs = [round(p["streamcast"][figure] - p["passthrough"][figure], 2) for p in group["high_pairs"]
                     if p["streamcast"].get(figure) is not None and p["passthrough"].get(figure) is not None]
            r[name] = round(median(diffs), 2) if diffs else None
            r[name.replace("_ms", "_pairs_ms")] = diffs
        r["high_rate"] = group["high_rate"]
    want_tuned = {("co2-mlp", "window"): 5, ("co2-gru", "window"): 4}.get((model, form))
    x = r["tuned_cpu_per_1k_over_streamcast"]
    if x is not None:
        lines.append(f"  tuned CPU per 1k / streamcast CPU per 1k: {x:.1f}x" + (f" (acceptance: >= {want_tuned}x)" if want_tuned else ""))
    x = r["seed_cpu_per_1k_over_streamcast"]
    if x is not None:
        lines.append(f"  seed CPU per 1k / streamcast CPU per 1k: {x:.1f}x; streamcast events/s / seed events/s: "
                     f"{fmt(r['streamcast_events_per_s_over_seed'], '.0f')}x")
    x = r["streamcast_events_per_s_over_tuned"]
    if x is not None:
        lines.append(f"  streamcast events/s / tuned events/s: {x:.2f}")
    x = r["streamcast_events_per_s_over_passthrough"]
    if x is not None:
        lines.append(f"  streamcast events/s / passthrough events/s: {x:.2f}" + (" (acceptance: >= 0.85)" if model == "co2-mlp" else ""))
    if r["p99_added_over_passthrough_ms"] is not None:
        line = f"  p99 added over passthrough: {r['p99_added_over_passthrough_ms']:+.1f} ms at {fmt(lat('streamcast', 'latency', 'achieved_rate'), '.0f')}/s"
        if r["p99_added_over_passthrough_high_rate_ms"] is not None:
            pairs = ", ".join(f"{d:+.1f}" for d in r["p99_added_over_passthrough_high_rate_pairs_ms"])
            line += (f", {r['p99_added_over_passthrough_high_rate_ms']:+.1f} ms at {r['high_rate']:.0f}/s"
                     f" (median of {len(group['high_pairs'])} pairs: {pairs})")
        lines.append(line)
        if r["p99_to_produce_added_over_passthrough_ms"] is not None:
            line = f"  of that to the worker's produce: {r['p99_to_produce_added_over_passthrough_ms']:+.1f} ms"
            if r["p99_to_produce_added_over_passthrough_high_rate_ms"] is not None:
                line += f", {r['p99_to_produce_added_over_passthrough_high_rate_ms']:+.1f} ms"
            lines.append(line)
    own = [lat("streamcast", "latency", "p99_in_worker_ms"),
           median([run.get("p99_in_worker_ms") for run in get("streamcast", "latency_high_runs") or []])]
    r["streamcast_p99_in_worker_ms"], r["streamcast_p99_in_worker_high_rate_ms"] = own
    if own[0] is not None:
        lines.append("  streamcast's own p99 (`latency_ms`, poll to producer): "
                     + ", ".join(f"{v:.1f} ms" for v in own if v is not None))
    ceiling = ort_ceiling(model) if "streamcast" in cases else None
    if ceiling:
        r["ort_ceiling_windows_per_s"] = ceiling["windows_per_s"]
        r["streamcast_events_per_s_over_ort_ceiling"] = ratio(get("streamcast", "events_per_s"), ceiling["windows_per_s"])
        lines.append(f"  ORT ceiling (no Kafka, batches of 256, 1 thread): {ceiling['windows_per_s']:,.0f} windows/s, "
                     f"{1e6 / ceiling['windows_per_s']:.2f} ms of CPU per 1k; streamcast events/s / ceiling: "
                     f"{fmt(r['streamcast_events_per_s_over_ort_ceiling'], '.2f')}" + (" (acceptance: >= 0.8)" if model == "co2-nbeats" else ""))
    for w in ("tuned", "seed"):
        v = get(w, "vs_streamcast")
        if v:
            verdict = "equal" if v["equal"] else "NOT EQUAL"
            lines.append(f"  {w} predictions vs streamcast's: {verdict} over {v['compared']} ids (max |diff| {v['max_abs_diff']:.2g}, "
                         f"relative {v['max_rel_diff']:.2g}; tolerance {TOLERANCE:g} relative; "
                         f"{v['warmup_flag_mismatches']} warmup flag mismatches)")
    for w in WORKERS:
        for note in ("latency_note", "high_rate_note"):
            if get(w, note):
                lines.append(f"  note: {get(w, note)}")
    return lines, r


def markdown(out: dict) -> str:
    """The README's tables, from one run's results (`.bench/results.json`): each worker's figures
    per bundle and event form, then the ratios the acceptance goals are stated in."""
    label = {"passthrough": "passthrough", "streamcast": "**streamcast**", "tuned": "tuned Python", "seed": "seed Python"}
    forms = {"observation": "observations", "window": "windows"}
    rate = out.get("settings", {}).get("rate", RATE)  # the run's, not this shell's BENCH_RATE
    # Runs before 2026-12-07 (no "high_rate_pairs" setting) ran one high-rate run at half passthrough's rate.
    high = ("half streamcast's drain rate (median run)" if "high_rate_pairs" in out.get("settings", {})
            else "half passthrough's rate")
    rows = ["| bundle, events | worker | events/s | CPU ms / 1k events | peak RSS MiB | idle % of a core "
            f"| p99 ms at {rate:,.0f}/s | p99 ms at {high} |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    cases = [r for r in out["results"] if r.get("worker") in label and r["case"] != "co2-mlp-tls"]
    seen = set()
    for r in cases:
        key = (r["model"], r["form"])
        first = key not in seen
        seen.add(key)
        lat, high = r.get("latency") or {}, r.get("latency_high") or {}
        p99 = fmt(lat.get("p99_ms"), ".1f")
        if lat.get("target_rate") and lat["target_rate"] != rate:
            p99 += f" (at {lat['achieved_rate']:,.0f}/s)"
        p99_high = f"{fmt(high.get('p99_ms'), '.1f')} (at {fmt(high.get('achieved_rate'), ',.0f')}/s)" if high else ""
        bold = r["worker"] == "streamcast"
        eps = fmt(r.get("events_per_s"), ",.0f")
        cpu = fmt(r.get("cpu_ms_per_1000_events"), ".1f")
        title = f"{r['model']}, {forms[r['form']]}" if first else ""
        rows.append(f"| {title} | {label[r['worker']]} | {f'**{eps}**' if bold else eps} | {f'**{cpu}**' if bold else cpu} "
                    f"| {fmt(r.get('peak_rss_mib'), '.0f')} | {fmt(r.get('idle_cpu_percent'), '.1f')} | {p99} | {p99_high} |")
    ratios = ["| bundle, events | CPU per event, tuned / streamcast | events/s, streamcast / passthrough "
              "| events/s, streamcast / tuned | events/s, streamcast / ORT's ceiling | p99 added over passthrough, ms "
              "| of that to the worker's produce, ms | streamcast's own p99 (`latency_ms`), ms |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    both = lambda s, key, spec: ", ".join(v for v in (fmt(s.get(key + "_ms"), spec), fmt(s.get(key + "_high_rate_ms"), spec)) if v != "-")  # noqa: E731
    for s in out.get("summary", []):
        added, to_produce = both(s, "p99_added_over_passthrough", "+.1f"), both(s, "p99_to_produce_added_over_passthrough", "+.1f")
        own = both(s, "streamcast_p99_in_worker", ".1f")
        ratios.append(f"| {s['model']}, {forms[s['form']]} | {fmt(s.get('tuned_cpu_per_1k_over_streamcast'), '.1f')}× "
                      f"| {fmt(s.get('streamcast_events_per_s_over_passthrough'), '.2f')} "
                      f"| {fmt(s.get('streamcast_events_per_s_over_tuned'), '.2f')} "
                      f"| {fmt(s.get('streamcast_events_per_s_over_ort_ceiling'), '.2f')} | {added or '-'} | {to_produce or '-'} | {own or '-'} |")
    return "\n".join(rows) + "\n\n" + "\n".join(ratios) + "\n"


# -- forecasting features: what intervals and event-time windows cost ----------------------------
FORECAST_MODEL = "co2-gru"
FORECAST_N = int(env("BENCH_FORECAST_EVENTS", "200000"))
FORECAST_REPEATS = int(env("BENCH_FORECAST_REPEATS", "3"))


def forecast_cases() -> list:
    """streamcast alone, co2-gru observation events on a weekly grid per series, backlog only:
    the path without intervals or event-time windows, then with calibrated intervals (a
    calibration snapshot is published to the metrics topic first, so every prediction carries
    bounds), with event-time windows (a copy of the bundle declaring `frequency = 7d`), and both."""
    weekly = Path(tempfile.mkdtemp(prefix="bench-weekly-"))
    src = ROOT / "models" / FORECAST_MODEL / "1"
    dst = weekly / FORECAST_MODEL / "1"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((dst / "bundle.json").read_text())
    manifest["frequency"] = "7d"
    (dst / "bundle.json").write_text(json.dumps(manifest))
    horizon = manifest["horizon"]
    off, on = "[intervals]\nenabled = false\n", "[intervals]\nenabled = true\n"
    variants = [("current path", off, None), ("+ intervals", on, None), ("+ event-time windows", off, weekly),
                ("+ both", on, weekly)]
    runs: dict = {name: [] for name, _, _ in variants}
    # Interleaved repeats, each variant's median reported: one drain is a few hundred 10 ms CPU
    # ticks, and the machine's other load moves a single run by several percent.
    for r in range(FORECAST_REPEATS):
        for name, extra, root in variants:
            tag = f"forecast-{name.strip('+ ').replace(' ', '-')}-{r}"
            print(f"bench: {tag} ...", file=sys.stderr, flush=True)
            rig = Rig("streamcast", FORECAST_MODEL, "observation", tag, extra, root, grid=True)
            try:
                rig.start()
                if "enabled = true" in extra:
                    snap = {"model": {"name": FORECAST_MODEL, "version": "1"}, "variant": "primary",
                            "interval": {"level": 0.9, "method": "split", "coverage_band": 0.05},
                            "per_step": [{"step": h + 1, "interval": {"half_width": 0.5 + 0.1 * h}} for h in range(horizon)]}
                    rig.prod.produce(rig.names["met"], key=FORECAST_MODEL, value=json.dumps(snap).encode())
                    rig.prod.flush(30)
                    time.sleep(2)
                figures, values = backlog(rig, FORECAST_N)
                calibrated = sum(1 for v in values if (orjson.loads(v).get("interval") or {}).get("calibrated"))
                runs[name].append({**figures, "calibrated_intervals": calibrated})
                del values
            finally:
                rig.stop()
    out = []
    for name, figures in runs.items():
        by_cpu = sorted(figures, key=lambda f: f["cpu_ms_per_1000_events"])
        median = by_cpu[len(by_cpu) // 2]
        out.append({"variant": name, **median, "cpu_ms_per_1000_events_runs": [f["cpu_ms_per_1000_events"] for f in figures]})
    return out


def forecast_report(cases: list) -> list:
    base = cases[0].get("cpu_ms_per_1000_events")
    lines = [f"forecasting features: streamcast, {FORECAST_MODEL}, observation events on a weekly grid "
             f"(backlog {FORECAST_N}; median of {FORECAST_REPEATS} interleaved runs by CPU)",
             f"  {'variant':<24}{'events/s':>10}{'CPU ms/1k':>11}{'vs current':>12}{'calibrated':>12}  runs (CPU ms/1k)"]
    for c in cases:
        cpu = c.get("cpu_ms_per_1000_events")
        runs = ", ".join(fmt(x, ".2f") for x in c["cpu_ms_per_1000_events_runs"])
        lines.append(f"  {c['variant']:<24}{fmt(c.get('events_per_s'), ',.0f'):>10}{fmt(cpu, '.2f'):>11}"
                     f"{fmt(ratio(cpu, base), '.2f'):>12}{c['calibrated_intervals']:>12,}  {runs}")
    lines.append("  (acceptance: each at most 1.10 of the current path's CPU per 1,000 events)")
    return lines


def main() -> None:
    if not BOOT:
        sys.exit("bench.py: STREAMCAST_TEST_BOOTSTRAP is not set; run it under scripts/with-broker.sh (make bench)")
    (ROOT / ".bench").mkdir(exist_ok=True)
    if LOAD not in ("rust", "python"):
        sys.exit(f"bench.py: BENCH_LOAD={LOAD!r}: rust or python")
    if LOAD == "rust" and not LOADGEN.exists():
        sys.exit(f"bench.py: {LOADGEN} is missing: cargo build --release --example loadgen (make bench does)")
    # examples/loadgen.rs builds the same events from the rows as this file serializes them.
    (ROOT / ".bench" / "rows.jsonl").write_text("".join(r + "\n" for r in ROW_JSON))
    workers, models, forms, tls = selection()
    load_at_start = os.getloadavg()
    results, summaries, report = [], [], []
    for model in models:
        for form in forms:
            group: dict = {}
            cases: dict = {}
            for worker in workers:
                tag = f"{model}-{form[:3]}-{worker}"
                print(f"bench: {tag} ...", file=sys.stderr, flush=True)
                cases[worker] = run_case(worker, model, form, group, tag)
                results.append(cases[worker])
            high_rate(model, form, cases, group)
            lines, ratios = summarize(model, form, cases, group)
            summaries.append({"model": model, "form": form, **ratios})
            report += lines + [""]
    if env("BENCH_FORECAST", "1") not in ("", "0"):
        forecast = forecast_cases()
        results.append({"case": "forecast", "variants": forecast})
        report += forecast_report(forecast) + [""]
    stop = []
    if tls:
        try:
            stop = tls_cluster(Path(tempfile.mkdtemp(prefix="bench-tls-")))
            print("bench: co2-mlp-tls ...", file=sys.stderr, flush=True)
            r = run_case("streamcast", "co2-mlp", "observation", {}, "co2-mlp-tls")
            results.append(r)
            report += ["co2-mlp over TLS, observation events (streamcast; events/s and latency bounded by the Python TLS proxy)",
                       f"  events/s {fmt(r['events_per_s'], ',.0f')}, CPU ms/1k {fmt(r['cpu_ms_per_1000_events'], '.2f')}, "
                       f"p50 {fmt(r['latency']['p50_ms'], '.1f')} ms, p99 {fmt(r['latency']['p99_ms'], '.1f')} ms", ""]
        finally:
            for p in stop:
                p.kill()
    machine = {
        "cpus": os.cpu_count(),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor()),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "broker": "nisshi 0.6.0, memory storage, same machine",
        "load_average_at_start": load_at_start,
    }
    settings = {"backlog_events": N, "seed_backlog_events": SEED_N, "rate": RATE, "seconds": SECONDS, "idle_seconds": IDLE_SECONDS,
                "high_rate_pairs": HIGH_PAIRS, "load": LOAD}
    out = {"machine": machine, "settings": settings, "results": results, "summary": summaries,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (ROOT / ".bench" / "results.json").write_text(json.dumps(out, indent=2))
    (ROOT / ".bench" / "table.md").write_text(markdown(out))
    print(f"machine: {machine['cpus']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB; {machine['broker']}")
    print(f"events/s, CPU ms per 1,000 events and peak RSS from the preloaded backlog; idle % of one core over {IDLE_SECONDS:.0f} s;")
    print(f"p50/p99 end to end at {RATE:.0f} events/s for {SECONDS:.0f} s (seed: see notes), then at half streamcast's backlog rate "
          f"({HIGH_PAIRS} interleaved pairs; load: {LOAD})")
    print()
    print("\n".join(report).rstrip())
    print(f"written to {ROOT / '.bench' / 'results.json'}, and the README's tables to {ROOT / '.bench' / 'table.md'}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        # The README's tables again from the last run, without running anything.
        print(markdown(json.loads((ROOT / ".bench" / "results.json").read_text())), end="")
    else:
        main()
