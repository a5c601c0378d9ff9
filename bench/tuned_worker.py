"""A tuned Python streaming-inference worker: what a competent engineer writes in Python for the
same job as streamcast, used by `make bench` as the honest alternative.

    tuned_worker.py --bootstrap HOST:PORT --input TOPIC --output TOPIC --group ID --bundle DIR
                    [-X librdkafka.key=value ...] [--max-batch 1000] [--max-wait-ms 5]

Everything model-related comes from DIR/bundle.json (features, window, horizon, input name and
layout, scaler, target scaler) and DIR/model.onnx, like streamcast's bundles.

How it works, per batch:
  * confluent-kafka `Consumer.consume(num_messages=max_batch)`: whatever is already fetched is
    taken at once; when nothing is, it blocks for the first message and then tops the batch up
    for at most `--max-wait-ms` (streamcast's micro-batching rule: wait at most max_wait after the
    first event);
  * orjson decodes each event; `features` may be an array in the bundle's order or an object;
  * an event with its own `window` (oldest first, exactly `window` steps) is stateless. Otherwise
    the observation goes into its series' window, and the window is the model input. While a series
    has fewer than `window` observations the window is left-padded by repeating its oldest
    observation and the prediction says `"warmup": true` (streamcast's rule). Each series' window
    is a (window, features) float32 ring buffer, bounded by an LRU over series (`--max-series`);
    shifting a small numpy array measured about 3x cheaper per event than a deque of lists turned
    into an array per batch, with the same result;
  * numpy normalizes the whole batch in float32, in place ((x - mean) * 1/std, as streamcast does),
    one `InferenceSession.run` scores it (one intra-op thread, as streamcast's default), and the
    target scaler de-normalizes the output;
  * each prediction (the same fields as streamcast's, `warmup` only when true) is encoded with
    orjson and produced with confluent-kafka, keyed by `series_id` (acks=all, idempotent,
    linger.ms=5, as streamcast's producer).

Delivery: at-least-once, with the consumer's offsets moved only by acknowledged predictions.
`enable.auto.offset.store=false`; every batch gets a delivery-report callback that counts its
predictions down, and batches are retired strictly in consumption order: when the oldest batch in
flight has all its delivery reports (and none failed) its offsets are stored with
`store_offsets`, and librdkafka's auto-commit (every `auto.commit.interval.ms`, 1 s here) commits
what was stored. So the consumer keeps fetching and scoring the next batches while earlier
predictions are still on their way to the broker: no flush per batch. A failed delivery stops the
worker (exit 1) without storing past it; a crash re-reads (and re-predicts) what was in flight.
On revoke, the producer is flushed, finished batches are stored and committed synchronously, and
the revoked partitions' series windows are dropped. At most `--max-in-flight` predictions wait
for their delivery reports; past that the worker waits for acknowledgements before consuming more.

What it gives up against streamcast, on purpose (it is a benchmark peer, not a product): no dead
letter topic (an undecodable or invalid event is logged, counted and skipped, and its offset is
committed with its batch), no rebuild of series windows after a rebalance (a new owner warms a
series up afresh), no metrics, HTTP, monitor, reloads or fallback.
"""
import argparse
import json
import logging
import signal
import sys
import time
from collections import OrderedDict, deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

log = logging.getLogger("tuned_worker")


class Bundle:
    """The parts of bundle.json the worker needs, with scalers as float32 arrays."""

    def __init__(self, directory: Path):
        m = json.loads((directory / "bundle.json").read_text())
        self.name, self.version = m["name"], m["version"]
        self.features = list(m["features"])
        self.window, self.horizon = int(m["window"]), int(m["horizon"])
        self.input_name, self.layout = m["input"]["name"], m["input"]["layout"]
        self.output_name = m["output"]["name"]
        if self.layout not in ("flat", "sequence"):
            raise SystemExit(f"{directory}: unknown input layout {self.layout!r}")
        self.offset, self.scale = scaler(m["scaler"])
        self.inv_scale = (np.float32(1.0) / self.scale).astype(np.float32)
        self.target_offset, self.target_scale = scaler(m["target"]["scaler"])
        self.model = directory / "model.onnx"


def scaler(spec: dict) -> tuple:
    """(offset, scale) of `(x - offset) / scale` as float32, for `standard` and `minmax`."""
    if spec["kind"] == "standard":
        offset, scale = spec["mean"], spec["std"]
    elif spec["kind"] == "minmax":
        offset, scale = spec["min"], [hi - lo for lo, hi in zip(spec["min"], spec["max"])]
    else:
        raise SystemExit(f"unknown scaler kind {spec['kind']!r}")
    return np.asarray(offset, dtype=np.float32), np.asarray(scale, dtype=np.float32)


