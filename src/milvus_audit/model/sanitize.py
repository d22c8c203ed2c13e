"""Keeping secrets and data out of what is exported.

Filter expressions are recorded by shape, with every literal replaced by `?`, so that
`name == "alice" and age > 30` becomes `name == ? and age > ?`. Server error messages
get the same treatment, because Milvus echoes an expression it cannot parse back in
its error text, and any secret the call carried is masked outright.

The shapes come from a single left-to-right scan (no regular expression, nothing that can
backtrack: linear in the text's length, whatever the text). A literal is what the former
regular expression matched, tried in this order at each position:

- a double- or single-quoted string, `\\` escaping any character but a newline; an
  unterminated one runs to the end of the text (or to a `\\` before a newline);
- a hex number `0x1F`, not preceded by a word character or `.`, not followed by a word
  character;
- a decimal number `12`, `1.5`, `.5`, `1.`, `2e-3`, neither preceded nor followed by a word
  character or `.`;
- a boolean (`true`, `false`, `True`, `False`, `TRUE`, `FALSE`) standing as a whole word.

"Word character" is Python's `\\w`: `str.isalnum()` or `_`; digits are `str.isdecimal()`.
A filter's shape is then the shaped text with each list of placeholders (`[?, ?, ?]`)
folded to `[?]`. Shapes of recent filters are cached (applications repeat their filters),
so a repeated filter costs a dictionary lookup on the calling thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

MASK = "***"
CARRIED = "?"
# Exported text is bounded: `db.query.text` and `milvus_audit.error.message` keep at most this
# many characters, then TRUNCATED; so a hostile filter costs the exporters what a normal one does.
MAX_EXPORTED_TEXT = 2048
TRUNCATED = "…[truncated]"
# An error message longer than this is cut before it is scrubbed (the scrub is linear, but
# masking each carried value is a pass over the message).
_MAX_SCRUBBED_MESSAGE = 64 * 1024
# Filters longer than this are shaped on every call rather than cached (the cache holds
# at most _CACHED_SHAPES entries of at most this many characters each).
_MAX_CACHED_FILTER = 2048
_CACHED_SHAPES = 1024
_BOOLEANS = frozenset({"true", "false", "True", "False", "TRUE", "FALSE"})
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _quoted_end(text: str, start: int, quote: str) -> int:
    """End of the quoted string opening at `start` (as `"(?:[^"\\\\]|\\\\.)*"?` matches)."""
    end = len(text)
    i = start + 1
    while i < end:
        char = text[i]
        if char == quote:
            return i + 1
        if char == "\\":
            if i + 1 < end and text[i + 1] != "\n":
                i += 2
                continue
            return i  # a backslash that escapes nothing ends the literal, unterminated
        i += 1
    return end


def _digits_end(text: str, i: int) -> int:
    end = len(text)
    while i < end and text[i].isdecimal():
        i += 1
    return i


def _number_end(text: str, start: int) -> int:
    """End of the hex or decimal number at `start`, or -1 if none stands there. The caller
    has checked that no word character or `.` precedes it."""
    end = len(text)
    char = text[start]
    if char == "0" and start + 1 < end and text[start + 1] in "xX":
        i = start + 2
        while i < end and text[i] in _HEX_DIGITS:
            i += 1
        if i == start + 2 or (i < end and _is_word(text[i])):
            return -1
        return i
    if char.isdecimal():
        i = _digits_end(text, start)
        if i < end and text[i] == ".":
            i = _digits_end(text, i + 1)
    elif char == "." and start + 1 < end and text[start + 1].isdecimal():
        i = _digits_end(text, start + 1)
    else:
        return -1
    if i < end and text[i] in "eE":  # an exponent, if digits follow
        j = i + 1
        if j < end and text[j] in "+-":
            j += 1
        k = _digits_end(text, j)
        if k > j:
            i = k
    if i < end and (_is_word(text[i]) or text[i] == "."):
        return -1  # part of a name, a version, an address: not a literal
    return i


def _word_end(text: str, start: int) -> int:
    end = len(text)
    i = start
    while i < end and _is_word(text[i]):
        i += 1
    return i


def _shape_literals(text: str) -> str:
    """`text` with every literal replaced by `?`."""
    out: list[str] = []
    copied = 0  # text[copied:i] is still to be copied
    i = 0
    end = len(text)
    while i < end:
        char = text[i]
        if char == '"' or char == "'":
            out.append(text[copied:i])
            out.append("?")
            i = copied = _quoted_end(text, i, char)
            continue
        if char.isalnum() or char == "_":
            # The scan lands on word characters only at a word's start, and skips the
            # rest of the word: within a word no number or boolean starts, no quote stands.
            # A number never starts right after a `.` (`a.5`, `1.2.3`); a boolean may.
            if char.isdecimal() and (i == 0 or text[i - 1] != "."):
                number = _number_end(text, i)
                if number > 0:
                    out.append(text[copied:i])
                    out.append("?")
                    i = copied = number
                    continue
            word_end = _word_end(text, i)
            if 4 <= word_end - i <= 5 and text[i:word_end] in _BOOLEANS:
                out.append(text[copied:i])
                out.append("?")
                copied = word_end
            i = word_end
            continue
        if char == "." and (i == 0 or not (_is_word(text[i - 1]) or text[i - 1] == ".")):
            number = _number_end(text, i)
            if number > 0:
                out.append(text[copied:i])
                out.append("?")
                i = copied = number
                continue
        i += 1
    if not out:
        return text
    out.append(text[copied:])
    return "".join(out)


def _skip_spaces(text: str, i: int) -> int:
    end = len(text)
    while i < end and text[i].isspace():
        i += 1
    return i


def _fold_lists(shaped: str) -> str:
    """Each `[?, ?, ...]` (any spacing) folded to `[?]`."""
    if "[" not in shaped:
        return shaped
    out: list[str] = []
    copied = 0
    end = len(shaped)
    i = shaped.find("[")
    while i >= 0:
        j = _skip_spaces(shaped, i + 1)
        folded = -1
        if j < end and shaped[j] == "?":
            j += 1
            while True:
                k = _skip_spaces(shaped, j)
                if k < end and shaped[k] == ",":
                    k = _skip_spaces(shaped, k + 1)
                    if k < end and shaped[k] == "?":
                        j = k + 1
                        continue
                break
            k = _skip_spaces(shaped, j)
            if k < end and shaped[k] == "]":
                folded = k + 1
        if folded > 0:
            out.append(shaped[copied:i])
            out.append("[?]")
            copied = folded
            i = shaped.find("[", folded)
        else:
            i = shaped.find("[", i + 1)
    if not out:
        return shaped
    out.append(shaped[copied:])
    return "".join(out)


def _shape(expression: str) -> str:
    return _fold_lists(_shape_literals(expression))


_cached_shape = lru_cache(maxsize=_CACHED_SHAPES)(_shape)


def sanitize_filter(expression: str) -> str:
    """The filter's shape: literals replaced with `?`, lists of them folded to `[?]`."""
    if len(expression) > _MAX_CACHED_FILTER:
        return _shape(expression)
    return _cached_shape(expression)


