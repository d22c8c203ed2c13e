"""Converting the shipped Sigma rules to SIEM queries with pySigma and its maintained backends.

Needs the optional extra `milvus-audit[siem]`. Field names are the audit record
attributes; a processing pipeline maps them to how each SIEM sees them: `otel` keeps
the raw OTLP attribute names (what the collector's Splunk HEC and Loki exporters
produce), `ecs` maps them to the Elastic Common Schema names of `formats.to_ecs`
(what `configure(jsonl_format="ecs")` writes and the collector's filelog receiver ships).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from milvus_audit.siem.sigma import load_rules_text

BACKENDS = ("splunk", "elasticsearch", "opensearch", "loki")
DEFAULT_SCHEMA = {"splunk": "otel", "elasticsearch": "ecs", "opensearch": "ecs", "loki": "otel"}

# Attribute -> ECS field (formats.to_ecs); everything else lives under `milvus.<attribute>`.
ECS_FIELDS = {
    "event_name": "event.code",
    "db.operation.name": "event.action",
    "milvus_audit.outcome": "event.outcome",
    "milvus_audit.failure_reason": "event.reason",
    "user.name": "user.name",
    "host.name": "host.name",
    "service.name": "service.name",
    "client.address": "client.address",
}


@dataclass
class Converted:
    rule: str
    kind: str  # "event" or "correlation"
    query: str | None
    skipped: str | None = None


def pipeline(schema: str) -> Any:
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import FieldMappingTransformation

    if schema == "otel":
        return ProcessingPipeline(name="milvus-audit otel", priority=20, items=[])
    if schema != "ecs":
        raise ValueError(f"unknown field schema {schema!r}: otel or ecs")
    from milvus_audit.siem.sigma import rule_fields

    fields = rule_fields()
    mapping: dict[str | None, str | list[str]] = {field: ECS_FIELDS.get(field, f"milvus.{field}") for field in fields}
    return ProcessingPipeline(name="milvus-audit ecs", priority=20,
                              items=[ProcessingItem(FieldMappingTransformation(mapping), identifier="ecs_fields")])


def _with_value_sum(backend: type[Any], aggregation: str, condition: str) -> type[Any]:
    """`backend` with the `value_sum` correlation (data_exfiltration sums returned rows).

    The maintained Splunk and ES|QL backends convert event_count and value_count with a
    `stats` pipeline but have no template for value_sum; it is the same pipeline with `sum`."""
    return type(f"{backend.__name__}WithValueSum", (backend,), {
        "value_sum_aggregation_expression": {"stats": aggregation},
        "value_sum_condition_expression": {"stats": condition},
    })


def _backend(name: str, schema: str, correlation: bool) -> Any:
    processing = pipeline(schema)
    if name == "splunk":
        from sigma.backends.splunk import SplunkBackend  # type: ignore[attr-defined]
        splunk = _with_value_sum(SplunkBackend,
                                 "| bin _time span={timespan}\n| stats sum({field}) as value_sum by _time{groupby}",
                                 "| search value_sum {op} {count}")
        return splunk(processing_pipeline=processing)
    if name == "elasticsearch":
        if correlation:
            from sigma.backends.elasticsearch import ESQLBackend  # type: ignore[attr-defined]
            esql = _with_value_sum(ESQLBackend,
                                   "| eval timebucket=date_trunc({timespan}, @timestamp) "
                                   "| stats value_sum=sum({field}){fields}{groupby}",
                                   "| where value_sum {op} {count}")
            return esql(processing_pipeline=processing)
        from sigma.backends.elasticsearch import LuceneBackend  # type: ignore[attr-defined]
        return LuceneBackend(processing_pipeline=processing)
    if name == "opensearch":
        from sigma.backends.opensearch import OpensearchLuceneBackend  # type: ignore[attr-defined]
        return OpensearchLuceneBackend(processing_pipeline=processing)
    if name == "loki":
        from sigma.backends.loki import LogQLBackend
        return LogQLBackend(processing_pipeline=processing)
    if name == "sqlite":
        from sigma.backends.sqlite import sqliteBackend  # type: ignore[attr-defined]
        return sqliteBackend(processing_pipeline=processing)  # type: ignore[no-untyped-call]
    raise ValueError(f"unknown backend {name!r}: {', '.join(BACKENDS)}")


def convert(backend: str, schema: str | None = None, rules_text: str | None = None) -> list[Converted]:
    """Every shipped rule as a query for `backend`; correlations the backend cannot express are
    reported as skipped (OpenSearch's Lucene backend has no correlation support). `rules_text`:
    Sigma rules to convert instead of the shipped ones (`sigma export --rules`: tuned thresholds)."""
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule

    schema = schema or DEFAULT_SCHEMA.get(backend, "otel")
    text = load_rules_text() if rules_text is None else rules_text
    event_backend = _backend(backend, schema, correlation=False)
    correlation_backend = _backend(backend, schema, correlation=True)
    correlations = bool(getattr(correlation_backend, "correlation_methods", None))
    out: dict[str, Converted] = {}
    # Event rules: converted for output. Correlations: a separate pass, because a
    # correlation's query is built from its base rules converted by the same backend.
    for engine, wanted in ((event_backend, "event"), (correlation_backend, "correlation")):
        collection = SigmaCollection.from_yaml(text)
        collection.resolve_rule_references()
        engine.init_processing_pipeline(None)
        # Base rules first: a correlation's query is built from its base rules' conversions.
        for rule in sorted(collection.rules, key=lambda r: isinstance(r, SigmaCorrelationRule)):
            name = str(rule.name)
            if not isinstance(rule, SigmaCorrelationRule):
                queries = engine.convert_rule(rule, engine.default_format)
                if wanted == "event":
                    out[name] = Converted(name, "event", "\n".join(map(str, queries)))
            elif wanted == "correlation":
                if not correlations:
                    out[name] = Converted(name, "correlation", None, skipped=(
                        f"the {backend} backend cannot express correlations; use the base rule with a "
                        "SIEM-side threshold monitor"))
                    continue
                queries = engine.convert_correlation_rule(rule, engine.default_format)
                out[name] = Converted(name, "correlation", "\n".join(map(str, queries)))
    return list(out.values())
