"""The report's charts: inline SVG from matplotlib's SVG backend (the `report` extra).

Figures are made with `matplotlib.figure.Figure` (no pyplot, no global backend), text kept
as SVG text (small, searchable), no metadata, and a fixed hash salt so the same report
gives the same bytes. Labels come from records: they are shown through `printable()`, and
`$` is escaped so matplotlib never reads a label as mathtext.
"""

from __future__ import annotations

import io
import itertools
import re
from typing import Any

from milvus_audit.export.console import printable

REPORT_EXTRA = "pip install 'milvus-audit[report]'"
CALLS, FAILURES, ALERTS = "#4c78a8", "#e45756", "#b279a2"
_CHART = itertools.count(1)
_IDS = re.compile(r'(id="|href="#|url\(#)([^"()]+)')


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _label(value: Any, width: int = 40) -> str:
    text = printable(value).replace("$", r"\$")
    return text if len(text) <= width else text[: width - 1] + "…"


def _svg(figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "milvus-audit", "font.size": 9,
                                "text.usetex": False}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                       "Type": None}, bbox_inches="tight")
    text = buffer.getvalue()
    prefix = f"chart{next(_CHART)}-"  # ids unique across the charts of one page
    return _IDS.sub(lambda m: m.group(1) + prefix + m.group(2), text[text.index("<svg"):])


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=96)


def timeline(buckets: list[dict[str, Any]], interval_s: int) -> str:
    """Calls, failures and alerts per interval."""
    figure = _figure(10, 2.8)
    axes = figure.add_subplot()
    positions = list(range(len(buckets)))
    calls = [b["calls"] for b in buckets]
    failures = [b["failures"] for b in buckets]
    alerts = [b["alerts"] for b in buckets]
    axes.bar(positions, [c - f for c, f in zip(calls, failures, strict=True)], color=CALLS, width=0.9,
             label="calls (succeeded)")
    axes.bar(positions, failures, bottom=[c - f for c, f in zip(calls, failures, strict=True)], color=FAILURES,
             width=0.9, label="failures")
    marked = [(p, c) for p, c, a in zip(positions, calls, alerts, strict=True) if a]
    if marked:
        axes.scatter([p for p, _ in marked], [c for _, c in marked], marker="v", color=ALERTS, s=40, zorder=3,
                     label="alerts")
    step = max(1, len(buckets) // 8)
    axes.set_xticks(positions[::step], [_label(b["start"][:19].replace("T", " "), 20) for b in buckets[::step]],
                    rotation=20, ha="right")
    axes.set_ylabel(f"records per {interval_s} s")
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", frameon=False, ncols=3)
    return _svg(figure)


def bars(labels: list[Any], series: list[tuple[str, list[float], str]], xlabel: str) -> str:
    """Horizontal stacked bars, one row per label (largest first)."""
    figure = _figure(7, 0.35 * max(len(labels), 2) + 0.9)
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for name, values, color in series:
        axes.barh(positions, values, left=left, color=color, label=name, height=0.7)
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.set_yticks(positions, [_label(label) for label in labels])
    axes.set_xlabel(xlabel)
    axes.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        axes.legend(loc="lower right", frameon=False)
    return _svg(figure)
