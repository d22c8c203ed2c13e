"""Shared fixtures: real Milvus Lite, in-memory OpenTelemetry pipelines, a real OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import milvus_audit
from milvus_audit import AuditConfig
from tests.otlp_receiver import OtlpReceiver

pytest_plugins = ["tests.server", "tests.redis_server"]  # the real Milvus server; a real Redis (fleet tests)


class Telemetry:
    """An in-memory OpenTelemetry pipeline and helpers to read what it got."""

    def __init__(self) -> None:
        self.logs = InMemoryLogRecordExporter()
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def config(self, **overrides: Any) -> AuditConfig:
        return AuditConfig(tracer_provider=self.tracer_provider, logger_provider=self.logger_provider,
                           meter_provider=self.meter_provider, **overrides)

    def records(self, event_name: str = "milvus.audit") -> list[dict[str, Any]]:
        return [dict(r.log_record.attributes or {}) for r in self.log_records()
                if r.log_record.event_name == event_name]

    def log_records(self) -> list[Any]:
        milvus_audit.flush()  # alerts are raised on milvus-audit's background thread
        return list(self.logs.get_finished_logs())

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("db.operation.name") == name]

    def clear(self) -> None:
        self.logs.clear()
        self.spans.clear()

    def metrics_data(self) -> Any:
        milvus_audit.flush()  # histograms are recorded on milvus-audit's background thread
        return self.metrics.get_metrics_data()

    def exported_bytes(self) -> bytes:
        """Everything exported, encoded exactly as OTLP would send it."""
        parts = [encode_logs(self.logs.get_finished_logs()).SerializeToString(),
                 encode_spans(self.spans.get_finished_spans()).SerializeToString()]
        data = self.metrics_data()
        if data is not None:
            parts.append(encode_metrics(data).SerializeToString())
        return b"".join(parts)


class Alerts(list[Any]):
    """What an `on_alert` callback (`alerts.append`) received, read once milvus-audit's
    background thread has caught up with the calls made so far."""

    def __eq__(self, other: object) -> bool:
        milvus_audit.flush()
        return list.__eq__(self, other)

    def __iter__(self) -> Iterator[Any]:
        milvus_audit.flush()
        return list.__iter__(self)

    def __len__(self) -> int:
        milvus_audit.flush()
        return list.__len__(self)

    def __getitem__(self, index: Any) -> Any:
        milvus_audit.flush()
        return list.__getitem__(self, index)

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def lite_uri(tmp_path: Path) -> str:
    return str(tmp_path / "milvus.db")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()
