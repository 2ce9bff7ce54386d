"""A result's JSON view, made in the replica beside its pickle (standard library only).

The engine and the daemon never unpickle what a replica produced: a result's pickle is made by
user code, and unpickling it can run code. Where a result is shown as JSON (the HTTP API's
views, the body of an Execution statusChanged event), the engine uses the text this module
makes here, in the replica, from the value itself. A view is bounded: at most ``VIEW_LIMIT``
characters, made in time that grows with that limit, not with the value (a 150-byte pickle of
shared sub-lists unfolds into 16 MB of JSON).

A view is ``(kind, text)``:

* ``json``: ``text`` is the result's whole JSON;
* ``truncated``: the result's JSON is longer than the limit; ``text`` is its first
  ``VIEW_LIMIT`` characters (not JSON in itself);
* ``repr``: the result has no JSON form (a set, a date, an object of a class, a float that is
  not finite, nesting deeper than ``MAX_DEPTH``); ``text`` says what it is.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

__all__ = [
    "JSON",
    "MAX_DEPTH",
    "NULL",
    "REPR",
    "TRUNCATED",
    "VIEW_LIMIT",
    "WHOLE_LIMIT",
    "View",
    "result_view",
]

JSON = "json"
TRUNCATED = "truncated"
REPR = "repr"
#: The most characters of JSON a view holds.
VIEW_LIMIT = 1024 * 1024
#: The view of an application answering JSON is its answer: whole, up to what is stored.
WHOLE_LIMIT = 256 * 1024 * 1024
#: How deep a result may nest and still be shown as JSON (the boundary's limit for input).
MAX_DEPTH = 64
_REPR_LIMIT = 10_000
_PICKLE = "application/x-python-pickle"
_PLAIN_MODULES = frozenset({"builtins", "datetime", "decimal", "uuid", "collections", "fractions"})

View = tuple[str, str]
#: The view of None, the result of most functions that return nothing.
NULL: View = ("json", "null")


class _NotJSON(Exception):
    pass


class _TooLong(Exception):
    pass


# Made once: json.dumps with options of its own builds an encoder at every call.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _number_text(value: Any) -> str | None:
    """The JSON of a plain number or boolean, made directly (most results are one); None
    for anything else, or a float JSON cannot hold."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if kind is bool:
        return "true" if value else "false"
    return None


def result_view(value: Any, limit: int = VIEW_LIMIT) -> View:
    """The JSON view of a result (see the module's docstring)."""
    text = _number_text(value)
    if text is not None and len(text) <= limit:
        return JSON, text
    try:
        _measure(value, limit)
    except _NotJSON as exc:
        return REPR, _describe(value, str(exc))
    except _TooLong:
        return TRUNCATED, _first_characters(value, limit)
    except RecursionError:
        return REPR, _describe(value, "nested too deep")
    text = _encode(value)
    if len(text) > limit:  # escapes made it longer than measured
        return TRUNCATED, text[:limit]
    return JSON, text


def _measure(value: Any, limit: int) -> None:
    """Walk the value as JSON would: _NotJSON for what JSON cannot hold, _TooLong as soon as
    its text would pass ``limit`` characters. A container met again (shared sub-lists) counts
    its size again without being walked again, so the walk is bounded by ``limit``."""
    sizes: dict[int, int] = {}
    total = 0

    def size_of(item: Any, depth: int) -> int:
        nonlocal total
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise _NotJSON("a string that is not valid unicode") from None
            n = len(item) + 2
        elif item is None or isinstance(item, bool):
            n = 5
        elif isinstance(item, int):
            n = item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _NotJSON(f"{item} is not a finite number")
            n = 24
        elif isinstance(item, dict | list | tuple):
            known = sizes.get(id(item))
            if known is not None:
                if known < 0:
                    raise _NotJSON("it contains itself")
                n = known
            else:
                if depth >= MAX_DEPTH:
                    raise _NotJSON(f"nested deeper than {MAX_DEPTH} levels")
                sizes[id(item)] = -1  # being walked: met again inside itself is a cycle
                before = total
                n = 2
                if isinstance(item, dict):
                    for key, member in item.items():
                        if not isinstance(key, str):
                            raise _NotJSON(f"a key of type {type(key).__name__}")
                        n += size_of(key, depth + 1) + size_of(member, depth + 1) + 2
                else:
                    for member in item:
                        n += size_of(member, depth + 1) + 1
                total = before  # what its members added is in n
                sizes[id(item)] = n
        else:
            raise _NotJSON(f"a {type(item).__module__}.{type(item).__qualname__}")
        total += n
        if total > limit:
            raise _TooLong
        return n

    size_of(value, 0)


def _first_characters(value: Any, limit: int) -> str:
    """The first ``limit`` characters of the value's JSON, made piece by piece and stopped
    there (the value is known to be JSON: ``_measure`` said so before it said too long)."""
    parts: list[str] = []
    left = limit

    def put(text: str) -> None:
        nonlocal left
        if len(text) >= left:
            parts.append(text[:left])
            raise _TooLong
        parts.append(text)
        left -= len(text)

    def write(item: Any) -> None:
        if isinstance(item, str):
            put(json.dumps(item[: left + 1], ensure_ascii=False))
        elif isinstance(item, dict):
            put("{")
            for index, (key, member) in enumerate(item.items()):
                put(("," if index else "") + json.dumps(key, ensure_ascii=False) + ":")
                write(member)
            put("}")
        elif isinstance(item, list | tuple):
            put("[")
            for index, member in enumerate(item):
                if index:
                    put(",")
                write(member)
            put("]")
        else:
            put(json.dumps(item))

    with contextlib.suppress(_TooLong):  # the limit reached: what is there is the view
        write(value)
    return "".join(parts)


def _describe(value: Any, why: str) -> str:
    """What a result without a JSON view is: its repr for plain data of the standard
    library, else its type (the pickle has it all)."""
    kind = type(value)
    if isinstance(value, dict | list | tuple):  # JSON's own shapes: what in them is not
        return f"a {kind.__name__} with no JSON form: {why} (ask with Accept: {_PICKLE})"
    if kind.__module__ in _PLAIN_MODULES:
        try:
            text = repr(value)
        except Exception:  # a repr that fails says nothing worth showing
            text = ""
        if text and len(text) <= _REPR_LIMIT:
            return text
    name = f"{kind.__module__}.{kind.__qualname__}"
    return f"a {name} object (ask with Accept: {_PICKLE})"
