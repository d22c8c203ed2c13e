"""Who asked: the end user on whose behalf the application calls Milvus.

Many applications serve everyone through one Milvus account. `enduser()` says who
the current request is for; contextvars carry it across threads (via
`contextvars.copy_context`) and asyncio tasks, so every record made inside gets
`enduser.id`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

_ENDUSER: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "milvus_audit_enduser", default=None
)


@contextmanager
def enduser(user_id: str, **attributes: object) -> Iterator[None]:
    """Attribute every audit record made inside this block to `user_id`.

    Extra keyword arguments become `enduser.<name>` attributes, e.g.
    `enduser("u-42", role="analyst")` adds `enduser.role`.
    """
    values = {"enduser.id": str(user_id)}
    values.update({f"enduser.{key}": str(value) for key, value in attributes.items()})
    token = _ENDUSER.set(MappingProxyType(values))
    try:
        yield
    finally:
        _ENDUSER.reset(token)


def current_enduser() -> Mapping[str, str] | None:
    return _ENDUSER.get()


# Set while an instrumented pymilvus call runs: calls it makes on itself (create_collection
# calls create_index) are part of it, not records of their own.
IN_AUDITED_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("milvus_audit_in_call", default=False)


def flagged(flag: contextvars.ContextVar[bool], function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, run with `flag` set: how nested pymilvus calls know what they are part of."""
    def call(*args: Any, **kwargs: Any) -> Any:
        token = flag.set(True)
        try:
            return function(*args, **kwargs)
        finally:
            flag.reset(token)
    return call
