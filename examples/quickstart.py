"""Quickstart: an app on embedded Milvus Lite, audited by milvus-audit.

It connects, creates a collection, inserts, searches, queries with a filter, deletes
and drops. Every call is printed readably and appended to `audit.jsonl`; records are
also exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Detection is on: a
simulated intruder pages through the whole collection and then drops it, and the
in-process rules raise `milvus.alert` records within tens of milliseconds of each offence.

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

    alerts: list[milvus_audit.detect.Alert] = []
    rules = milvus_audit.detect.Rules().configure("data_exfiltration", rows=150)  # a small demo collection
    client = milvus_audit.MilvusClient(args.db, audit=milvus_audit.AuditConfig(detection=rules,
                                                                               on_alert=[alerts.append]))
    client.create_collection("articles", dimension=16)
    rng = random.Random(7)
    rows = [{"id": i, "vector": [rng.random() for _ in range(16)], "topic": rng.choice(["db", "ml", "ops"])}
            for i in range(200)]
    client.insert("articles", rows)

    with milvus_audit.enduser("alice@example.com"):  # the person this request is for
        hits = client.search("articles", [rows[0]["vector"]], limit=5, output_fields=["topic"])
        ml = client.query("articles", filter='topic == "ml" and id < 50', output_fields=["id"])

    client.delete("articles", filter="id >= 190")

    print("== simulated attack: an intruder pages through every row, then drops the collection ==")
    with milvus_audit.enduser("intruder"):
        pages = client.query_iterator("articles", batch_size=50, filter="id >= 0", output_fields=["topic"])
        while pages.next():
            pass
        pages.close()
    try:
        client.describe_collection("no_such_collection")
    except Exception as exc:  # the audited client raises exactly what pymilvus raises
        print(f"   (the app saw {type(exc).__name__}, and the audit trail recorded it)")
    with milvus_audit.enduser("intruder"):
        client.drop_collection("articles")
    client.close()

    pipeline.force_flush()
    pipeline.shutdown()
    print(f"== app results: {len(hits[0])} hits, {len(ml)} ml rows; audit trail in {args.jsonl} ==")
    print(f"== {len(alerts)} alerts raised in-process ==")
    for alert in alerts:
        print(f"   [{alert.severity}] {alert.rule}: {alert.summary} (ATT&CK {', '.join(alert.attack)})")
    print(f"   hunt and tune on the file: milvus-audit replay {args.jsonl} --explain "
          "(default rules; this demo lowered data_exfiltration.rows to 150)")


if __name__ == "__main__":
    main()
