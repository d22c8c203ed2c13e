"""Renders docs/events.md from the catalog, so the docs cannot drift from the code.

Regenerate with `python -m milvus_audit.model.catalog_docs > docs/events.md`; a test fails
when the file is stale.
"""

from __future__ import annotations

from milvus_audit.model.catalog import ORM, Action, Category, Operation, operations
from milvus_audit.model.plan import _SHAPE_FIELDS, FILTER_SHAPES

HEADER = """# Audit events

Generated from the operation catalog (`src/milvus_audit/model/catalog.py`) by
`python -m milvus_audit.model.catalog_docs`. Do not edit by hand.

Every audited call emits one log record with `event_name="milvus.audit"` (INFO on
success, WARN on failure), one CLIENT span named `"{operation} {collection}"`, and the
`db.client.operation.duration` histogram (plus `db.response.returned_rows` for reads).

## Attributes on every record

| attribute | value |
|---|---|
| `db.system.name` | `milvus` |
| `db.operation.name` | the pymilvus method name (`connect` for client construction) |
| `db.namespace` | the database, when known (the client's current one, or the call's `db_name`) |
| `server.address`, `server.port` | for network URIs (absent for embedded Milvus Lite) |
| `user.name` | the Milvus user the client authenticated as (absent for bare tokens/API keys) |
| `milvus_audit.auth.method` | `password`, `token` or `none` |
| `milvus_audit.auth.credential_id` | for tokens/API keys: a keyed, non-reversible fingerprint |
| `milvus_audit.tls` | on `connect` records: whether the connection uses TLS |
| `milvus_audit.category` | the operation's category (below) |
| `milvus_audit.mutating` | whether the operation changes server state |
| `milvus_audit.outcome` | `success` or `failure` |
| `milvus_audit.duration_ms` | float |
| `enduser.id` (and `enduser.*`) | inside `milvus_audit.enduser(...)` |

On failure: `milvus_audit.failure_reason` (`authentication`, `permission_denied`,
`not_found`, `invalid_argument`, `unavailable`, `resource_exhausted`, `timeout`,
`unimplemented`, `server_error`, `client_error`, `blocked`), `error.type` (the Milvus
error code name, gRPC status or exception class), `db.response.status_code` (the
Milvus code or gRPC status name), `milvus_audit.error.message` (literals, secrets and
every value the call carried as data removed) and, for permission failures that name it,
`milvus_audit.missing_privilege`.

Never exported: passwords, tokens, API keys, vectors, row contents, ids, `filter_params`
values, and (unless `capture_filters="raw"`) filter literals. `db.query.text` and
`milvus_audit.error.message` keep at most 2,048 characters, then `…[truncated]`.

## Request and response attributes by shape
"""

_TARGETS = (
    ("collection", "db.collection.name"),
    ("target_user", "milvus_audit.target.user"),
    ("target_role", "milvus_audit.target.role"),
    ("privilege", "milvus_audit.privilege"),
    ("object_type", "milvus_audit.object_type"),
    ("object_name", "milvus_audit.object_name"),
    ("privilege_group", "milvus_audit.privilege_group"),
)

_RESULTS = {
    "search": "`db.response.returned_rows` (hits over all queries)",
    "hybrid_search": "`db.response.returned_rows` (hits over all queries)",
    "query": "`db.response.returned_rows`",
    "get": "`db.response.returned_rows`",
    "write": "`milvus_audit.affected_rows` (insert_count/upsert_count)",
    "delete": "`milvus_audit.affected_rows` (delete_count, or the deleted ids returned)",
    "iterator": "one record per page: `milvus_audit.iterator.page`, `db.response.returned_rows`",
}


def _arguments(op: Operation) -> str:
    parts = []
    for field_name, attribute in _TARGETS:
        parameter = getattr(op, field_name)
        if parameter:
            parts.append(f"`{attribute}` ← `{parameter}`")
    if op.fixed_object_type:
        parts.append(f"`milvus_audit.object_type` = `{op.fixed_object_type}`")
    for parameter, attribute in op.extra_params.items():
        parts.append(f"`{attribute}` ← `{parameter}`")
    if op.secrets:
        parts.append("never recorded: " + ", ".join(f"`{s}`" for s in op.secrets))
    return "; ".join(parts)


def render() -> str:
    lines = [HEADER]
    lines.append("| shape | request attributes | response attributes |")
    lines.append("|---|---|---|")
    for shape, fields in _SHAPE_FIELDS.items():
        if not fields:
            continue
        request = ", ".join(f"`{attribute}` ← `{parameter}`" for parameter, attribute, _ in fields)
        if shape in FILTER_SHAPES:
            request += ", `db.query.text` ← `filter` (by `capture_filters`)"
        lines.append(f"| {shape.value} | {request} | {_RESULTS.get(shape.value, '')} |")
    lines.append("")
    for category in Category:
        ops = [op for op in operations() if op.category is category and not op.local]
        if not ops:
            continue
        lines.append(f"## {category.value}\n")
        lines.append("| operation | mutating | shape | security action | arguments recorded | what it does |")
        lines.append("|---|---|---|---|---|---|")
        for op in ops:
            action = "" if op.action is Action.NONE else op.action.value
            lines.append(f"| `{op.name}` | {'yes' if op.mutating else 'no'} | {op.shape.value} | {action} | "
                         f"{_arguments(op)} | {op.summary} |")
        lines.append("")
    lines.append("## local (not audited: no server call)\n")
    lines.append("| operation | what it does |")
    lines.append("|---|---|")
    for op in operations():
        if op.local:
            lines.append(f"| `{op.name}` | {op.summary} |")
    lines.append("")
    lines.append("Any public method not in the catalog (a newer pymilvus) is still audited, "
                 "with category `other`.\n")
    lines.append("## ORM API (auto-instrumentation)\n")
    lines.append("Audited as the operation it performs, with `milvus_audit.api = \"orm\"` and "
                 "`code.function.name`.\n")
    lines.append("| ORM call | audited as | parameter names |")
    lines.append("|---|---|---|")
    for name, entry in ORM.items():
        target = f"`{entry.operation}`" if entry.operation else "local, not audited"
        if entry.with_param:
            target += f" (`{entry.with_param[1]}` when `{entry.with_param[0]}` is given)"
        renames = ", ".join(f"`{orm}` is `{ours}`" for ours, orm in entry.renames.items())
        lines.append(f"| `{name}` | {target} | {renames} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
