"""RBAC audit trail against a real Milvus server with authentication on.

Creates a reader role and user, shows that user being refused a write, and prints the
audit trail. The server URI comes from the command line or MILVUS_URI; the admin
credentials from MILVUS_USER / MILVUS_PASSWORD (default root / Milvus).

    python examples/rbac_audit.py http://127.0.0.1:19530
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

import milvus_audit


def main() -> int:
    uri = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MILVUS_URI", "http://127.0.0.1:19530")
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    pipeline = milvus_audit.configure(service_name="rbac-audit-example", console=True)
    suffix = uuid.uuid4().hex[:6]
    role, user, collection = f"reader_{suffix}", f"reader_user_{suffix}", f"catalog_{suffix}"
    reader_password = uuid.uuid4().hex  # never appears in the audit trail

    admin = milvus_audit.MilvusClient(uri, user=os.environ.get("MILVUS_USER", "root"),
                                      password=os.environ.get("MILVUS_PASSWORD", "Milvus"))
    admin.create_collection(collection, dimension=4)
    admin.create_role(role)
    admin.grant_privilege(role, "Collection", "Query", collection)
    admin.create_user(user, reader_password)
    admin.grant_role(user, role)

    reader = milvus_audit.MilvusClient(uri, user=user, password=reader_password)
    try:
        reader.query(collection, filter="id >= 0")
    except Exception as exc:  # the server refreshes its privilege cache asynchronously
        print(f"   (the read was refused too: {type(exc).__name__}; privilege caches may lag a grant)")
    try:
        reader.insert(collection, [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
    except Exception as exc:
        print(f"   (the reader was refused the write: {type(exc).__name__})")
    reader.close()

    admin.revoke_role(user, role)
    admin.drop_user(user)
    admin.revoke_privilege(role, "Collection", "Query", collection)
    admin.drop_role(role)
    admin.drop_collection(collection)
    admin.close()
    pipeline.force_flush()
    pipeline.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
