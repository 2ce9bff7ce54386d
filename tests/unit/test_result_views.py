"""A result's JSON view, as a replica makes it: whole when it fits, cut when too long, a
description when there is no JSON form, and always in time bounded by the view's size."""

from __future__ import annotations

import json
import math
import time
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggerfish.engine.replica.views import (
    JSON,
    REPR,
    TRUNCATED,
    VIEW_LIMIT,
    result_view,
)


class Model:
    pass


@pytest.mark.parametrize(
    "value",
    [None, 1, "é", {"a": [1, 2.5, None, True]}, (1, "two"), 2**64 + 1, -(2**200), [[[]]]],
)
def test_json_results_are_shown_whole_and_exact(value: Any) -> None:
    kind, text = result_view(value)
    assert kind == JSON
    assert json.loads(text) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({1, 2}, "{1, 2}"),
        (date(2026, 12, 1), "datetime.date(2026, 12, 1)"),
        (Model(), "a tests.unit.test_result_views.Model object (ask with"),
        ({"a": math.nan}, "not a finite number"),
        ({1: "a"}, "a key of type int"),
        ({"s": "lone \ud800"}, "not valid unicode"),
    ],
)
def test_results_without_a_json_form_are_described(value: Any, words: str) -> None:
    kind, text = result_view(value)
    assert kind == REPR
    assert words in text


def test_a_result_deeper_than_64_levels_or_containing_itself_is_described() -> None:
    deep: list[Any] = []
    for _ in range(70):
        deep = [deep]
    assert result_view(deep) == (REPR, result_view(deep)[1])
    assert "deeper than 64" in result_view(deep)[1]
    looped: list[Any] = [1]
    looped.append(looped)
    kind, text = result_view(looped)
    assert kind == REPR and "contains itself" in text


def test_shared_sub_lists_are_cut_at_the_limit_in_little_time() -> None:
    value: list[Any] = [0]
    for _ in range(40):  # 2**40 leaves once unfolded: no view could walk them all
        value = [value, value]
    began = time.perf_counter()
    kind, text = result_view(value)
    took = time.perf_counter() - began
    assert kind == TRUNCATED
    assert len(text) == VIEW_LIMIT
    assert text.startswith("[[[[")
    assert took < 2.0, took


def test_a_long_string_is_cut_without_being_encoded_whole() -> None:
    kind, text = result_view("x" * (50 * VIEW_LIMIT))
    assert kind == TRUNCATED
    assert len(text) == VIEW_LIMIT and text.startswith('"xxx')


def test_a_view_limit_can_be_raised_for_a_whole_answer() -> None:
    value = ["y" * 1000] * 2000  # about 2 MB of JSON
    assert result_view(value)[0] == TRUNCATED
    kind, text = result_view(value, limit=4 * VIEW_LIMIT)
    assert kind == JSON and json.loads(text) == value


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans()))
def test_a_number_is_viewed_as_json_writes_it(number: float) -> None:
    """Numbers and booleans take a short way to their text: the same text as JSON's."""
    assert result_view(number) == ("json", json.dumps(number))


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_hold_is_described(number: float) -> None:
    assert result_view(number) == ("repr", repr(number))  # as before its short way
