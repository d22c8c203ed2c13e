"""Progress bars for the long-running commands (report, tune, replay, verify): tqdm on
standard error when it is a terminal, nothing when it is piped or redirected (so what a
script captures is never mixed with bars). `MILVUS_AUDIT_PROGRESS=0` turns them off, `=1` on."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from milvus_audit.export.jsonl import STDIN, Progress


def wanted() -> bool:
    forced = os.environ.get("MILVUS_AUDIT_PROGRESS")
    if forced is not None:
        return forced not in ("", "0", "false", "no")
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_bar(paths: Sequence[str | Path], what: str, passes: int = 1) -> Iterator[Progress | None]:
    """A callback taking bytes read (what `iter_jsonl(progress=...)` calls), or None when no
    bar is wanted. The total is the files' sizes (compressed, for gzip) times `passes`."""
    if not wanted():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        yield None
        return
    total = 0
    for path in paths:
        if str(path) == STDIN:
            total = 0
            break
        try:
            total += Path(path).stat().st_size
        except OSError:
            pass
    bar = tqdm(total=total * passes or None, desc=what, unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.2)
    try:
        yield bar.update
    finally:
        bar.close()
