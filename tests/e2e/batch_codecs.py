#!/usr/bin/env python3
"""Prints the compression codec of every record batch stored in a topic's partitions.

    batch_codecs.py HOST:PORT TOPIC PARTITIONS

Kafka clients decompress transparently, so whether a producer honoured `compression.type` can
only be seen on the wire: this sends a Fetch (v4) for each partition from offset 0 and reads the
codec bits of each record batch's attributes. Prints one line per partition, e.g.
`0 zstd zstd` (one word per batch). Python's standard library only.
"""
import socket
import struct
import sys

CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
FETCH = 1


def kstring(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(sock, key, version, body, corr):
    header = struct.pack(">hhi", key, version, corr) + kstring("batch-codecs")
    frame = header + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", recv_exactly(sock, 4))[0]
    data = recv_exactly(sock, size)
    return data[4:]  # past the correlation id


def recv_exactly(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def batch_codecs(records):
    codecs = []
    at = 0
    while at + 12 <= len(records):
        length = struct.unpack(">i", records[at + 8:at + 12])[0]
        if at + 12 + length > len(records):
            break  # a partial batch at the end of the fetch
        attributes = struct.unpack(">h", records[at + 21:at + 23])[0]
        codecs.append(CODECS.get(attributes & 7, "unknown"))
        at += 12 + length
    return codecs


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    topic, partitions = sys.argv[2], int(sys.argv[3])
    sock = socket.create_connection((host, int(port)), timeout=30)
    for p in range(partitions):
        body = struct.pack(">iiiib", -1, 500, 1, 64 << 20, 0)
        body += struct.pack(">i", 1) + kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">iqi", p, 0, 64 << 20)
        resp = request(sock, FETCH, 4, body, p + 1)
        at = 4 + 4  # throttle time, topic count
        n = struct.unpack(">h", resp[at:at + 2])[0]
        at += 2 + n + 4  # topic name, partition count
        _, error = struct.unpack(">ih", resp[at:at + 6])
        at += 6 + 8 + 8
        aborted = struct.unpack(">i", resp[at:at + 4])[0]
        at += 4 + max(aborted, 0) * 16
        size = struct.unpack(">i", resp[at:at + 4])[0]
        records = resp[at + 4:at + 4 + max(size, 0)]
        if error:
            print(p, f"error{error}")
        else:
            print(p, *batch_codecs(records))


if __name__ == "__main__":
    main()
