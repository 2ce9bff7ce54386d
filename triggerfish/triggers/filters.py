"""DQL filters: validated and compiled once into a predicate over a resource's JSON.

The language (Dataloop's DQL, which follows MongoDB's query shape)::

    {"dir": "/input"}                               equality; several keys all must hold
    {"size": {"$gt": 10, "$lte": 20}}               $eq $ne $gt $gte $lt $lte $in $nin $exists
    {"$and": [...]}, {"$or": [...]}, {"$not": {...}}, and {"size": {"$not": {"$gt": 10}}}
    {"metadata.system.mimetype": "video/*"}         dotted paths; * and ? wildcards in strings
    {"labels": "cat"}                               an array matches when any element matches
    {"boxes": {"$match": {"label": "dog", "score": {"$gt": 0.5}}}}   an element of an array
    {"filename": {"$match": "*.jp?g"}}              a shell glob (* ? [...]) over a string

Semantics where a value is missing, as users of such queries expect: ``{"f": None}`` and ``$ne``
and ``$nin`` match a missing field; every other condition does not. Ordering operators compare
numbers with numbers and strings with strings; across types they are false, not an error.
A path walks into arrays of objects (``"boxes.label"`` looks at every box's label).

``compile_filter`` refuses a malformed filter with a ``FilterError`` naming the bad part and its
place in the JSON (``filter.$and[1].size.$gt``). It never reads the clock or any state: the
returned predicate is pure.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "FilterError",
    "Predicate",
    "compile_filter",
    "index_key",
    "split_on_key",
    "strings_at",
]

Predicate = Callable[[Any], bool]
_MISSING = object()
_FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not", "$match"}
)
_LOGICAL = frozenset({"$and", "$or", "$not"})
_PATH = re.compile(r"^[^.$][^.]*(\.[^.]+)*$")


class FilterError(ConfigurationError):
    """A filter that cannot be compiled; ``where`` is the JSON path of the bad part."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def compile_filter(spec: Any, where: str = "filter") -> Predicate:
    """Validate a DQL filter and compile it into a predicate over a JSON document.

    ``None`` and ``{}`` match every document.
    """
    if spec is None:
        return _always
    return _compile_document(spec, where)


def index_key(spec: Any) -> tuple[str, str] | None:
    """A (path, string) the filter requires by plain equality, or None if it has none.

    Any document the filter matches has that exact string at that path (or in an array
    there), so a matcher may look filters up by the document's strings instead of running
    each one. Wildcard strings do not count. ``spec`` must be a valid filter.
    """
    return split_on_key(spec)[0]


def split_on_key(spec: Any) -> tuple[tuple[str, str] | None, Any]:
    """The filter's index key (see ``index_key``), and the filter without the equality that
    gives it: what is left to test of a document found under that key. With no key, the
    filter as it is. ``spec`` must be a valid filter."""
    if not isinstance(spec, dict):
        return None, spec
    for key, value in spec.items():
        if key == "$and":
            for i, part in enumerate(value):
                found, rest = split_on_key(part)
                if found is not None:
                    parts = [*value[:i], *([rest] if rest else []), *value[i + 1 :]]
                    others = {k: v for k, v in spec.items() if k != "$and"}
                    return found, ({**others, "$and": parts} if parts else others)
        elif not key.startswith("$"):
            if isinstance(value, dict) and set(value) == {"$eq"}:
                value = value["$eq"]
            if isinstance(value, str) and _wildcard(value) is None:
                return (key, value), {k: v for k, v in spec.items() if k != key}
    return None, spec


