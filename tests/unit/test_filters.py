"""The DQL filter compiler, against examples and against a small reference interpreter."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerfish.triggers.filters import (
    FilterError,
    compile_filter,
    index_key,
    split_on_key,
    strings_at,
)

ITEM = {
    "dir": "/input",
    "size": 15,
    "hidden": False,
    "labels": ["cat", "dog"],
    "metadata": {"system": {"mimetype": "video/mp4"}},
    "boxes": [{"label": "dog", "score": 0.7}, {"label": "cat", "score": 0.2}],
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"dir": "/input"}, True),
        ({"dir": "/output"}, False),
        ({"size": {"$gt": 10, "$lte": 15}}, True),
        ({"size": {"$gte": 16}}, False),
        ({"size": {"$gt": "10"}}, False),  # a number is not compared with a string
        ({"metadata.system.mimetype": "video/*"}, True),
        ({"metadata.system.mimetype": "image/*"}, False),
        ({"metadata.system.mimetype": "video/mp?"}, True),
        ({"labels": "cat"}, True),
        ({"labels": {"$in": ["bird", "d?g"]}}, True),
        ({"labels": {"$nin": ["cat"]}}, False),
        ({"boxes": {"$match": {"label": "dog", "score": {"$gt": 0.5}}}}, True),
        ({"boxes": {"$match": {"label": "cat", "score": {"$gt": 0.5}}}}, False),
        ({"boxes.label": "cat"}, True),
        ({"dir": {"$match": "/in*"}}, True),  # a glob, as Dataloop's FiltersOperations.MATCH
        ({"dir": {"$match": "/in"}}, False),  # the whole string
        ({"metadata.system.mimetype": {"$match": "video/mp[34]"}}, True),
        ({"labels": {"$match": "d?g"}}, True),  # an array: any of its strings
        ({"size": {"$match": "1*"}}, False),  # a glob matches strings only
        ({"hidden": False}, True),
        ({"hidden": 0}, False),  # JSON false is not the number 0
        ({"missing": None}, True),
        ({"missing": {"$exists": False}}, True),
        ({"dir": {"$exists": True}}, True),
        ({"missing": {"$ne": 3}}, True),
        ({"$and": [{"dir": "/input"}, {"hidden": False}]}, True),
        ({"$or": [{"dir": "/x"}, {"size": 15}]}, True),
        ({"$not": {"dir": "/input"}}, False),
        ({"size": {"$not": {"$gt": 20}}}, True),
        ({}, True),
        (None, True),
    ],
)
def test_examples(spec: Any, expected: bool) -> None:
    assert compile_filter(spec)(ITEM) is expected


@pytest.mark.parametrize(
    ("spec", "where", "words"),
    [
        ({"size": {"$gtt": 1}}, "filter.size.$gtt", "unknown operator '$gtt'"),
        ({"$and": [{"a": 1}, {"b": {"$in": 3}}]}, "filter.$and[1].b.$in", "takes an array"),
        ({"a..b": 1}, "filter.a..b", "malformed field path"),
        ({".a": 1}, "filter..a", "malformed field path"),
        ({"$where": "x"}, "filter.$where", "unknown operator"),
        ({"x": {"$exists": "yes"}}, "filter.x.$exists", "true or false"),
        ({"x": {"$gt": [1]}}, "filter.x.$gt", "number or a string"),
        ({"$or": []}, "filter.$or", "non-empty array"),
        ({"x": {"$match": 3}}, "filter.x.$match", "must be an object"),
        ({"x": {"$match": ["*.jpg"]}}, "filter.x.$match", "must be an object"),
        ({"x": {"$gt": 1, "y": 2}}, "filter.x", "mix operators"),
        ([1], "filter", "must be an object"),
    ],
)
def test_bad_filters_name_the_part_and_its_place(spec: Any, where: str, words: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(spec)
    assert caught.value.where == where
    assert words in str(caught.value)


# -- a small reference interpreter, written for clarity rather than speed --------------------


def ref_values(node: Any, steps: list[str]) -> list[Any]:
    if not steps:
        return [node]
    head, rest = steps[0], steps[1:]
    if isinstance(node, dict):
        return ref_values(node[head], rest) if head in node else []
    if isinstance(node, list):
        out: list[Any] = []
        for element in node:
            if isinstance(element, dict) and head in element:
                out += ref_values(element[head], rest)
        return out
    return []


def ref_same(value: Any, expected: Any) -> bool:
    if isinstance(expected, str) and ("*" in expected or "?" in expected):
        return isinstance(value, str) and fnmatch.fnmatchcase(value, expected.replace("[", "[[]"))
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)


def ref_eq(values: list[Any], expected: Any) -> bool:
    if not values:
        return expected is None
    candidates = []
    for value in values:
        candidates.append(value)
        if isinstance(value, list):
            candidates += value
    return any(ref_same(c, expected) for c in candidates)


def ref_order(values: list[Any], op: str, operand: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    flat = []
    for value in values:
        flat += value if isinstance(value, list) else [value]
    compare = {
        "$gt": lambda x: x > operand,
        "$gte": lambda x: x >= operand,
        "$lt": lambda x: x < operand,
        "$lte": lambda x: x <= operand,
    }[op]
    same_kind = [
        x
        for x in flat
        if (number(operand) and number(x)) or (isinstance(operand, str) and isinstance(x, str))
    ]
    return any(compare(x) for x in same_kind)


def ref_condition(values: list[Any], condition: Any) -> bool:
    operators = isinstance(condition, dict) and condition and all(k[0] == "$" for k in condition)
    if not operators:
        return ref_eq(values, condition)
    for op, operand in condition.items():
        if op == "$eq":
            ok = ref_eq(values, operand)
        elif op == "$ne":
            ok = not ref_eq(values, operand)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = ref_order(values, op, operand)
        elif op == "$in":
            ok = any(ref_eq(values, choice) for choice in operand)
        elif op == "$nin":
            ok = not any(ref_eq(values, choice) for choice in operand)
        elif op == "$exists":
            ok = bool(values) == operand
        elif op == "$not":
            ok = not ref_condition(values, operand)
        elif isinstance(operand, str):  # $match with a glob
            ok = any(
                any(isinstance(s, str) and fnmatch.fnmatchcase(s, operand) for s in _strings(v))
                for v in values
            )
        else:  # $match
            ok = any(isinstance(v, list) and any(reference(operand, e) for e in v) for v in values)
        if not ok:
            return False
    return True


def _strings(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def reference(spec: dict[str, Any], doc: Any) -> bool:
    for key, value in spec.items():
        if key == "$and":
            ok = all(reference(s, doc) for s in value)
        elif key == "$or":
            ok = any(reference(s, doc) for s in value)
        elif key == "$not":
            ok = not reference(value, doc)
        else:
            ok = ref_condition(ref_values(doc, key.split(".")), value)
        if not ok:
            return False
    return True


# -- generators ---------------------------------------------------------------------------

KEYS = ["a", "b", "c"]
# Small ranges so that generated filters and documents often meet on the same values.
scalars = st.one_of(
    st.integers(0, 2),
    st.just(1.0),
    st.sampled_from(["", "x", "xy", "y"]),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=3),
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, min_size=2, max_size=3)
paths = st.sampled_from(["a", "b", "c", "a.b", "b.c", "a.b.c"])
patterns = st.sampled_from(["x*", "*y", "?", "x?", "*"])
operand_values = st.one_of(scalars, patterns)


def conditions(filters: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    order = st.one_of(st.integers(0, 2), st.sampled_from(["x", "xy", "y"]))
    operator = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), operand_values),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), order),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(operand_values, max_size=3)),
        st.tuples(st.just("$exists"), st.booleans()),
        st.tuples(st.just("$match"), st.one_of(filters, patterns)),
    )
    ops = st.lists(operator, min_size=1, max_size=2, unique_by=lambda t: t[0]).map(dict)
    negated = ops.map(lambda o: {"$not": o})
    return st.one_of(operand_values, ops, ops, ops, negated)


filters = st.recursive(
    st.dictionaries(paths, st.deferred(lambda: conditions(filters)), min_size=1, max_size=2),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=1500, deadline=None)
@given(spec=filters, docs=st.lists(documents, min_size=1, max_size=5))
def test_compiled_filters_agree_with_the_reference(spec: dict[str, Any], docs: list[Any]) -> None:
    predicate = compile_filter(spec)
    for doc in docs:
        assert predicate(doc) is reference(spec, doc), (spec, doc)


strings = st.sampled_from(["x", "xy", "y"])
string_values = st.recursive(  # documents full of the strings keyed filters look for
    st.one_of(strings, st.integers(0, 1)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
)
string_documents = st.dictionaries(st.sampled_from(KEYS), string_values, min_size=1, max_size=3)


@st.composite
def keyed_filters(draw: st.DrawFn) -> dict[str, Any]:
    """A filter with an equality on a string, maybe beside or inside other conditions."""
    path, value = draw(paths), draw(strings)
    equality: Any = draw(st.sampled_from([value, {"$eq": value}]))
    others = draw(st.one_of(st.none(), filters))
    if others is None:
        return {path: equality}
    if draw(st.booleans()):
        return {"$and": [others, {path: equality}]}
    return {**others, path: equality}


@settings(max_examples=1500, deadline=None)
@given(spec=st.one_of(keyed_filters(), filters), docs=st.lists(string_documents, max_size=5))
def test_a_filter_matches_only_documents_holding_its_index_key(
    spec: dict[str, Any], docs: list[Any]
) -> None:
    """The matcher skips a filter when the document lacks the filter's index key: sound only
    if no document without that key can match."""
    key = index_key(spec)
    if key is None:
        return
    path, value = key
    for doc in docs:
        if reference(spec, doc):
            assert value in strings_at(doc, path), (spec, doc)


@settings(max_examples=800, deadline=None)
@given(spec=st.one_of(keyed_filters(), filters), docs=st.lists(string_documents, max_size=5))
def test_a_filter_split_on_its_key_matches_as_the_whole(
    spec: dict[str, Any], docs: list[Any]
) -> None:
    """The matcher runs only the rest of a filed filter on the documents found under its
    key: that must match exactly what the whole filter matches."""
    key, rest = split_on_key(spec)
    if key is None:
        assert rest is spec
        return
    path, value = key
    whole, remainder = compile_filter(spec), compile_filter(rest)
    for doc in docs:
        found = value in strings_at(doc, path)
        assert (found and remainder(doc)) is whole(doc) is reference(spec, doc), (spec, doc)


@pytest.mark.parametrize(
    ("spec", "rest"),
    [
        ({"dir": "/in"}, {}),
        ({"size": {"$gt": 1}, "dir": {"$eq": "/in"}}, {"size": {"$gt": 1}}),
        ({"$and": [{"hidden": False}, {"a.b": "x"}]}, {"$and": [{"hidden": False}]}),
        ({"$and": [{"a": "x"}], "b": 1}, {"b": 1}),
        ({"dir": "/in/*"}, {"dir": "/in/*"}),
    ],
)
def test_split_on_key_leaves_the_rest(spec: Any, rest: Any) -> None:
    assert split_on_key(spec)[1] == rest


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"dir": "/in"}, ("dir", "/in")),
        ({"size": {"$gt": 1}, "dir": {"$eq": "/in"}}, ("dir", "/in")),
        ({"$and": [{"hidden": False}, {"a.b": "x"}]}, ("a.b", "x")),
        ({"dir": "/in/*"}, None),
        ({"$or": [{"dir": "/in"}, {"dir": "/out"}]}, None),
        ({"$not": {"dir": "/in"}}, None),
        ({"dir": {"$ne": "/in"}}, None),
        ({"size": 3}, None),
        (None, None),
    ],
)
def test_index_keys(spec: Any, key: tuple[str, str] | None) -> None:
    assert index_key(spec) == key


def test_strings_at_reads_arrays_and_objects_in_arrays() -> None:
    assert strings_at(ITEM, "labels") == {"cat", "dog"}
    assert strings_at(ITEM, "boxes.label") == {"cat", "dog"}
    assert strings_at(ITEM, "size") == set()
    assert strings_at(ITEM, "nowhere.at.all") == set()
