"""The Celery app: the broker and result backend are the redis-server run.py started."""

from __future__ import annotations

import os

import work
from celery import Celery

url = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("peers", broker=url, backend=url)
app.conf.update(worker_hijack_root_logger=False, result_expires=3600)

noop = app.task(name="noop")(work.noop)
spin = app.task(name="spin")(work.spin)