class Windows:
    """Per-series windows of raw observations, bounded by an LRU over series.

    A series' buffer starts as its first observation repeated `window` times; each new observation
    shifts the rows up by one. That is exactly "left-pad with the oldest observation" while the
    series fills up, and a sliding window afterwards.
    """

    def __init__(self, window: int, width: int, max_series: int):
        self.window, self.width, self.max_series = window, width, max_series
        self.series: OrderedDict = OrderedDict()  # series_id -> [partition, held, buffer]
        self.row = np.empty(width, dtype=np.float32)
        self.evicted = 0

    def push(self, partition: int, series_id: str, obs, out: np.ndarray) -> bool:
        """Adds `obs` and writes the series' window into `out`; returns True while padded."""
        entry = self.series.get(series_id)
        if entry is None:
            buf = np.empty((self.window, self.width), dtype=np.float32)
            buf[:] = obs
            entry = [partition, 1, buf]
            self.series[series_id] = entry
            if len(self.series) > self.max_series:
                self.series.popitem(last=False)
                self.evicted += 1
        else:
            self.row[:] = obs  # first, so that a bad observation leaves the window as it was
            buf = entry[2]
            buf[:-1] = buf[1:]
            buf[-1] = self.row
            entry[0] = partition
            if entry[1] < self.window:
                entry[1] += 1
            self.series.move_to_end(series_id)
        out[...] = buf
        return entry[1] < self.window

    def drop_partitions(self, partitions: set) -> int:
        doomed = [k for k, e in self.series.items() if e[0] in partitions]
        for k in doomed:
            del self.series[k]
        return len(doomed)


class Batch:
    """One consumed batch in flight: its predictions' pending delivery reports and its offsets."""

    __slots__ = ("pending", "count", "offsets", "error")

    def __init__(self, offsets: list):
        self.pending = 0  # delivery reports still to come
        self.count = 0  # predictions produced
        self.offsets = offsets
        self.error = None

    def delivered(self, err, _msg) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.pending -= 1


