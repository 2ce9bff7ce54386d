"""The engine's JSON: fast, and no stricter than the standard library."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from triggerfish._json import check, dumps, loads, parse
from triggerfish.errors import InvalidInputError


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "b": {"c": "é"}},
        (1, "two"),
        {"huge": 2**70},  # past orjson's 64 bits
        {"text": "lone \ud800 surrogate"},
        {1: "an int key"},
    ],
)
def test_what_json_accepts_round_trips(value: Any) -> None:
    assert loads(dumps(value)) == json.loads(json.dumps(value))


def test_not_a_number_is_read_back_from_the_fallback() -> None:
    text = dumps({"n": math.nan, "huge": 2**70})
    assert math.isnan(loads(text)["n"])


@pytest.mark.parametrize("value", [{"a": object()}, {"s": {1, 2}}, b"bytes"])
def test_what_json_refuses_raises_type_or_value_error(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps(value)


# -- the boundary: what comes from outside ----------------------------------------------------


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('{"a": ["\\ud800"]}', "body.a[0]", "surrogate"),
        ('{"\\udfff": 1}', "body (a key)", "surrogate"),
        ('{"a": NaN}', "body.a", "finite"),
        ('{"a": {"b": -Infinity}}', "body.a.b", "finite"),
        ('{"a": 1e400}', "body.a", "finite"),
        (nested(65), "body[0]", "deeper than 64"),
        (nested(100_000), "body", "deeper than 64"),
        ('{"a": ', "body", "malformed JSON: Expecting value"),
        ("1" * 5000, "body", "digits"),
    ],
)
def test_parse_refuses_naming_the_field(text: str, where: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse(text.encode())
    assert refused.value.where.startswith(where), refused.value
    assert words in str(refused.value)


def test_parse_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        parse(b'{"a": "\xff"}')


def test_parse_keeps_big_integers_exact_and_takes_64_levels() -> None:
    assert parse(b'{"n": 18446744073709551617, "m": -18446744073709551617}') == {
        "n": 2**64 + 1,
        "m": -(2**64 + 1),
    }
    assert parse(nested(64).encode()) == json.loads(nested(64))
    assert loads(dumps([2**64 + 1])) == [2**64 + 1]  # and what the engine stores too


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": ["\ud800"]}, "body.a[0]"),
        ({"a": math.nan}, "body.a"),
        ({"a": math.inf}, "body.a"),
        ({1: "x"}, "body"),
        ({"a": object()}, "body.a"),
        (json.loads(nested(65)), "body[0]"),
    ],
)
def test_check_refuses_python_values_naming_the_field(value: Any, where: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check(value)
    assert refused.value.where.startswith(where), refused.value


def test_check_takes_plain_json() -> None:
    check({"a": [1, 2.5, None, True, "é", (1, 2)], "n": 2**80})
    check(json.loads(nested(64)))
