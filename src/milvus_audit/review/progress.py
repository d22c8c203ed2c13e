"""The review commands' progress bar over their input files (runtime/progress.py decides
whether one is shown)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from milvus_audit.export.jsonl import STDIN, Progress
from milvus_audit.runtime.progress import byte_bar, wanted

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(paths: Sequence[str | Path], what: str, passes: int = 1) -> Iterator[Progress | None]:
    """A callback taking bytes read (what `iter_jsonl(progress=...)` calls), or None when no
    bar is wanted. The total is the files' sizes (compressed, for gzip) times `passes`."""
    if not wanted():
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
    bar = byte_bar(total * passes, what)
    if bar is None:
        yield None
        return
    try:
        yield bar.update
    finally:
        bar.close()
