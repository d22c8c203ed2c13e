"""Rendering a report: HTML (one self-contained file), Markdown, text and JSON.

Every format is built from the same sections. Values that came from records are shown
through `printable()` (controls, bidi marks and lone surrogates become visible escapes),
then escaped for the format: HTML-escaped in HTML, Markdown's markup characters escaped in
Markdown. JSON keeps the values exact (JSON escaping).

The HTML page makes no network request: a Content-Security-Policy meta tag allows no
source but its own inline script (by hash) and inline styles, charts are inline SVG, and
there is no link to anything outside the page. It reads without JavaScript; with it, a
click on a column header sorts the table.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from milvus_audit._version import __version__
from milvus_audit.export.console import printable
from milvus_audit.review import charts

FORMATS = ("html", "md", "text", "json")

_SORT_SCRIPT = (
    "document.querySelectorAll('table.sortable th').forEach(function(th){th.tabIndex=0;"
    "th.title='sort';th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],"
    "i=Array.prototype.indexOf.call(th.parentNode.children,th),asc=th.getAttribute('aria-sort')!=='ascending';"
    "Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute('aria-sort')});"
    "th.setAttribute('aria-sort',asc?'ascending':'descending');var rows=Array.prototype.slice.call(b.rows);"
    "rows.sort(function(x,y){var a=x.cells[i].getAttribute('data-v'),c=y.cells[i].getAttribute('data-v'),r;"
    "if(a!==null&&c!==null){r=parseFloat(a)-parseFloat(c)}else{r=x.cells[i].textContent.localeCompare("
    "y.cells[i].textContent)}return asc?r:-r});rows.forEach(function(r){b.appendChild(r)})})});"
    "document.documentElement.classList.add('js');"
)
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2433;background:#fff}
header{background:#1d2433;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0}nav{padding:8px 28px;background:#eef1f6;position:sticky;top:0}
nav a{margin-right:14px;color:#2d4f8a;text-decoration:none;font-size:13px}
main{padding:8px 28px 40px;max-width:1400px}section{margin:26px 0}h2{border-bottom:2px solid #dde3ec;
padding-bottom:4px;font-size:18px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #dde3ec;padding:3px 8px;text-align:left;vertical-align:top;max-width:480px;
overflow-wrap:anywhere}th{background:#f4f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
html.js table.sortable th{cursor:pointer}th[aria-sort=ascending]::after{content:' \\25B2'}
th[aria-sort=descending]::after{content:' \\25BC'}.where{font-family:ui-monospace,monospace;font-size:12px;
color:#556}.note{color:#556;font-size:13px}.chart svg{max-width:100%;height:auto}
.kpi{display:flex;flex-wrap:wrap;gap:10px}.kpi div{background:#f4f6fa;border-radius:6px;padding:8px 14px}
.kpi b{display:block;font-size:20px}.sev-critical,.sev-high{color:#b3261e;font-weight:600}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34;font-weight:600}
"""


@dataclass
class Column:
    title: str
    key: str | Callable[[dict[str, Any]], Any]
    numeric: bool = False
    where: bool = False  # a record position (file:line, stream/seq)

    def value(self, row: dict[str, Any]) -> Any:
        return self.key(row) if callable(self.key) else row.get(self.key, "")


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    chart: Callable[[], str] | None = None
    pairs: list[tuple[str, Any]] = field(default_factory=list)  # a summary: label, value


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value != int(value) else f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _more(total: int, shown: int, what: str) -> str:
    return f"{total - shown:,} more {what} not listed (the first {shown:,} are)." if total > shown else ""


def _evidence(row: dict[str, Any]) -> str:
    parts = []
    for item in row.get("evidence") or []:
        parts.append(f"{item['where']}" if item.get("where") else f"event {item['event']}")
    return "; ".join(parts)


