"""Quickstart: an app on embedded Milvus Lite, audited by milvus-audit.

It connects, creates a collection, inserts, searches, queries with a filter, deletes
and drops. Every call is printed readably and appended to `audit.jsonl`; records are
also exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    python examples/quickstart.py [--db PATH] [--jsonl PATH]
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
from pathlib import Path

import milvus_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(Path(tempfile.mkdtemp(prefix="milvus-audit-")) / "quickstart.db"))
    parser.add_argument("--jsonl", default="audit.jsonl")
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # pymilvus logs every failed RPC itself

    print(f"== audit records (also in {args.jsonl}) ==")
    pipeline = milvus_audit.configure(service_name="quickstart", jsonl_path=args.jsonl, console=True)

    client = milvus_audit.MilvusClient(args.db)
    client.create_collection("articles", dimension=16)
    rng = random.Random(7)
    rows = [{"id": i, "vector": [rng.random() for _ in range(16)], "topic": rng.choice(["db", "ml", "ops"])}
            for i in range(200)]
    client.insert("articles", rows)

    with milvus_audit.enduser("alice@example.com"):  # the person this request is for
        hits = client.search("articles", [rows[0]["vector"]], limit=5, output_fields=["topic"])
        ml = client.query("articles", filter='topic == "ml" and id < 50', output_fields=["id"])

    client.delete("articles", filter="id >= 190")
    try:
        client.describe_collection("no_such_collection")
    except Exception as exc:  # the audited client raises exactly what pymilvus raises
        print(f"   (the app saw {type(exc).__name__}, and the audit trail recorded it)")
    client.drop_collection("articles")
    client.close()

    pipeline.force_flush()
    pipeline.shutdown()
    print(f"== app results: {len(hits[0])} hits, {len(ml)} ml rows; audit trail in {args.jsonl} ==")


if __name__ == "__main__":
    main()
