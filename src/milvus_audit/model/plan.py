"""Per-method argument extractors, compiled once from the catalog and a signature.

A `CallPlan` knows, for one method of one pymilvus class, where each audited
parameter sits (position or keyword) and how to turn its value into an attribute.
Only counts, names and shapes are ever produced: a vector becomes `nq`, a list of
rows becomes a batch size, a filter becomes its sanitized shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from milvus_audit import semconv
from milvus_audit.model.catalog import Operation, Shape
from milvus_audit.model.sanitize import bounded, sanitize_filter

_MISSING = object()
FILTER_ATTRIBUTE = "db.query.text"


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, (str, int, bytes)):
        return 1
    shape = getattr(value, "shape", None)  # numpy arrays
    if shape:
        return int(shape[0])
    try:
        return len(value)
    except TypeError:
        return 1


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value] if value else None
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value if v is not None]
        return items or None
    return None


def _name(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value) if isinstance(value, (str, int)) else None


def _level(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(getattr(value, "name", value))


def _nq_of_requests(value: Any) -> int | None:
    if isinstance(value, (list, tuple)) and value:
        return _count(getattr(value[0], "data", None))
    return None


def _privileges(value: Any) -> str | list[str] | None:
    if isinstance(value, str):
        return value or None
    return _strings(value)


Transform = Callable[[Any], Any]
# (attribute, how to read it from the result): what a call's result adds to its record.
Measure = tuple[str, Callable[[Any], int | None]]

# (parameter, attribute, transform) per shape; filters are handled separately.
_SHAPE_FIELDS: Mapping[Shape, tuple[tuple[str, str, Transform], ...]] = {
    Shape.SEARCH: (
        ("data", "db.milvus.nq", _count),
        ("limit", "db.milvus.limit", _int),
        ("output_fields", "db.milvus.output_fields", _strings),
        ("partition_names", "db.milvus.partition_names", _strings),
        ("consistency_level", "db.milvus.consistency_level", _level),
        ("anns_field", "db.milvus.anns_field", _name),
    ),
    Shape.HYBRID_SEARCH: (
        ("reqs", "db.milvus.nq", _nq_of_requests),
        ("reqs", "db.milvus.requests", _count),
        ("limit", "db.milvus.limit", _int),
        ("output_fields", "db.milvus.output_fields", _strings),
        ("partition_names", "db.milvus.partition_names", _strings),
        ("consistency_level", "db.milvus.consistency_level", _level),
    ),
    Shape.QUERY: (
        ("limit", "db.milvus.limit", _int),
        ("ids", "db.milvus.ids", _count),
        ("output_fields", "db.milvus.output_fields", _strings),
        ("partition_names", "db.milvus.partition_names", _strings),
        ("consistency_level", "db.milvus.consistency_level", _level),
    ),
    Shape.GET: (
        ("ids", "db.milvus.ids", _count),
        ("output_fields", "db.milvus.output_fields", _strings),
        ("partition_names", "db.milvus.partition_names", _strings),
        ("consistency_level", "db.milvus.consistency_level", _level),
    ),
    Shape.WRITE: (
        ("data", "db.operation.batch.size", _count),
        ("partition_name", "db.milvus.partition_names", _strings),
    ),
    Shape.DELETE: (
        ("ids", "db.operation.batch.size", _count),
        ("partition_name", "db.milvus.partition_names", _strings),
    ),
    Shape.ITERATOR: (
        ("data", "db.milvus.nq", _count),
        ("batch_size", "db.milvus.batch_size", _int),
        ("limit", "db.milvus.limit", _int),
        ("output_fields", "db.milvus.output_fields", _strings),
        ("partition_names", "db.milvus.partition_names", _strings),
        ("consistency_level", "db.milvus.consistency_level", _level),
    ),
    Shape.NONE: (),
}

FILTER_SHAPES = (Shape.SEARCH, Shape.QUERY, Shape.DELETE, Shape.ITERATOR, Shape.HYBRID_SEARCH)


def _hits(result: Any) -> int | None:
    """Hits across all queries, read from list lengths: never decodes the lazy rows."""
    if isinstance(result, list):
        total = 0
        for hits in result:
            try:
                total += len(hits)
            except TypeError:
                return None
        return total
    return None


def _rows(result: Any) -> int | None:
    if isinstance(result, (str, bytes, Mapping)) or result is None:
        return None
    try:
        return len(result)
    except TypeError:
        return None


def _affected(result: Any) -> int | None:
    """Rows written or deleted: `*_count` of the result, or the length of a list of deleted ids."""
    if isinstance(result, list):
        return len(result)
    if isinstance(result, Mapping):
        for key in ("insert_count", "upsert_count", "delete_count"):
            value = result.get(key)
            if isinstance(value, int):
                return value
    return None


RESULT_MEASURES: Mapping[Shape, tuple[str, Callable[[Any], int | None]] | None] = {
    Shape.SEARCH: ("db.response.returned_rows", _hits),
    Shape.HYBRID_SEARCH: ("db.response.returned_rows", _hits),
    Shape.QUERY: ("db.response.returned_rows", _rows),
    Shape.GET: ("db.response.returned_rows", _rows),
    Shape.ITERATOR: None,  # measured per page
    Shape.WRITE: ("milvus_audit.affected_rows", _affected),
    Shape.DELETE: ("milvus_audit.affected_rows", _affected),
    Shape.NONE: None,
}

PAGE_MEASURE: tuple[str, Callable[[Any], int | None]] = ("db.response.returned_rows", _rows)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one parameter sits: its keyword name and, if any, its position."""

    name: str
    position: int | None

    def get(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        value = kwargs.get(self.name, _MISSING)
        if value is _MISSING:
            position = self.position
            if position is not None and position < len(args):
                return args[position]
            return None
        return value


def positions(signature_of: Callable[..., Any] | None) -> dict[str, int]:
    if signature_of is None:
        return {}
    try:
        parameters = list(inspect.signature(signature_of).parameters.values())
    except (TypeError, ValueError):
        return {}
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    positions: dict[str, int] = {}
    for index, parameter in enumerate(parameters):
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positions[parameter.name] = index
    return positions


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything about one method that can be known before it is called."""

    operation: Operation
    static_attributes: Mapping[str, Any]
    fields: tuple[tuple[str, Slot, Transform], ...]
    filter_slot: Slot | None
    secret_slots: tuple[Slot, ...]
    database_slot: Slot | None
    result_measure: Measure | None
    data_slots: tuple[Slot, ...] = ()

    @classmethod
    def compile(cls, operation: Operation, signature_of: Callable[..., Any] | None,
                renames: Mapping[str, str] | None = None) -> CallPlan:
        """`renames` maps the catalog's parameter names to the method's (the ORM says `expr`)."""
        where = positions(signature_of)

        def slot(name: str) -> Slot:
            name = renames.get(name, name) if renames else name
            return Slot(name, where.get(name))

        fields: list[tuple[str, Slot, Transform]] = []
        if operation.collection:
            fields.append(("db.collection.name", slot(operation.collection), _name))
        for parameter, attribute in (
            (operation.target_user, "milvus_audit.target.user"),
            (operation.target_role, "milvus_audit.target.role"),
            (operation.object_type, "milvus_audit.object_type"),
            (operation.object_name, "milvus_audit.object_name"),
            (operation.privilege_group, "milvus_audit.privilege_group"),
        ):
            if parameter:
                fields.append((attribute, slot(parameter), _name))
        if operation.privilege:
            fields.append(("milvus_audit.privilege", slot(operation.privilege), _privileges))
        for parameter, attribute in operation.extra_params.items():
            fields.append((attribute, slot(parameter), _name))
        for parameter, attribute, transform in _SHAPE_FIELDS[operation.shape]:
            fields.append((attribute, slot(parameter), transform))
        # pymilvus sends it as `client-request-id`; the server may log it as the trace id
        fields.append((semconv.CLIENT_REQUEST_ID, Slot("client_request_id", None), _name))

        static: dict[str, Any] = {
            "db.operation.name": operation.name,
            "milvus_audit.category": operation.category.value,
            "milvus_audit.mutating": operation.mutating,
        }
        if operation.fixed_object_type:
            static["milvus_audit.object_type"] = operation.fixed_object_type
        return cls(
            operation=operation,
            static_attributes=static,
            fields=tuple(fields),
            filter_slot=slot("filter") if operation.shape in FILTER_SHAPES else None,
            secret_slots=tuple(slot(name) for name in operation.secrets),
            database_slot=slot(operation.database) if operation.database else None,
            result_measure=RESULT_MEASURES[operation.shape],
            data_slots=tuple(slot(name) for name in _DATA_PARAMS[operation.shape]),
        )

    def request_attributes(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], attributes: dict[str, Any]
    ) -> str | None:
        """Add the request's attributes; return the raw filter text, if any."""
        for attribute, slot, transform in self.fields:  # Slot.get, inlined: this runs per call
            value = kwargs.get(slot.name, _MISSING)
            if value is _MISSING:
                position = slot.position
                if position is None or position >= len(args):
                    continue
                value = args[position]
            if value is not None:
                value = transform(value)
                if value is not None:
                    attributes[attribute] = value
        if self.database_slot is not None:
            database = self.database_slot.get(args, kwargs)
            if isinstance(database, str) and database:
                attributes["db.namespace"] = database
        if self.filter_slot is not None:
            expression = self.filter_slot.get(args, kwargs)
            if isinstance(expression, str) and expression:
                return expression
        return None

    def secrets_in(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
        return [str(v) for s in self.secret_slots if (v := s.get(args, kwargs))]

    def data_in(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
        """What the call carried as data (only read when it failed, to mask its error message)."""
        out: list[str] = []
        for slot in self.data_slots:
            carried_values(slot.get(args, kwargs), out)
        return out


def filter_attribute(expression: str, policy: str) -> str | None:
    """`db.query.text` for a filter under the capture policy, bounded in length."""
    if policy == "raw":
        return bounded(expression)
    if policy == "sanitized":
        return bounded(sanitize_filter(expression))
    return None


# The parameters whose values are data, never to be exported, by shape; masked in error
# messages wherever Milvus echoes them. Names of partitions and fields a call carries are
# data too: the application chose them, an error may echo them unquoted.
_DATA_PARAMS: Mapping[Shape, tuple[str, ...]] = {
    Shape.SEARCH: ("data", "partition_names", "output_fields", "filter_params"),
    Shape.HYBRID_SEARCH: ("partition_names", "output_fields"),
    Shape.QUERY: ("ids", "partition_names", "output_fields", "filter_params"),
    Shape.GET: ("ids", "partition_names", "output_fields"),
    Shape.WRITE: ("data", "partition_name"),
    Shape.DELETE: ("ids", "partition_name", "filter_params"),
    Shape.ITERATOR: ("partition_names", "output_fields", "filter_params"),
    Shape.NONE: (),
}
_MAX_CARRIED = 256  # values masked per failed call: enough for an echoed id list, bounded for a huge batch


def carried_values(value: Any, out: list[str]) -> None:
    """The scalar values inside `value` as text (at most `_MAX_CARRIED`), to mask in error messages."""
    if len(out) >= _MAX_CARRIED or value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, (int, float)):
        out.append(str(value))
    elif isinstance(value, bytes):
        out.append(value.hex())
    elif isinstance(value, Mapping):
        for item in list(value.values())[:_MAX_CARRIED]:
            carried_values(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value[:_MAX_CARRIED]:
            carried_values(item, out)
