"""The worker's housekeeping: the sweeper, the gauges and session expiry, each on a
thread of its own in the main worker process, beside the dispatcher.

They were Celery beat tasks, run by the pool like the drains: with a threads pool
whose every slot waits on a slow bot (up to ``BOT_TIMEOUT_SECONDS``), the sweeper
that recovers a dead worker's conversations waited as long, and the gauges went
stale exactly when the queue grew (invariant 13). A thread never waits on the pool,
and no beat process runs beside the worker (about 60 MB of RSS).

Every worker started with ``--housekeeping`` (the default) runs them. Two workers
running them at once (two containers, a deploy overlap) is harmless: the sweeper's
every step is a Lua check-and-set, the gauges are a sum, and idle sessions are taken
out of their set by one script, once each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from app.store.client import trouble

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


@dataclass
class Periodic:
    """``work`` every ``interval`` seconds, on a thread of its own; a failure is logged
    and the next round goes on."""

    name: str
    interval: float
    work: Callable[[], object]
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.work()
            except redis.RedisError as exc:
                log.warning("%s: %s", self.name, trouble(exc))
            except Exception:  # the thread must outlive any one failure
                log.exception("%s failed", self.name)
