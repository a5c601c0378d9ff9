"""A local S3-compatible server (moto) and an independent uploader (boto3) for tests/object_store.rs.

    s3.py serve PORT                      run moto's S3 server on 127.0.0.1:PORT until killed
    s3.py put PORT BUCKET PREFIX DIR [--corrupt] [--sha256-of FILE] [--version V]
                                          upload DIR's model.onnx, then bundle.json, to
                                          s3://BUCKET/PREFIX/; the manifest gets `model_sha256`
                                          (of DIR's model.onnx, or of FILE) and, with --version, that
                                          version; --corrupt flips one byte of the uploaded model

The bucket is created on first use. Credentials are moto's dummy ones.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path


def client(port: int):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def serve(port: int) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    print(f"moto S3 on 127.0.0.1:{port}", flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin or kills us
    finally:
        server.stop()


def put(args) -> None:
    s3 = client(args.port)
    existing = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if args.bucket not in existing:
        s3.create_bucket(Bucket=args.bucket)
    src = Path(args.dir)
    model = bytearray((src / "model.onnx").read_bytes())
    manifest = json.loads((src / "bundle.json").read_text())
    checksum_of = Path(args.sha256_of).read_bytes() if args.sha256_of else bytes(model)
    manifest["model_sha256"] = hashlib.sha256(checksum_of).hexdigest()
    if args.version:
        manifest["version"] = args.version
    if args.corrupt:
        model[len(model) // 2] ^= 0xFF
    prefix = args.prefix.strip("/")
    # model.onnx first, bundle.json last: the worker treats bundle.json as "upload complete".
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/model.onnx", Body=bytes(model))
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/bundle.json", Body=json.dumps(manifest).encode())
    print(f"uploaded s3://{args.bucket}/{prefix}/ (model_sha256 {manifest['model_sha256'][:12]}...)")


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    u = sub.add_parser("put")
    u.add_argument("port", type=int)
    u.add_argument("bucket")
    u.add_argument("prefix")
    u.add_argument("dir")
    u.add_argument("--corrupt", action="store_true")
    u.add_argument("--sha256-of")
    u.add_argument("--version")
    args = p.parse_args()
    if args.cmd == "serve":
        serve(args.port)
    else:
        put(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