def strings_at(doc: Any, path: str) -> set[str]:
    """The strings a path reaches in a document, array elements included: the values that
    equality on ``path`` can match (see ``index_key``)."""
    found: set[str] = set()
    for value in _resolve(doc, tuple(path.split("."))):
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def _always(_: Any) -> bool:
    return True


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if _is_number(value):
        return "number"
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compile_document(spec: Any, where: str) -> Predicate:
    if not isinstance(spec, dict):
        raise FilterError(where, f"a filter must be an object, got {_type_name(spec)}")
    parts: list[Predicate] = []
    for key, value in spec.items():
        at = f"{where}.{key}"
        if not isinstance(key, str):
            raise FilterError(where, f"keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(at, f"{key} takes a non-empty array of filters")
            subs = [_compile_document(v, f"{at}[{i}]") for i, v in enumerate(value)]
            parts.append(_all_of(subs) if key == "$and" else _any_of(subs))
        elif key == "$not":
            parts.append(_negate(_compile_document(value, at)))
        elif key.startswith("$"):
            raise FilterError(at, f"unknown operator {key!r} (here: $and, $or, $not)")
        else:
            parts.append(_compile_field(key, value, at))
    if not parts:
        return _always
    return parts[0] if len(parts) == 1 else _all_of(parts)


# The compiled forms below are what every event runs through, once per candidate trigger:
# they are written for speed (unrolled conjunctions, a walk of plain objects without lists,
# equality on a plain string without the general comparison), always with the same results
# as the general forms, which the tests check against a reference interpreter.


def _all_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 2:
        first, second = parts
        return lambda doc: first(doc) and second(doc)
    if len(parts) == 3:
        first, second, third = parts
        return lambda doc: first(doc) and second(doc) and third(doc)
    return lambda doc: all(part(doc) for part in parts)


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda doc: any(part(doc) for part in parts)


def _negate(part: Predicate) -> Predicate:
    return lambda doc: not part(doc)


def _compile_field(path: str, condition: Any, where: str) -> Predicate:
    if not _PATH.match(path):
        raise FilterError(where, f"malformed field path {path!r}")
    steps = tuple(path.split("."))
    test = _compile_condition(condition, where)
    return lambda doc: test(_resolve(doc, steps))


def _resolve(doc: Any, steps: tuple[str, ...]) -> list[Any]:
    """Every value the path reaches, walking into arrays of objects; [] if none."""
    value = doc
    for depth, step in enumerate(steps):
        if type(value) is not dict:  # an array (or a subclass) on the way: the whole walk
            return _resolve_all([value], steps[depth:])
        value = value.get(step, _MISSING)
        if value is _MISSING:
            return []
    return [value]


def _resolve_all(current: list[Any], steps: tuple[str, ...]) -> list[Any]:
    for step in steps:
        found: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if step in value:
                    found.append(value[step])
            elif isinstance(value, list):
                found.extend(v[step] for v in value if isinstance(v, dict) and step in v)
        current = found
        if not current:
            break
    return current


def _is_operator_object(condition: Any) -> bool:
    return (
        isinstance(condition, dict)
        and bool(condition)
        and all(isinstance(k, str) and k.startswith("$") for k in condition)
    )


def _compile_condition(condition: Any, where: str) -> Callable[[list[Any]], bool]:
    """A test over the values a path reached."""
    if not _is_operator_object(condition):
        if isinstance(condition, dict) and any(str(k).startswith("$") for k in condition):
            raise FilterError(where, "an object cannot mix operators and plain fields")
        return _equals(condition)
    tests = [_compile_operator(op, operand, f"{where}.{op}") for op, operand in condition.items()]
    return tests[0] if len(tests) == 1 else (lambda values: all(t(values) for t in tests))


def _compile_operator(op: str, operand: Any, where: str) -> Callable[[list[Any]], bool]:
    if op not in _FIELD_OPERATORS:
        known = " ".join(sorted(_FIELD_OPERATORS))
        raise FilterError(where, f"unknown operator {op!r} (known: {known})")
    if op == "$eq":
        return _equals(operand)
    if op == "$ne":
        equals = _equals(operand)
        return lambda values: not equals(values)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not (_is_number(operand) or isinstance(operand, str)):
            raise FilterError(where, f"{op} takes a number or a string, got {_type_name(operand)}")
        return _ordering(op, operand)
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(where, f"{op} takes an array, got {_type_name(operand)}")
        if operand and all(type(c) is str and _wildcard(c) is None for c in operand):
            member = _member_of_texts(frozenset(operand))
        else:
            options = [_equals(choice) for choice in operand]

            def member(values: list[Any]) -> bool:
                return any(option(values) for option in options)

        return member if op == "$in" else (lambda values: not member(values))
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(where, f"$exists takes true or false, got {_type_name(operand)}")
        return (lambda values: bool(values)) if operand else (lambda values: not values)
    if op == "$not":
        if not _is_operator_object(operand):
            raise FilterError(where, "$not on a field takes an object of operators")
        inner = _compile_condition(operand, where)
        return lambda values: not inner(values)
    if isinstance(operand, str):  # $match with a glob: a string that matches it
        return _glob(operand)
    # $match with an object: some element of an array matches a whole sub-filter
    element = _compile_document(operand, where)
    return lambda values: any(
        isinstance(v, list) and any(element(item) for item in v) for v in values
    )


def _glob(pattern: str) -> Callable[[list[Any]], bool]:
    """``$match`` with a string, as Dataloop's FiltersOperations.MATCH writes it: a shell
    glob (``*``, ``?``, ``[...]``), case-sensitive, over the whole string; an array matches
    when any of its strings does."""
    compiled = re.compile(fnmatch.translate(pattern))

    def matches(value: Any) -> bool:
        return isinstance(value, str) and compiled.match(value) is not None

    return lambda values: any(
        matches(v) or (isinstance(v, list) and any(matches(item) for item in v)) for v in values
    )


def _wildcard(pattern: str) -> re.Pattern[str] | None:
    if "*" not in pattern and "?" not in pattern:
        return None
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", re.DOTALL)


def _equals(expected: Any) -> Callable[[list[Any]], bool]:
    """Equality with the usual reach: a missing field equals null, an array equals a value it
    contains, and a string with * or ? is a wildcard pattern."""
    pattern = _wildcard(expected) if isinstance(expected, str) else None
    if type(expected) is str and pattern is None:
        return _equals_text(expected)

    def same(value: Any) -> bool:
        if pattern is not None:
            return isinstance(value, str) and pattern.match(value) is not None
        if isinstance(value, bool) or isinstance(expected, bool):  # False is not 0 in JSON
            return type(value) is type(expected) and value == expected
        return bool(value == expected)

    def test(values: list[Any]) -> bool:
        if not values:
            return expected is None
        return any(
            same(v) or (isinstance(v, list) and any(same(item) for item in v)) for v in values
        )

    return test


def _equals_text(expected: str) -> Callable[[list[Any]], bool]:
    """``_equals`` of a plain string: only a string equals it (a subclass of str too)."""

    def test(values: list[Any]) -> bool:
        for value in values:
            if value == expected or (isinstance(value, list) and expected in value):
                return True
        return False

    return test


def _member_of_texts(texts: frozenset[str]) -> Callable[[list[Any]], bool]:
    """``$in`` of plain strings: a set lookup where a general comparison per choice was."""

    def member(values: list[Any]) -> bool:
        for value in values:
            for item in value if isinstance(value, list) else (value,):
                # Exact strings only: a subclass (a str enum) may hash apart from its text.
                if type(item) is str:
                    if item in texts:
                        return True
                elif isinstance(item, str) and any(item == text for text in texts):
                    return True
        return False

    return member


_COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _ordering(op: str, operand: Any) -> Callable[[list[Any]], bool]:
    numeric = _is_number(operand)
    compare = _COMPARE[op]

    def holds(value: Any) -> bool:
        if numeric:
            if not _is_number(value):
                return False
        elif not isinstance(value, str):
            return False
        return bool(compare(value, operand))

    def test(values: list[Any]) -> bool:
        return any(
            holds(v) or (isinstance(v, list) and any(holds(item) for item in v)) for v in values
        )

    return test