def sections(data: dict[str, Any], *, with_charts: bool) -> list[Section]:
    counts, period = data["counts"], data["period"]
    out: list[Section] = []
    summary = Section("summary", "Summary", pairs=[
        ("period", f"{period['first'] or '-'} to {period['last'] or '-'}"),
        ("records", counts["records"]), ("audit records (calls)", counts["audit_records"]),
        ("failures", counts["failures"]), ("alerts", counts["alerts"]),
        ("principals (user, end user, client address)", counts["principals"]),
        ("users", counts["users"]), ("end users", counts["endusers"]), ("collections", counts["collections"]),
        ("responses", counts["responses"]), ("server access records", counts["server_records"]),
    ])
    if period["since"] or period["until"]:
        summary.pairs.append(("selected", f"{period['since'] or 'start'} to {period['until'] or 'end'} "
                                          f"({counts['outside_period']:,} records outside)"))
    if data["integrity"]:
        integrity = data["integrity"]
        summary.pairs.append(("integrity", "not checked: " + integrity["why"] if not integrity["checked"] else
                              f"{integrity['problems']} problem(s) in {len(integrity['streams'])} stream(s)"))
    if data["torn"]:
        summary.pairs.append(("cut last lines", ", ".join(data["torn"])))
    out.append(summary)

    timeline = data["timeline"]
    buckets = timeline["buckets"]
    out.append(Section(
        "timeline", "Timeline", f"Calls, failures and alerts per {timeline['interval_s']} s.",
        [Column("interval start", "start"), Column("calls", "calls", True), Column("failures", "failures", True),
         Column("alerts", "alerts", True)],
        [b for b in buckets if b["calls"] or b["alerts"]],
        chart=(lambda: charts.timeline(buckets, timeline["interval_s"])) if with_charts and buckets else None))

    principals = data["principals"]
    top = principals[:12]
    out.append(Section(
        "principals", "Top principals", "Who called, by user, end user and client address.",
        [Column("user", "user"), Column("end user", "enduser"), Column("client address", "client_address"),
         Column("calls", "calls", True), Column("reads", "reads", True), Column("writes", "writes", True),
         Column("rows read", "rows_read", True), Column("failures", "failures", True),
         Column("alerts", "alerts", True), Column("first", "first"), Column("last", "last")],
        principals, note=_more(counts["principals"], len(principals), "principals"),
        chart=(lambda: charts.bars(
            [" / ".join(filter(None, (p["user"], p["enduser"], p["client_address"]))) or "anonymous" for p in top],
            [("reads", [p["reads"] for p in top], charts.CALLS),
             ("writes", [p["writes"] for p in top], "#72b7b2"),
             ("other", [p["calls"] - p["reads"] - p["writes"] for p in top], "#bab0ac")], "calls"))
        if with_charts and top else None))
    out.append(Section(
        "collections", "Collections", "Activity per collection.",
        [Column("collection", "collection"), Column("calls", "calls", True), Column("reads", "reads", True),
         Column("writes", "writes", True), Column("rows read", "rows_read", True),
         Column("rows written", "rows_written", True), Column("failures", "failures", True),
         Column("drops/truncates", "destructive", True)],
        data["collections"], note=_more(counts["collections"], len(data["collections"]), "collections")))
    failures = data["failures"]
    out.append(Section(
        "failures", "Failures by reason", "",
        [Column("reason", "reason"), Column("count", "count", True)], failures,
        chart=(lambda: charts.bars([f["reason"] for f in failures],
                                   [("failures", [f["count"] for f in failures], charts.FAILURES)], "failures"))
        if with_charts and failures else None))
    out.append(Section(
        "failures-by-operation", "Failures by reason and operation", "",
        [Column("reason", "reason"), Column("operation", "operation"), Column("count", "count", True)],
        data["failures_by_operation"]))
    out.append(Section(
        "auth-failures", "Authentication failures", "By the account tried and where the attempt came from.",
        [Column("account", "principal"), Column("source", "source"), Column("count", "count", True),
         Column("first", "first"), Column("first record", "where", where=True)], data["auth_failures"]))
    rbac = data["rbac_changes"]
    out.append(Section(
        "rbac", "RBAC and privilege changes", "Every call that changes users, roles or privileges: who, "
                                              "what, to whom, when.",
        [Column("time", "time"), Column("by", "principal"), Column("operation", "operation"),
         Column("user", "target_user"), Column("role", "target_role"), Column("privilege", "privilege"),
         Column("object", "object"), Column("outcome", "outcome"), Column("record", "where", where=True)],
        rbac["items"], note=_more(rbac["total"], len(rbac["items"]), "changes")))
    destructive = data["destructive"]
    out.append(Section(
        "destructive", "Destructive operations", "Drops, truncates and deletes.",
        [Column("time", "time"), Column("by", "principal"), Column("operation", "operation"),
         Column("target", "target"), Column("detail", "detail"), Column("outcome", "outcome"),
         Column("record", "where", where=True)],
        destructive["items"], note=_more(destructive["total"], len(destructive["items"]), "operations")))
    out.append(Section(
        "alerts-by-rule", "Alerts by rule and severity", "",
        [Column("rule", "rule"), Column("severity", "severity"), Column("count", "count", True)],
        data["alerts_by_rule"]))
    alerts = data["alerts"]
    out.append(Section(
        "alerts", "Alerts", "Each alert with the value that fired it and its evidence (the records behind it).",
        [Column("time", "time"), Column("rule", "rule"), Column("severity", "severity"),
         Column("principal", "principal"), Column("summary", "summary"),
         Column("value / threshold", lambda r: f"{_num(r['value'])} / {_num(r['threshold'])}"
                if r.get("value") is not None else ""),
         Column("ATT&CK", "attack"), Column("evidence", _evidence, where=True),
         Column("alert record", "where", where=True)],
        alerts["items"], note=_more(alerts["total"], len(alerts["items"]), "alerts")))
    if data["responses"]:
        out.append(Section("responses", "Responses", "What the playbooks did.",
                           [Column("action", "action"), Column("outcome", "outcome"), Column("count", "count", True)],
                           data["responses"]))
    out.append(Section(
        "slowest", "Slowest operations", "",
        [Column("time", "time"), Column("duration ms", "duration_ms", True), Column("operation", "operation"),
         Column("collection", "collection"), Column("by", "principal"), Column("rows", "rows", True),
         Column("record", "where", where=True)], data["slowest"]))
    shadow = data["shadow"]
    if shadow is not None:
        out.append(Section(
            "shadow", "Shadow access",
            f"Server accesses with no audited client call: {shadow['shadow']:,} of {shadow['server_records']:,} "
            f"server records ({shadow['accounted']:,} client calls accounted, {shadow['unconfirmed']:,} "
            "unconfirmed).",
            [Column("time", "time"), Column("user", "user"), Column("client address", "client_address"),
             Column("operation", "operation"), Column("collection", "collection"),
             Column("failed", "failed"), Column("server log line", "where", where=True)],
            shadow["items"], note=_more(shadow["shadow"], len(shadow["items"]), "shadow accesses")))
    integrity = data["integrity"]
    if integrity is not None and integrity["checked"]:
        rows = []
        for stream in integrity["streams"]:
            findings = stream["findings"] or [{"kind": "", "where": "", "detail": ""}]
            for finding in findings:
                rows.append({**stream, **finding})
        out.append(Section(
            "integrity", "Integrity",
            f"Checked: {integrity['what']}; {integrity['records_verified']:,} records in "
            f"{len(integrity['streams'])} stream(s); {integrity['problems']} problem(s).",
            [Column("stream", "stream"), Column("records", "records", True),
             Column("checkpoints", "checkpoints", True), Column("closed", "closed"), Column("status", "status"),
             Column("finding", "kind"), Column("where", "where", where=True), Column("detail", "detail")], rows))
    if data["streams"]:
        out.append(Section(
            "streams", "Streams", "The chained streams in the input (stream/seq is how records are named).",
            [Column("stream", "stream"), Column("records", "records", True), Column("first seq", "first_seq", True),
             Column("last seq", "last_seq", True)], data["streams"]))
    return out


