"""Progress bars for long reads (report, tune, replay, verify, ingest's backlog): tqdm on
standard error when it is a terminal, nothing when it is piped or redirected (so what a
script captures is never mixed with bars). `MILVUS_AUDIT_PROGRESS=0` turns them off, `=1` on."""

from __future__ import annotations

import os
import sys
from typing import Any


def wanted() -> bool:
    forced = os.environ.get("MILVUS_AUDIT_PROGRESS")
    if forced is not None:
        return forced not in ("", "0", "false", "no")
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def byte_bar(total: int | None, what: str, enabled: bool | None = None) -> Any:
    """A tqdm bar counting bytes towards `total` (None: unknown), or None when no bar is wanted
    (`enabled`: None decides by `wanted()`). The caller calls `update(n)` and `close()`."""
    if not (wanted() if enabled is None else enabled):
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total or None, desc=what, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2)
