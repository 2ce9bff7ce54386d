"""What the boundary's checks cost: reading JSON from outside, checking a value built in Python,
and a replica making a result's JSON view, each beside the plain step it wraps.

Measures, per call, in microseconds (the best of five rounds of ``--n`` calls each):

1. a request body read with ``_json.parse`` (depth, unicode, finite numbers, exact big
   integers) beside ``orjson.loads`` alone: a call's body (``{"args": [...], "kwargs": {...}}``)
   and an event of about 1 KB with nested metadata;
2. ``_json.check`` of that event's body, as ``engine.emit`` does, beside the ``orjson.dumps``
   that was its check before;
3. a replica's ``result_view`` of typical results (None, a small dict, a list of 1,000 floats)
   beside ``json.dumps`` of the same.

Human-readable figures are printed; the last line of stdout is one JSON object with every
figure (``*_us``) and the ratios (``*_x``). Run it with ``python bench/validation.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import orjson

from triggerfish import _json
from triggerfish.engine.replica.views import result_view

CALL = {"args": [17, "image-42.png", {"width": 128, "height": 96}], "kwargs": {"quality": 0.8}}
EVENT = {
    "resource": "Item",
    "action": "Created",
    "body": {
        "id": "item-6731",
        "name": "cat.png",
        "dir": "/uploads/2026/12",
        "metadata": {
            "system": {"mimetype": "image/png", "size": 48213, "width": 640, "height": 480},
            "user": {"labels": ["cat", "sofa", "indoor"], "score": 0.93, "reviewed": False},
        },
        "annotations": [{"label": "cat", "box": [12, 40, 300, 410], "score": 0.91}] * 8,
        "createdAt": "2026-12-01T21:12:02Z",
    },
}
RESULTS: dict[str, Any] = {
    "none": None,
    "dict": {"thumbnail": "item-6731@128px", "width": 128, "ok": True},
    "floats_1000": [i / 7 for i in range(1000)],
}


def per_call_us(work: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            work()
        best = min(best, (time.perf_counter() - began) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="calls per round")
    args = parser.parse_args()
    n = args.n
    figures: dict[str, float] = {}

    for name, value in (("call_body", CALL), ("event_body", EVENT)):
        text = orjson.dumps(value)
        plain = per_call_us(lambda text=text: orjson.loads(text), n)
        checked = per_call_us(lambda text=text: _json.parse(text, "body", 66), n)
        figures[f"parse_{name}_us"] = round(checked, 2)
        figures[f"orjson_loads_{name}_us"] = round(plain, 2)
        figures[f"parse_{name}_x"] = round(checked / plain, 2)
        print(f"{name} ({len(text)} B): parse {checked:.2f} us, orjson.loads {plain:.2f} us")

    body = EVENT["body"]
    checked = per_call_us(lambda: _json.check(body, "body"), n)
    before = per_call_us(lambda: orjson.dumps(body), n)
    figures["check_event_body_us"] = round(checked, 2)
    figures["orjson_dumps_event_body_us"] = round(before, 2)
    print(f"event body: check {checked:.2f} us, orjson.dumps (the check before) {before:.2f} us")

    for name, value in RESULTS.items():
        view = per_call_us(lambda value=value: result_view(value), max(1, n // 10))
        dumped = per_call_us(lambda value=value: json.dumps(value), max(1, n // 10))
        figures[f"view_{name}_us"] = round(view, 2)
        figures[f"json_dumps_{name}_us"] = round(dumped, 2)
        print(f"result {name}: result_view {view:.2f} us, json.dumps {dumped:.2f} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
