"""The engine's JSON: fast, and no stricter than the standard library."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from triggerfish._json import dumps, loads


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
