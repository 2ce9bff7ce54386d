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
import re
from typing import Any

import orjson

from .errors import InvalidInputError

__all__ = ["MAX_DEPTH", "check", "dumps", "loads", "parse"]

#: How deep a value from outside may nest: ``[[1]]`` is two levels.
MAX_DEPTH = 64

_slow_dumps = json.JSONEncoder(separators=(",", ":")).encode
# 2**63 has 19 digits: a shorter run of digits is an integer orjson reads exactly.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _slow_dumps(value)


def loads(text: str | bytes) -> Any:
    """The value of JSON text the engine wrote (or checked with ``parse``)."""
    digits = _LONG_DIGITS if isinstance(text, bytes) else _LONG_DIGITS_TEXT
    if digits.search(text):  # type: ignore[arg-type]
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
        _check(value, where, MAX_DEPTH - max_depth)
        raise InvalidInputError(where, f"malformed JSON: {exc}") from None
    digits = _LONG_DIGITS if isinstance(text, bytes) else _LONG_DIGITS_TEXT
    if digits.search(text):  # type: ignore[arg-type]
        value = json.loads(text)  # an integer past 64 bits, read exactly
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
        raise InvalidInputError(where, f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(where, f"malformed JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidInputError(where, f"malformed JSON: {exc} ({reason})") from None


def _too_deep(where: str) -> InvalidInputError:
    if len(where) > 120:  # the path down 64 levels: its two ends tell enough
        where = f"{where[:60]}...{where[-50:]}"
    return InvalidInputError(where, f"nested deeper than {MAX_DEPTH} levels")


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    """Parsed JSON: only its depth is left to check."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _too_deep(where)
        for key, item in value.items():
            if isinstance(item, dict | list):
                _check_depth(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise _too_deep(where)
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                _check_depth(item, f"{where}[{index}]", depth + 1)


def check(value: Any, where: str = "body") -> None:
    """Hold a value built in Python to the boundary's rules: JSON types only (dicts with string
    keys, lists and tuples, strings, numbers, booleans, None), at most ``MAX_DEPTH`` levels,
    valid unicode, finite numbers. InvalidInputError naming the first bad field."""
    _check(value, where, 0)


def _check(value: Any, where: str, depth: int) -> None:
    if isinstance(value, str):
        if not value.isascii():
            _check_text(value, where)
    elif value is None or isinstance(value, bool | int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(where, f"{value} is not a finite number")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _too_deep(where)
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(where, f"key {key!r} is not a string")
            if not key.isascii():
                _check_text(key, f"{where} (a key)")
            _check(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise _too_deep(where)
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
    else:
        raise InvalidInputError(where, f"a value of type {type(value).__name__} is not JSON")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            where, f"holds a lone surrogate at character {exc.start}: not valid unicode"
        ) from None