# -- HTML ------------------------------------------------------------------------------------
def _h(value: Any) -> str:
    return html.escape(printable(value), quote=True)


def _html_cell(column: Column, row: dict[str, Any]) -> str:
    value = column.value(row)
    if column.numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="n" data-v="{value}">{_h(_num(value))}</td>'
    if column.where:
        return f'<td class="where">{_h(value)}</td>'
    css = f' class="sev-{_h(value)}"' if column.key == "severity" else ""
    return f"<td{css}>{_h(value)}</td>"


def _html_section(section: Section) -> str:
    parts = [f'<section id="{section.id}"><h2>{_h(section.title)}</h2>']
    if section.intro:
        parts.append(f'<p class="note">{_h(section.intro)}</p>')
    if section.pairs:
        parts.append('<div class="kpi">' + "".join(
            f"<div><b>{_h(_num(value))}</b>{_h(label)}</div>" for label, value in section.pairs) + "</div>")
    if section.chart is not None:
        parts.append(f'<div class="chart" role="img" aria-label="{_h(section.title)} chart">{section.chart()}</div>')
    if section.columns:
        if section.rows:
            head = "".join(f"<th>{_h(c.title)}</th>" for c in section.columns)
            body = "".join("<tr>" + "".join(_html_cell(c, row) for c in section.columns) + "</tr>"
                           for row in section.rows)
            table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            if section.id == "timeline":
                table = f"<details><summary>the numbers ({len(section.rows)} intervals)</summary>{table}</details>"
            parts.append(table)
        else:
            parts.append('<p class="note">None.</p>')
    if section.note:
        parts.append(f'<p class="note">{_h(section.note)}</p>')
    parts.append("</section>")
    return "".join(parts)


def csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SORT_SCRIPT.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:; "
            "font-src 'none'; connect-src 'none'; media-src 'none'; object-src 'none'; frame-src 'none'; "
            "worker-src 'none'; manifest-src 'none'; base-uri 'none'; form-action 'none'")


def to_html(data: dict[str, Any]) -> str:
    parts = sections(data, with_charts=True)
    period = data["period"]
    nav = "".join(f'<a href="#{s.id}">{_h(s.title)}</a>' for s in parts)
    subtitle = (f"{period['first'] or '-'} to {period['last'] or '-'} · {data['counts']['records']:,} records · "
                f"{', '.join(data['sources'])}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>milvus-audit report {_h(period['first'] or '')}</title><style>{_STYLE}</style></head>"
        f"<body><header><h1>Milvus audit report</h1><p>{_h(subtitle)}</p></header><nav>{nav}</nav><main>"
        + "".join(_html_section(s) for s in parts)
        + f'<p class="note">Generated by milvus-audit {_h(__version__)}.</p></main>'
        f"<script>{_SORT_SCRIPT}</script></body></html>\n")


# -- Markdown and text -------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-!|~])")


def _md(value: Any) -> str:
    return _MD_SPECIAL.sub(r"\\\1", printable(value))


def _plain(column: Column, row: dict[str, Any]) -> str:
    value = column.value(row)
    return _num(value) if column.numeric else str(value)


def to_markdown(data: dict[str, Any]) -> str:
    lines = ["# Milvus audit report", ""]
    for section in sections(data, with_charts=False):
        lines += [f"## {_md(section.title)}", ""]
        if section.intro:
            lines += [_md(section.intro), ""]
        for label, value in section.pairs:
            lines.append(f"- **{_md(label)}**: {_md(_num(value))}")
        if section.pairs:
            lines.append("")
        if section.columns:
            if section.rows:
                lines.append("| " + " | ".join(_md(c.title) for c in section.columns) + " |")
                lines.append("|" + "|".join("---:" if c.numeric else "---" for c in section.columns) + "|")
                for row in section.rows:
                    lines.append("| " + " | ".join(_md(_plain(c, row)) for c in section.columns) + " |")
            else:
                lines.append("None.")
            lines.append("")
        if section.note:
            lines += [_md(section.note), ""]
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def to_text(data: dict[str, Any]) -> str:
    lines = ["MILVUS AUDIT REPORT", ""]
    for section in sections(data, with_charts=False):
        lines += [section.title.upper(), "-" * len(section.title)]
        if section.intro:
            lines.append(printable(section.intro))
        for label, value in section.pairs:
            lines.append(f"  {printable(label):<46} {printable(_num(value))}")
        if section.columns:
            if section.rows:
                cells = [[_clip(printable(_plain(c, row)), 60) for c in section.columns] for row in section.rows]
                widths = [max(len(c.title), *(len(r[i]) for r in cells)) for i, c in enumerate(section.columns)]
                lines.append("  " + "  ".join(c.title.ljust(w) for c, w in zip(section.columns, widths, strict=True)))
                for row_cells in cells:
                    lines.append("  " + "  ".join(
                        (cell.rjust(w) if c.numeric else cell.ljust(w))
                        for c, cell, w in zip(section.columns, row_cells, widths, strict=True)).rstrip())
            else:
                lines.append("  none")
        if section.note:
            lines.append("  " + printable(section.note))
        lines.append("")
    return "\n".join(lines)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, default=str) + "\n"


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "html":
        return to_html(data)
    if fmt == "md":
        return to_markdown(data)
    if fmt == "text":
        return to_text(data)
    if fmt == "json":
        return to_json(data)
    raise ValueError(f"unknown report format {fmt!r}: {', '.join(FORMATS)}")
