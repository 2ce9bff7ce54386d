"""Fixtures of the daemon tests: a real daemon process per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import Daemon, start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon serving ``daemon_app:setup``, one per test module (the fuzzer's creates
    triggers and executions of every kind; no other module sees them), shared by that
    module's tests, which use their own executions; stopped with SIGTERM after."""
    running = start_daemon(tmp_path_factory.mktemp("daemon"))
    try:
        yield running
    finally:
        running.stop()
