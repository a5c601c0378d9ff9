"""An independent uploader (Azure's own SDK) to Azurite, for tests/object_store.rs.

    azblob.py put PORT CONTAINER PREFIX DIR

uploads DIR's model.onnx, then bundle.json (with `model_sha256` added), to the Azurite blob
service on 127.0.0.1:PORT, account devstoreaccount1 (Azurite's well-known development account).
The container is created on first use.
"""

import hashlib
import json
import sys
from pathlib import Path

# Azurite's published development account key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> int:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    _, cmd, port, container, prefix, src = sys.argv
    assert cmd == "put", cmd
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    service = BlobServiceClient.from_connection_string(conn)
    try:
        service.create_container(container)
    except ResourceExistsError:
        pass
    client = service.get_container_client(container)
    model = (Path(src) / "model.onnx").read_bytes()
    manifest = json.loads((Path(src) / "bundle.json").read_text())
    manifest["model_sha256"] = hashlib.sha256(model).hexdigest()
    prefix = prefix.strip("/")
    # model.onnx first, bundle.json last: the worker treats bundle.json as "upload complete".
    client.upload_blob(f"{prefix}/model.onnx", model, overwrite=True)
    client.upload_blob(f"{prefix}/bundle.json", json.dumps(manifest).encode(), overwrite=True)
    print(f"uploaded {container}/{prefix}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