def next_offsets(msgs: list) -> list:
    """The offsets to store for a batch: one past the last message of each partition."""
    last: dict = {}
    for m in msgs:
        last[(m.topic(), m.partition())] = m.offset()
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Worker:
    def __init__(self, args):
        self.args = args
        self.bundle = b = Bundle(Path(args.bundle))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.intra_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(b.model), opts, providers=["CPUExecutionProvider"])
        self.model_ref = {"name": b.name, "version": b.version}
        self.width = len(b.features)
        self.buf = np.empty((args.max_batch, b.window, self.width), dtype=np.float32)
        self.windows = Windows(b.window, self.width, args.max_series)
        self.inflight: deque = deque()
        self.pending = 0  # predictions produced whose batch is not retired yet
        self.invalid = 0
        self.stopping = False
        extra = dict(kv.split("=", 1) for kv in args.X)
        common = {"bootstrap.servers": args.bootstrap}
        consumer_only = {"group.id", "session.timeout.ms", "fetch.wait.max.ms", "auto.offset.reset",
                         "heartbeat.interval.ms", "max.poll.interval.ms", "fetch.min.bytes"}
        self.consumer = Consumer({
            **common,
            "group.id": args.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 30000,
            **{k: v for k, v in extra.items() if k not in ("linger.ms", "acks")},
        })
        self.producer = Producer({
            **common,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
            **{k: v for k, v in extra.items() if k not in consumer_only},
        })

    # -- delivery bookkeeping ------------------------------------------------------------------
    def retire(self) -> None:
        """Stores the offsets of the leading batches whose predictions were all acknowledged."""
        while self.inflight and self.inflight[0].pending == 0:
            batch = self.inflight.popleft()
            if batch.error is not None:
                raise SystemExit(f"tuned_worker: a prediction was not delivered: {batch.error}")
            if batch.offsets:
                self.consumer.store_offsets(offsets=batch.offsets)
            self.pending -= batch.count

    def settle(self, timeout: float) -> None:
        self.producer.poll(timeout)
        self.retire()

    def on_revoke(self, consumer, partitions) -> None:
        self.producer.flush(30)
        self.retire()
        if self.inflight:
            raise SystemExit("tuned_worker: predictions still unacknowledged at revoke")
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise
        dropped = self.windows.drop_partitions({p.partition for p in partitions})
        log.info("revoked %d partitions, dropped %d series", len(partitions), dropped)

    # -- the loop ------------------------------------------------------------------------------
    def next_batch(self) -> list:
        c, n = self.consumer, self.args.max_batch
        msgs = c.consume(n, 0)
        if not msgs:
            msgs = c.consume(1, 0.5)
            if not msgs:
                return msgs
        if len(msgs) < n:
            msgs += c.consume(n - len(msgs), self.args.max_wait_ms / 1e3)
        return msgs

    def run(self) -> None:
        self.consumer.subscribe([self.args.input], on_revoke=self.on_revoke)
        while not self.stopping:
            while self.pending > self.args.max_in_flight:
                self.settle(0.05)
            msgs = self.next_batch()
            if msgs:
                self.handle(msgs)
            self.settle(0)
        self.producer.flush(30)
        self.retire()
        self.consumer.close()  # commits what was stored

    def handle(self, msgs: list) -> None:
        received = time.perf_counter()
        b, x = self.bundle, self.buf
        window, features, width = b.window, b.features, self.width
        metas = []
        good = []
        j = 0
        for m in msgs:
            if m.error() is not None:
                log.warning("consumer error: %s", m.error())
                continue
            good.append(m)
            try:
                e = orjson.loads(m.value())
                ident, series_id, ts = e["id"], e["series_id"], e["timestamp"]
                if not (isinstance(ident, str) and isinstance(series_id, str) and isinstance(ts, str)):
                    raise TypeError("id, series_id and timestamp must be strings")
                win = e.get("window")
                if win is not None:
                    if len(win) != window:
                        raise ValueError(f"window has {len(win)} steps; the model needs {window}")
                    if isinstance(win[0], dict):  # observations given as objects
                        win = [[o[f] for f in features] if isinstance(o, dict) else o for o in win]
                    elif len(win[0]) != width:  # numpy refuses a ragged window, but would broadcast 1 to 3
                        raise ValueError(f"{len(win[0])} features; the model needs {width}")
                    x[j] = win
                    warm = False
                else:
                    obs = e["features"]
                    if isinstance(obs, dict):
                        obs = [obs[f] for f in features]
                    elif len(obs) != width:
                        raise ValueError(f"{len(obs)} features; the model needs {width}")
                    if window == 1:
                        x[j] = obs
                        warm = False
                    else:
                        warm = self.windows.push(m.partition(), series_id, obs, x[j])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as err:
                self.invalid += 1
                if self.invalid & (self.invalid - 1) == 0:  # 1, 2, 4, 8, ...: no flood
                    log.warning("skipped invalid event at %s[%d]@%d (%s); %d so far",
                                m.topic(), m.partition(), m.offset(), err, self.invalid)
                continue
            metas.append((ident, series_id, ts, warm))
            j += 1
        batch = Batch(next_offsets(good))
        self.inflight.append(batch)
        if j == 0:
            return
        x = x[:j]
        finite = np.isfinite(x).reshape(j, -1).all(axis=1)
        if not finite.all():  # rare: drop the rows (an observation stays in its window until it slides out)
            self.invalid += int(j - finite.sum())
            log.warning("skipped %d events with non-finite values; %d invalid so far", j - finite.sum(), self.invalid)
            metas = [meta for meta, ok in zip(metas, finite) if ok]
            x, j = x[finite], int(finite.sum())
            if j == 0:
                return
        np.subtract(x, b.offset, out=x)
        np.multiply(x, b.inv_scale, out=x)
        feed = x.reshape(j, window * self.width) if b.layout == "flat" else x
        y = self.session.run([b.output_name], {b.input_name: feed})[0]
        y = y * b.target_scale + b.target_offset
        preds = y.tolist()
        produced_at = now_rfc3339()
        latency_ms = (time.perf_counter() - received) * 1e3
        out, model_ref, delivered = self.args.output, self.model_ref, batch.delivered
        produce = self.producer.produce
        for (ident, series_id, ts, warm), pred in zip(metas, preds):
            p = {"id": ident, "series_id": series_id, "timestamp": ts, "prediction": pred, "model": model_ref,
                 "variant": "primary", "latency_ms": latency_ms, "produced_at": produced_at}
            if warm:
                p["warmup"] = True
            value = orjson.dumps(p)
            batch.pending += 1  # before producing: a retry below serves reports and retires batches
            while True:
                try:
                    produce(out, value, series_id, on_delivery=delivered)
                    break
                except BufferError:  # the producer's queue is full: serve delivery reports first
                    self.settle(0.05)
        batch.count = j
        self.pending += j

    def stop(self, *_):
        self.stopping = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--bundle", required=True, help="bundle directory, e.g. models/co2-mlp/1")
    ap.add_argument("-X", action="append", default=[], metavar="KEY=VALUE", help="librdkafka property for both clients")
    ap.add_argument("--max-batch", type=int, default=1000)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--max-in-flight", type=int, default=20000)
    ap.add_argument("--max-series", type=int, default=100000)
    ap.add_argument("--intra-threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(args)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()


if __name__ == "__main__":
    main()
