"""Incident response: an app under a simulated exfiltration attack, with a webhook and a block playbook.

A local webhook receiver (standing in for your SOAR or pager) checks each request's
signature. When the intruder pages through the collection, `data_exfiltration` fires,
the webhook is notified, and the intruder's next call raises `AccessBlocked` before it
reaches Milvus. Alert and response records are printed as they happen.

    python examples/incident_response.py [--db PATH]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import milvus_audit
from milvus_audit.respond import Block, Playbook, Webhook, verify

SECRET = "demo-webhook-secret"


def start_receiver() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = verify(SECRET, self.headers.get("X-Milvus-Audit-Timestamp", ""), body,
                        self.headers.get("X-Milvus-Audit-Signature", ""))
            print(f"   [webhook receiver] got {len(body)} bytes, signature {'verified' if ok else 'REJECTED'}")
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/alerts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(Path(tempfile.mkdtemp(prefix="milvus-audit-")) / "ir.db"))
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    server, url = start_receiver()
    pipeline = milvus_audit.configure(service_name="incident-response-demo", console=True)
    playbook = Playbook(rules=["data_exfiltration", "destructive_operation"], min_severity="high",
                        actions=[Webhook(url, secret=SECRET), Block(ttl_s=900, scope="enduser")])
    rules = milvus_audit.detect.Rules().configure("data_exfiltration", rows=500)
    client = milvus_audit.MilvusClient(args.db, audit=milvus_audit.AuditConfig(detection=rules, playbooks=[playbook]))
    client.create_collection("customers", dimension=8)
    client.insert("customers", [{"id": i, "vector": [i / 1000] * 8} for i in range(1000)])

    print("== the intruder pages through the collection ==")
    with milvus_audit.enduser("intruder"):
        pages = client.query_iterator("customers", batch_size=200, filter="id >= 0")
        try:
            while pages.next():
                pass
        except milvus_audit.AccessBlocked as exc:
            print(f"   (the intruder's next page was refused: AccessBlocked: {exc})")
        try:
            client.delete("customers", ids=list(range(1000)))
        except milvus_audit.AccessBlocked:
            print("   (and so was its delete: AccessBlocked, nothing reached Milvus)")
    with milvus_audit.enduser("alice"):
        print(f"== alice is unaffected: {len(client.get('customers', ids=[1, 2, 3]))} rows ==")

    responder = client.audit_auditor.runtime.responder
    responder.worker.join()
    client.close()
    pipeline.force_flush()
    pipeline.shutdown()
    server.shutdown()


if __name__ == "__main__":
    main()
