"""`configure()`: OpenTelemetry providers and exporters for the audit stream, in one call.

It sets the global tracer, logger and meter providers with OTLP exporters (gRPC or
http/protobuf), a JSONL file and a console printer, as asked. Arguments left as
None fall back to the standard `OTEL_*` environment variables, which the OTLP
exporters read themselves. It never replaces a provider the application already
set: it adds its processors to an SDK provider it finds, or says why it cannot.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from milvus_audit.config import AuditConfig
from milvus_audit.export.console import ConsoleExporter
from milvus_audit.export.formats import FORMATTERS
from milvus_audit.export.jsonl import JsonlExporter, JsonlProcessor
from milvus_audit.export.spool import FsyncPolicy, OnFull, Spool, SpoolProcessor, spool_metrics
from milvus_audit.runtime.worker import LIFECYCLE, Stage

log = logging.getLogger("milvus_audit")

Protocol = Literal["grpc", "http/protobuf"]
_ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


@dataclass
class AuditPipeline:
    """What `configure()` set up: the providers, and flush/shutdown for all of them."""

    tracer_provider: TracerProvider | None
    logger_provider: LoggerProvider | None
    meter_provider: MeterProvider | None
    otlp_endpoint: str | None = None
    jsonl_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    spools: list[Spool] = field(default_factory=list)

    def audit_config(self, **overrides: object) -> AuditConfig:
        """An `AuditConfig` bound to these providers, whether or not they are global."""
        config = AuditConfig(tracer_provider=self.tracer_provider, logger_provider=self.logger_provider,
                             meter_provider=self.meter_provider, **overrides)  # type: ignore[arg-type]
        config.durable_spools = list(self.spools)
        return config

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Run the calls' deferred work (detection, alerts), then flush every provider."""
        LIFECYCLE.drain(until=Stage.CALLS, timeout_s=timeout_millis / 1000)
        ok = True
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            if provider is not None:
                ok = bool(provider.force_flush(timeout_millis)) and ok
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Shut down in order: the calls' work, then responses in flight (up to `timeout_s`,
        the rest recorded as abandoned), then each chain's final checkpoint, then the exporters."""
        LIFECYCLE.drain(timeout_s=timeout_s)
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def _otlp_exporters(endpoint: str | None, protocol: str, headers: dict[str, str] | None,
                    insecure: bool | None) -> tuple[object, LogRecordExporter, object]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (OTLPSpanExporter(endpoint=endpoint, insecure=insecure, headers=headers),
                OTLPLogExporter(endpoint=endpoint, insecure=insecure, headers=headers),
                OTLPMetricExporter(endpoint=endpoint, insecure=insecure, headers=headers))
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetrics,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpans,
        )

        base = endpoint.rstrip("/") if endpoint else None
        return (HttpSpans(endpoint=f"{base}/v1/traces" if base else None, headers=headers),
                HttpLogs(endpoint=f"{base}/v1/logs" if base else None, headers=headers),
                HttpMetrics(endpoint=f"{base}/v1/metrics" if base else None, headers=headers))
    raise ValueError(f"configure(protocol=...) must be 'grpc' or 'http/protobuf', not {protocol!r}")


