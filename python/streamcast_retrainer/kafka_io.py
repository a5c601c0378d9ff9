"""Kafka: reading the newest records of a topic, and publishing alerts (confluent-kafka)."""

from __future__ import annotations

import json
import time

from .data import Record


def client_config(settings) -> dict:
    conf = {"bootstrap.servers": settings.bootstrap_servers}
    conf.update(settings.kafka)
    return conf


def read_tail(settings, topic: str, per_partition: int, timeout_s: float, group_suffix: str = "history") -> list[Record]:
    """The newest `per_partition` records of every partition of `topic`, in offset order per
    partition. Reading goes on past the high watermarks until a poll comes back empty (a broker's
    watermark may trail its last batch), bounded by `timeout_s`. Nothing is committed."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"{settings.group_id}-{group_suffix}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        md = consumer.list_topics(topic, timeout=min(10.0, timeout_s))
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise RuntimeError(f"topic {topic!r} is not readable: {t.error if t else 'missing'}")
        assignment, open_parts = [], set()
        for p in sorted(t.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=min(10.0, timeout_s))
            if high <= low:
                continue
            assignment.append(TopicPartition(topic, p, max(low, high - per_partition)))
            open_parts.add(p)
        if not assignment:
            return []
        consumer.assign(assignment)
        out: list[Record] = []
        while time.monotonic() < deadline:
            m = consumer.poll(0.2 if open_parts else 0.5)
            if m is None:
                if not open_parts:
                    break
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(m.partition())
                    continue
                raise RuntimeError(f"reading {topic}: {m.error()}")
            _, ts = m.timestamp()
            out.append(Record(m.partition(), m.offset(), int(ts), m.value() or b""))
        return out
    finally:
        consumer.close()


class AlertProducer:
    """Publishes alerts keyed by model name and waits for the broker's acknowledgement."""

    def __init__(self, settings) -> None:
        from confluent_kafka import Producer

        self.topic = settings.alerts_topic
        self.producer = Producer({**client_config(settings), "linger.ms": 5})

    def send(self, alert: dict, timeout_s: float = 30.0) -> None:
        errors: list = []

        def delivered(err, _msg):
            if err is not None:
                errors.append(err)

        self.producer.produce(
            self.topic,
            key=alert["model"]["name"].encode(),
            value=json.dumps(alert, allow_nan=False, separators=(",", ":")).encode(),
            on_delivery=delivered,
        )
        left = self.producer.flush(timeout_s)
        if left or errors:
            raise RuntimeError(f"alert not acknowledged: {errors or f'{left} still queued'}")


def alert_consumer(settings):
    """The alerts topic, in the retrainer's consumer group (earliest where nothing is committed;
    offsets committed by the caller once an alert has been handled)."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            **client_config(settings),
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # `--once` stops when every assigned partition has been read to its end.
            "enable.partition.eof": True,
            # A retrain runs between two polls: allow it 30 minutes before the group evicts us.
            "max.poll.interval.ms": 1_800_000,
        }
    )
