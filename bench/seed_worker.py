"""The seed-style worker: the "streaming predictions" loop of a data-science notebook, made runnable.

    seed_worker.py --bootstrap HOST:PORT --input TOPIC --output TOPIC --group ID --bundle DIR
                   [--fetch-max-wait-ms 500] [--session-timeout-ms 30000]

One message at a time, the way such notebooks are written: kafka-python's `KafkaConsumer` is
iterated, each value is `json.loads`-ed, the model input is built as a pandas DataFrame and
normalized with pandas, the ONNX Runtime session is run on that one window, and the prediction is
sent with `KafkaProducer.send(json.dumps(...))`. Per-series history lives in a dict (series_id ->
the last `window` observations); while a series has fewer, the window is left-padded with its
oldest observation and the prediction says `"warmup": true`, as streamcast does. An event with its
own `window` uses it and leaves the history alone. The model's shapes, scalers and names come from
the bundle's bundle.json.

It is written as a good engineer in that style would, not sabotaged: one session built once, the
scaler parameters turned into pandas Series once, the producer asynchronous (`send` without
waiting), kafka-python's defaults otherwise except `linger_ms=5` (as the other workers' producers)
and the two settings the bench gives every worker (`fetch_max_wait_ms`, `session_timeout_ms`).
Offsets: auto-commit is off; every 1,000 messages or 5 s the producer is flushed and the consumer
commits, so this is at-least-once too, in coarse steps (a crash re-predicts up to 1,000 events).
It gives up what streamcast and the tuned worker do: no batching, no validation beyond what
`json.loads` and pandas reject (a bad event is logged and skipped), no dead letters, and the
history dict is bounded per series but not in the number of series.
"""
import argparse
import json
import logging
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from kafka import KafkaConsumer, KafkaProducer

log = logging.getLogger("seed_worker")


def scaler(spec, columns):
    """(offset, scale) as pandas Series indexed by column, for `standard` and `minmax` scalers."""
    if spec["kind"] == "standard":
        offset, scale = spec["mean"], spec["std"]
    else:
        offset, scale = spec["min"], [hi - lo for lo, hi in zip(spec["min"], spec["max"])]
    return pd.Series(offset, index=columns), pd.Series(scale, index=columns)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--bundle", required=True, help="bundle directory, e.g. models/co2-mlp/1")
    ap.add_argument("--fetch-max-wait-ms", type=int, default=500)
    ap.add_argument("--session-timeout-ms", type=int, default=30000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)

    bundle_dir = Path(args.bundle)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    features = meta["features"]
    window = meta["window"]
    mean, std = scaler(meta["scaler"], features)
    target_mean, target_std = (s.to_numpy() for s in scaler(meta["target"]["scaler"], None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    flat = meta["input"]["layout"] == "flat"
    model = {"name": meta["name"], "version": meta["version"]}

    consumer = KafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        session_timeout_ms=args.session_timeout_ms,
        consumer_timeout_ms=1000,  # the for loop below ends after 1 s without messages
    )
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        linger_ms=5,
    )

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    history = {}  # series_id -> list of the last `window` observations, oldest first
    uncommitted, last_commit = 0, time.monotonic()

    def commit():
        nonlocal uncommitted, last_commit
        producer.flush()  # every prediction sent so far is acknowledged before its offset is committed
        consumer.commit()
        uncommitted, last_commit = 0, time.monotonic()

    while not stopping:
        for msg in consumer:
            received = time.perf_counter()
            try:
                event = json.loads(msg.value)
                if "window" in event:
                    rows, warmup = event["window"], False
                else:
                    obs = event["features"]
                    if isinstance(obs, dict):
                        obs = [obs[f] for f in features]
                    h = history.setdefault(event["series_id"], [])
                    h.append(obs)
                    del h[:-window]
                    warmup = len(h) < window
                    rows = [h[0]] * (window - len(h)) + h
                df = pd.DataFrame(rows, columns=features)
                x = ((df - mean) / std).to_numpy(dtype=np.float32)
                x = x.reshape(1, -1) if flat else x[np.newaxis]
                y = session.run([output_name], {input_name: x})[0][0]
                prediction = y * target_std + target_mean
                out = {
                    "id": event["id"],
                    "series_id": event["series_id"],
                    "timestamp": event["timestamp"],
                    "prediction": prediction.tolist(),
                    "model": model,
                    "variant": "primary",
                    "latency_ms": (time.perf_counter() - received) * 1e3,
                    "produced_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                }
                if warmup:
                    out["warmup"] = True
                producer.send(args.output, key=event["series_id"].encode(), value=json.dumps(out).encode())
            except (KeyError, TypeError, ValueError) as e:
                log.warning("skipped event at offset %d of partition %d: %s", msg.offset, msg.partition, e)
            uncommitted += 1
            if uncommitted >= 1000 or time.monotonic() - last_commit > 5:
                commit()
            if stopping:
                break
        if uncommitted:
            commit()
    consumer.close()
    producer.close()


if __name__ == "__main__":
    main()
