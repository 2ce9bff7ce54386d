"""JSON in and out, fast: orjson, with the standard library for what orjson refuses; and the
checks every JSON value from outside passes at the boundary.

orjson is several times faster than ``json`` on the engine's hot paths (a stored execution is
a few JSON columns, written at every status change). It refuses integers past 64 bits, lone
surrogates and non-string keys, which ``json`` accepts; those fall back to ``json`` so what one
accepts, the other does too. orjson reads an integer past 64 bits as a float, so text that
holds a run of 19 digits or more is read by ``json``, which keeps it exact. Errors are
``TypeError`` or ``ValueError``, as with ``json``.

What comes from outside (a request body, an event, a trigger's filter or input) is held to
``MAX_DEPTH`` levels of nesting, valid unicode (no lone surrogates, which no UTF-8 text, and so
no sqlite text column, can hold) and finite numbers. ``parse`` reads text under those rules;
``check`` holds a value built in Python to them. A refusal is an ``InvalidInputError`` naming
the field by its path (``body.items[3].name``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from .errors import InvalidInputError

__all__ = ["MAX_DEPTH", "check", "dumps", "loads", "parse"]

#: How deep a value from outside may nest: ``[[1]]`` is two levels.
MAX_DEPTH = 64

_slow_dumps = json.JSONEncoder(separators=(",", ":")).encode
# 2**63 has 19 digits: a shorter run of digits is an integer orjson reads exactly. Every digit
# is made a 9, and 19 nines in a row looked for: a tenth of what a regular expression costs.
_RUN = "9" * 19
_NINES = {ord(digit): "9" for digit in "012345678"}
_NINES_BYTES = bytes.maketrans(b"012345678", b"999999999")


def _may_hold_big_integer(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        return _RUN.encode() in text.translate(_NINES_BYTES)
    return _RUN in text.translate(_NINES)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _slow_dumps(value)


def loads(text: str | bytes) -> Any:
    """The value of JSON text the engine wrote (or checked with ``parse``)."""
    if _may_hold_big_integer(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what only the fallback writes (NaN, escaped surrogates)
        return json.loads(text)


def parse(text: str | bytes, where: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """The value of JSON text from outside, held to the boundary's rules (see the module's
    docstring); InvalidInputError naming the bad field, or saying why the text is not JSON.
    ``max_depth`` is more than ``MAX_DEPTH`` for a wrapper whose parts are checked on their
    own (a request carrying an event body one level down)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses all that the rules refuse, but says where only by line and column:
        # read it again with the standard library to name the field, or the reason.
        value = _read_leniently(text, where, str(exc))
        try:
            _check(value, MAX_DEPTH - max_depth)
        except _Refused as refused:
            raise refused.error(where) from None
        raise InvalidInputError(where, f"malformed JSON: {exc}") from None
    if _may_hold_big_integer(text):
        value = json.loads(text)  # an integer past 64 bits, read exactly
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if data.count(b"[") + data.count(b"{") > max_depth:
        # (fewer brackets than levels allowed cannot nest too deep: no walk then)
        _check_depth(value, where, MAX_DEPTH - max_depth)
    return value


def _read_leniently(text: str | bytes, where: str, reason: str) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                where, f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
            ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInputError(where, _TOO_DEEP) from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(where, f"malformed JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidInputError(where, f"malformed JSON: {exc} ({reason})") from None


class _Refused(Exception):
    """A bad field, found deep down: its path is made on the way back up, so a value that
    passes costs no path strings at all."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []

    def error(self, where: str) -> InvalidInputError:
        path = where + "".join(reversed(self.path))
        if len(path) > 120:  # the path down 64 levels: its two ends tell enough
            path = f"{path[:60]}...{path[-50:]}"
        return InvalidInputError(path, self.message)


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    """Parsed JSON: only its depth is left to check."""
    if type(value) is not dict and type(value) is not list:
        return
    try:
        _depth(value, depth)
    except _Refused as refused:
        raise refused.error(where) from None


def _depth(value: Any, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    if type(value) is dict:
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                try:
                    _depth(item, depth + 1)
                except _Refused as refused:
                    refused.path.append(f".{key}")
                    raise
    else:
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                try:
                    _depth(item, depth + 1)
                except _Refused as refused:
                    refused.path.append(f"[{index}]")
                    raise


def check(value: Any, where: str = "body") -> None:
    """Hold a value built in Python to the boundary's rules: JSON types only (dicts with string
    keys, lists and tuples, strings, numbers, booleans, None), at most ``MAX_DEPTH`` levels,
    valid unicode, finite numbers. InvalidInputError naming the first bad field."""
    try:
        _check(value, 0)
    except _Refused as refused:
        raise refused.error(where) from None


def _check(value: Any, depth: int) -> None:
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_text(value)
    elif kind is int or kind is bool or value is None:
        return
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused(f"{value} is not a finite number")
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise _Refused(_TOO_DEEP)
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(f"key {key!r} is not a string")
            if not key.isascii():
                try:
                    _check_text(key)
                except _Refused as refused:
                    refused.path.append(" (a key)")
                    raise
            try:
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(f".{key}")
                raise
    elif kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise _Refused(_TOO_DEEP)
        for index, item in enumerate(value):
            try:
                _check(item, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
    else:
        _check_other(value, depth)


def _check_other(value: Any, depth: int) -> None:
    """Subclasses of the JSON types (an enum of str, an OrderedDict) are what they extend."""
    if isinstance(value, str):
        _check(str(value), depth)
    elif isinstance(value, bool | int):
        return
    elif isinstance(value, float):
        _check(float(value), depth)
    elif isinstance(value, dict):
        _check(dict(value), depth)
    elif isinstance(value, list | tuple):
        _check(list(value), depth)
    else:
        raise _Refused(f"a value of type {type(value).__name__} is not JSON")


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise _Refused(
            f"holds a lone surrogate at character {exc.start}: not valid unicode"
        ) from None
