"""Functions as Descartes Labs' documentation writes them; the replicas import this module by
name."""

from __future__ import annotations

import os
import time


def hello_world(arg):
    print(arg)
    return arg


def fails_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"first time for {marker}")
    return "ok"


def sleepy(seconds):
    time.sleep(seconds)
    return seconds


def add(a, b):
    return a + b
