"""Derived spans behave like live SDK spans: parents, sampling, ids, timing; other tracers get live spans."""

from __future__ import annotations

import threading
from typing import Any

import pymilvus
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanContext, TraceFlags

import milvus_audit
from tests.conftest import Telemetry

DIM = 8


class SeeingClient(pymilvus.MilvusClient):
    """Remembers the span context current inside its `query`: what nested instrumentation would see."""

    seen: SpanContext | None = None

    def query(self, *args: Any, **kwargs: Any) -> Any:
        SeeingClient.seen = trace.get_current_span().get_span_context()
        return super().query(*args, **kwargs)


def audited(lite_uri: str, telemetry: Telemetry, cls: type = pymilvus.MilvusClient) -> Any:
    client = milvus_audit.instrument(cls(lite_uri), telemetry.config())
    client.create_collection("docs", dimension=DIM)
    client.insert("docs", [{"id": i, "vector": [0.1] * DIM} for i in range(10)])
    return client


def the_log(telemetry: Telemetry, operation: str) -> Any:
    (log,) = [r.log_record for r in telemetry.log_records()
              if r.log_record.attributes["db.operation.name"] == operation]
    return log


def test_span_is_a_child_of_the_callers_span_and_shares_ids_with_the_record(lite_uri: str,
                                                                          telemetry: Telemetry) -> None:
    client = audited(lite_uri, telemetry, SeeingClient)
    app_tracer = telemetry.tracer_provider.get_tracer("app")
    with app_tracer.start_as_current_span("handle request") as request:
        client.query("docs", filter="id < 5", limit=3)
    parent = request.get_span_context()
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == "query docs"]
    log = the_log(telemetry, "query")
    assert span.parent is not None and span.parent.span_id == parent.span_id
    assert span.context.trace_id == parent.trace_id == log.trace_id
    assert span.context.span_id == log.span_id != parent.span_id
    assert log.trace_flags == span.context.trace_flags and span.context.trace_flags.sampled
    assert SeeingClient.seen == span.context  # what runs inside the call sees the audit span
    assert trace.get_current_span() is trace.INVALID_SPAN  # and it is detached afterwards
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "milvus_audit"
    assert span.resource is telemetry.tracer_provider.resource


def test_span_times_bracket_the_call(lite_uri: str, telemetry: Telemetry) -> None:
    client = audited(lite_uri, telemetry)
    client.search("docs", [[0.1] * DIM], limit=2)
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == "search docs"]
    log = the_log(telemetry, "search")
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time == log.timestamp
    duration_ms = (span.end_time - span.start_time) / 1e6
    assert duration_ms == pytest.approx(log.attributes["milvus_audit.duration_ms"], abs=0.01)
    assert span.parent is None  # no caller span: a root


def test_unsampled_calls_still_leave_a_record_with_their_ids(lite_uri: str) -> None:
    telemetry = Telemetry()
    telemetry.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.spans))
    client = audited(lite_uri, telemetry)
    client.search("docs", [[0.1] * DIM], limit=2)
    assert telemetry.spans.get_finished_spans() == ()
    log = the_log(telemetry, "search")
    assert log.trace_id and log.span_id
    assert not TraceFlags(log.trace_flags).sampled


def test_parent_based_sampling_follows_an_unsampled_parent(lite_uri: str, telemetry: Telemetry) -> None:
    client = audited(lite_uri, telemetry)
    telemetry.spans.clear()
    parent = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    with trace.use_span(trace.NonRecordingSpan(parent)):
        client.query("docs", filter="id < 5", limit=1)
    assert telemetry.spans.get_finished_spans() == ()
    log = the_log(telemetry, "query")
    assert log.trace_id == 0x1234 and log.span_id != 0x5678


class TaggingSampler(Sampler):
    """Samples everything and adds an attribute, as some vendors' samplers do."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
        assert attributes is not None and attributes["db.system.name"] == "milvus"
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampler.tag": "kept"})

    def get_description(self) -> str:
        return "TaggingSampler"


def test_sampler_attributes_reach_the_span(lite_uri: str) -> None:
    telemetry = Telemetry()
    telemetry.tracer_provider = TracerProvider(sampler=ParentBased(TaggingSampler()))
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.spans))
    client = audited(lite_uri, telemetry)
    client.query("docs", filter="id < 5", limit=1)
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == "query docs"]
    assert span.attributes["sampler.tag"] == "kept"
    assert span.attributes["milvus_audit.outcome"] == "success"


class ForeignTracerProvider(trace.TracerProvider):
    """A tracer provider that is not the SDK's (an API-level wrapper, a vendor's SDK)."""

    def __init__(self, inner: TracerProvider) -> None:
        self.inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return ForeignTracer(self.inner.get_tracer(*args, **kwargs))


class ForeignTracer(trace.Tracer):
    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self.inner.start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.start_as_current_span(*args, **kwargs)


def test_other_tracers_get_live_spans(lite_uri: str) -> None:
    telemetry = Telemetry()
    exporter = InMemorySpanExporter()
    inner = TracerProvider()
    inner.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.tracer_provider = ForeignTracerProvider(inner)  # type: ignore[assignment]
    client = audited(lite_uri, telemetry, SeeingClient)
    with pytest.raises(pymilvus.MilvusException):
        client.describe_collection("missing")
    client.query("docs", filter="id < 5", limit=1)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    failed, query = spans["describe_collection missing"], spans["query docs"]
    assert failed.status.status_code is trace.StatusCode.ERROR and "error.type" in failed.attributes
    assert query.context.span_id == the_log(telemetry, "query").span_id
    assert SeeingClient.seen == query.context


def test_histograms_are_complete_after_flush_under_threads(lite_uri: str, telemetry: Telemetry) -> None:
    client = audited(lite_uri, telemetry)
    calls_per_thread, threads = 50, 4

    def work() -> None:
        for _ in range(calls_per_thread):
            client.query("docs", filter="id < 5", limit=1)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    data = telemetry.metrics_data()
    points = {m.name: [p for p in m.data.data_points if p.attributes.get("db.operation.name") == "query"]
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert sum(p.count for p in points["db.client.operation.duration"]) == calls_per_thread * threads
    assert sum(p.count for p in points["db.response.returned_rows"]) == calls_per_thread * threads
