"""A real OTLP receiver for tests: gRPC and HTTP/protobuf, built on the official proto messages.

It keeps every raw request body (to search exported bytes for secrets) and the
decoded log records, flattened to the JSONL-like shape the assertions use.
"""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """Collects OTLP logs, spans and metrics; `raw` holds every request body received."""

    def __init__(self, count_only: bool = False) -> None:
        self.count_only = count_only  # a collector stand-in for benchmarks: count, keep nothing
        self.counts = {"milvus.audit": 0, "logs": 0, "spans": 0}
        self.raw: list[bytes] = []
        self.logs: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []
        self.metric_names: set[str] = set()
        self.lock = threading.Lock()
        self.fail_next = 0
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- decoding ----------------------------------------------------------------------
    def add_logs(self, body: bytes) -> None:
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        if self.count_only:
            with self.lock:
                for resource_logs in request.resource_logs:
                    for scope_logs in resource_logs.scope_logs:
                        self.counts["logs"] += len(scope_logs.log_records)
                        self.counts["milvus.audit"] += sum(1 for r in scope_logs.log_records
                                                           if r.event_name == "milvus.audit")
            return
        with self.lock:
            self.raw.append(body)
            for resource_logs in request.resource_logs:
                resource = {kv.key: any_value(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        self.logs.append({
                            "event_name": record.event_name,
                            "severity_text": record.severity_text,
                            "trace_id": record.trace_id.hex(),
                            "span_id": record.span_id.hex(),
                            "attributes": {kv.key: any_value(kv.value) for kv in record.attributes},
                            "resource": resource,
                        })

    def add_spans(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        if self.count_only:
            with self.lock:
                self.counts["spans"] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            return
        with self.lock:
            self.raw.append(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "name": span.name, "kind": span.kind,
                            "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "status": span.status.code,
                            "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                        })

    def add_metrics(self, body: bytes) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
        if self.count_only:
            return
        with self.lock:
            self.raw.append(body)
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        self.metric_names.add(metric.name)

    def audit_logs(self, event_name: str = "milvus.audit") -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.logs if r["event_name"] == event_name]

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.raw)

    # -- servers -----------------------------------------------------------------------
    def start(self, grpc_port: int = 0) -> OtlpReceiver:
        receiver = self

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "receiver told to fail")
                receiver.add_logs(request.SerializeToString())
                return logs_service_pb2.ExportLogsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver.add_spans(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver.add_metrics(request.SerializeToString())
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self.grpc_port = server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        server.start()
        self._grpc = server

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                route = {"/v1/logs": receiver.add_logs, "/v1/traces": receiver.add_spans,
                         "/v1/metrics": receiver.add_metrics}.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                route(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(0)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


def serve_counting(port_file: str) -> None:
    """Run a counting receiver in this process (a separate process, like a real collector):
    writes its gRPC port to `port_file`, answers GET /count on its HTTP port with the counts."""
    import json
    import time

    receiver = OtlpReceiver(count_only=True)

    class CountHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with receiver.lock:
                body = json.dumps(receiver.counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    receiver.start()
    counter = ThreadingHTTPServer(("127.0.0.1", 0), CountHandler)
    threading.Thread(target=counter.serve_forever, daemon=True).start()
    with open(port_file, "w") as handle:
        handle.write(f"{receiver.grpc_port} {counter.server_address[1]}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    import sys

    serve_counting(sys.argv[1])