def bounded(text: str) -> str:
    """`text`, cut to `MAX_EXPORTED_TEXT` characters with a marker when longer."""
    return text if len(text) <= MAX_EXPORTED_TEXT else text[:MAX_EXPORTED_TEXT] + TRUNCATED


def scrub_message(
    message: str,
    *,
    filter_text: str | None,
    secrets: Iterable[str],
    raw_filters: bool,
    carried: Iterable[str] = (),
) -> str:
    """An error message safe to export: secrets masked; every value the call carried as data
    (`carried`: ids, rows, partition and field names) masked where it stands as a whole token,
    raw filters or not, since Milvus echoes rejected values unquoted (`id in [alice@example.com]`);
    and unless filters are raw (the opt-in), every literal (quoted string, number, boolean)
    replaced with `?`, since Milvus echoes unparsable filters in its error text. Bounded to
    `MAX_EXPORTED_TEXT`."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            message = message.replace(secret, MASK)
    message = message[:_MAX_SCRUBBED_MESSAGE]
    raw_filter = filter_text if raw_filters and filter_text else None
    for value in sorted(set(carried), key=len, reverse=True):  # longest first: no value masks part of another
        if raw_filter is None or value not in raw_filter:  # literals of an opted-in raw filter stay
            message = _mask_token(message, value)
    if raw_filters:
        return bounded(message)
    if filter_text:
        message = message.replace(filter_text, sanitize_filter(filter_text))
    return bounded(_shape_literals(message))


def _mask_token(message: str, value: str) -> str:
    """`message` with each occurrence of `value` that is not part of a longer word replaced by `?`."""
    if not value or value == CARRIED:
        return message
    out: list[str] = []
    copied = 0
    start = message.find(value)
    while start >= 0:
        stop = start + len(value)
        before_ok = start == 0 or not (_is_word(message[start - 1]) and _is_word(value[0]))
        after_ok = stop == len(message) or not (_is_word(message[stop]) and _is_word(value[-1]))
        if before_ok and after_ok:
            out.append(message[copied:start])
            out.append(CARRIED)
            copied = stop
        start = message.find(value, stop if before_ok and after_ok else start + 1)
    if not out:
        return message
    out.append(message[copied:])
    return "".join(out)
