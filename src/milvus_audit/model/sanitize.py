"""Keeping secrets and data out of what is exported.

Filter expressions are recorded by shape, with every literal replaced by `?`, so that
`name == "alice" and age > 30` becomes `name == ? and age > ?`. Server error messages
get the same treatment, because Milvus echoes an expression it cannot parse back in
its error text, and any secret the call carried is masked outright.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LITERAL = re.compile(
    r"""
      "(?:[^"\\]|\\.)*"?                        # double-quoted string, even unterminated
    | '(?:[^'\\]|\\.)*'?                        # single-quoted string
    | (?<![\w.])0[xX][0-9a-fA-F]+(?!\w)         # hex number
    | (?<![\w.])(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])  # decimal number
    | \b(?:true|false|True|False|TRUE|FALSE)\b  # boolean
    """,
    re.VERBOSE,
)
_LIST_OF_PLACEHOLDERS = re.compile(r"\[\s*\?(?:\s*,\s*\?)*\s*\]")
MASK = "***"


def sanitize_filter(expression: str) -> str:
    """The filter's shape: literals replaced with `?`, lists of them folded to `[?]`."""
    shaped = _LITERAL.sub("?", expression)
    return _LIST_OF_PLACEHOLDERS.sub("[?]", shaped)


def scrub_message(
    message: str,
    *,
    filter_text: str | None,
    secrets: Iterable[str],
    raw_filters: bool,
) -> str:
    """An error message safe to export: secrets masked, and unless filters are raw,
    every literal (quoted string, number, boolean) replaced with `?`, since Milvus
    echoes unparsable filters and rejected values in its error text."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            message = message.replace(secret, MASK)
    if raw_filters:
        return message
    if filter_text:
        message = message.replace(filter_text, sanitize_filter(filter_text))
    return _LITERAL.sub("?", message)