def configure(
    endpoint: str | None = None,
    *,
    protocol: Protocol = "grpc",
    service_name: str | None = None,
    headers: dict[str, str] | None = None,
    insecure: bool | None = None,
    jsonl_path: str | os.PathLike[str] | None = None,
    jsonl_format: Literal["otel", "ecs", "ocsf"] = "otel",
    jsonl_file_mode: int = 0o600,
    jsonl_max_bytes: int | None = None,
    jsonl_rotate_interval: float | None = None,
    jsonl_backups: int | None = None,
    jsonl_compress: bool = False,
    jsonl_retention_days: float | None = None,
    console: bool = False,
    spool_dir: str | os.PathLike[str] | None = None,
    spool_fsync: FsyncPolicy = "interval",
    spool_max_bytes: int = 256 << 20,
    spool_on_full: OnFull = "drop_oldest",
    set_global: bool = True,
    metric_export_interval_ms: int | None = None,
) -> AuditPipeline:
    """Set up OpenTelemetry for the audit stream; return a handle with `force_flush()`/`shutdown()`.

    OTLP export is on when `endpoint` is given or an `OTEL_EXPORTER_OTLP_*ENDPOINT`
    variable is set. `jsonl_path` also appends each audit record to that file (created with
    `jsonl_file_mode`, 0600 by default) as one
    JSON line, in the core format (`jsonl_format="otel"`) or as ECS or OCSF;
    The file rotates when a batch would take it past `jsonl_max_bytes`, or `jsonl_rotate_interval`
    seconds after it was opened (`audit.jsonl.1` newest; `jsonl_compress=True` gzips rotated files;
    `jsonl_backups=N` keeps N of them; `jsonl_retention_days` deletes older ones, each deletion
    recorded as `milvus.audit.retention`); it is reopened when logrotate moves or truncates it.
    `console=True` prints each record readably. With `set_global=False` the
    providers are returned without becoming global (use `pipeline.audit_config()`).

    `spool_dir` makes OTLP delivery of audit records at-least-once: each record is
    appended to a local spool (fsync `always`, `interval` or `never`) before a
    background exporter sends it, retrying forever; at most `spool_max_bytes` on disk,
    then `spool_on_full` (`drop_oldest` with a `milvus.audit.gap` record, or `fail`).
    Processes may share one `spool_dir` (each writes its own locked sub-spool; each
    exporter also delivers the sub-spools of processes that died), and `spool_max_bytes`
    applies to each process.
    """
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    resource = Resource.create(attributes)
    otlp = endpoint is not None or any(os.environ.get(v) for v in _ENDPOINT_VARIABLES)

    tracer_provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
    readers: list[MetricReader] = []
    spool: Spool | None = None
    if spool_dir is not None and not otlp:
        raise ValueError("configure(spool_dir=...) needs an OTLP endpoint to deliver to "
                         "(endpoint=... or OTEL_EXPORTER_OTLP_ENDPOINT)")
    if otlp:
        spans, logs, metric_exporter = _otlp_exporters(endpoint, protocol, headers, insecure)
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))  # type: ignore[arg-type]
        if spool_dir is not None:
            try:
                spool = Spool(spool_dir, fsync=spool_fsync, max_bytes=spool_max_bytes, on_full=spool_on_full)
            except OSError as exc:  # never run with a spool that cannot take records
                raise OSError(exc.errno, f"configure(spool_dir={str(spool_dir)!r}): cannot set up this "
                                         f"process's spool there: {exc.strerror or exc}") from exc
            logger_provider.add_log_record_processor(SpoolProcessor(spool, logs))
        else:
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
        readers.append(PeriodicExportingMetricReader(
            metric_exporter, export_interval_millis=metric_export_interval_ms))  # type: ignore[arg-type]
    path = Path(jsonl_path) if jsonl_path is not None else None
    if path is not None:
        if jsonl_format not in ("otel", "ecs", "ocsf"):
            raise ValueError(f"configure(jsonl_format=...) must be otel, ecs or ocsf, not {jsonl_format!r}")
        formatter = FORMATTERS[jsonl_format]
        exporter = JsonlExporter(path, formatter, file_mode=jsonl_file_mode, max_bytes=jsonl_max_bytes,
                                 rotate_interval=jsonl_rotate_interval, backups=jsonl_backups,
                                 compress=jsonl_compress, retention_days=jsonl_retention_days)
        logger_provider.add_log_record_processor(JsonlProcessor(exporter))
    if console:
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if spool is not None:
        spool_metrics(meter_provider, [spool])

    pipeline = AuditPipeline(tracer_provider, logger_provider, meter_provider,
                             otlp_endpoint=endpoint, jsonl_path=path, spools=[spool] if spool else [])
    if set_global:
        _install_globally(pipeline)
    return pipeline


def _install_globally(pipeline: AuditPipeline) -> None:
    """Make the pipeline's providers global, or join the application's own."""
    current_tracer = trace.get_tracer_provider()
    if isinstance(current_tracer, trace.ProxyTracerProvider):
        trace.set_tracer_provider(pipeline.tracer_provider)  # type: ignore[arg-type]
    else:
        pipeline.notes.append(f"the application already set a TracerProvider "
                              f"({type(current_tracer).__name__}); audit spans go to it")
        pipeline.tracer_provider = current_tracer if isinstance(current_tracer, TracerProvider) else None

    current_logger = _logs.get_logger_provider()
    if type(current_logger).__name__ == "ProxyLoggerProvider":
        _logs.set_logger_provider(pipeline.logger_provider)  # type: ignore[arg-type]
    elif isinstance(current_logger, LoggerProvider) and pipeline.logger_provider is not None:
        # Join the application's provider: move our processors over to it.
        processor = pipeline.logger_provider._multi_log_record_processor
        for child in getattr(processor, "_log_record_processors", ()):
            current_logger.add_log_record_processor(child)
        pipeline.notes.append("the application already set a LoggerProvider; "
                              "audit records go to it, with the exporters asked for added")
        pipeline.logger_provider = current_logger
    else:
        pipeline.notes.append(f"the application already set a LoggerProvider "
                              f"({type(current_logger).__name__}) that cannot take processors; "
                              "it is left as it is")

    current_meter = metrics.get_meter_provider()
    if type(current_meter).__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(pipeline.meter_provider)  # type: ignore[arg-type]
    else:
        pipeline.notes.append("the application already set a MeterProvider; audit metrics go to it")
        pipeline.meter_provider = current_meter if isinstance(current_meter, MeterProvider) else None
    for note in pipeline.notes:
        log.warning("milvus-audit configure(): %s", note)
