"""Errors inside auditing: counted, logged once at WARNING, never raised into the application."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("milvus_audit")


class InternalErrors:
    """The process-wide count of contained errors; the first one is logged with its traceback."""

    def __init__(self) -> None:
        self.count = 0
        self._warned = False
        self._lock = threading.Lock()

    def report(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            first = not self._warned
            self._warned = True
        if first:
            log.warning("milvus-audit: error inside auditing (%s), call unaffected: %r", where, exc,
                        exc_info=exc)


INTERNAL_ERRORS = InternalErrors()


def internal_error_count() -> int:
    """How many errors inside auditing were contained since the process started."""
    return INTERNAL_ERRORS.count
