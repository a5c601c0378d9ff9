"""Independent reader for the integration tests (confluent-kafka, its own librdkafka build).

Reads a topic from offset 0 on every partition until `expected` distinct prediction ids have been
seen or `timeout` seconds pass, then prints {"records": n, "distinct": d} as JSON.

Usage: read_ids.py BOOTSTRAP TOPIC EXPECTED TIMEOUT
"""
import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def main() -> None:
    bootstrap, topic, expected, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-ids-{time.time_ns()}", "enable.auto.commit": False})
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids: set[str] = set()
    records = 0
    deadline = time.monotonic() + timeout
    while len(ids) < expected and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error():
                continue
            records += 1
            ids.add(json.loads(m.value())["id"])
    c.close()
    print(json.dumps({"records": records, "distinct": len(ids)}))


if __name__ == "__main__":
    main()
