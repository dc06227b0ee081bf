"""The dispatcher: hands due conversations to drain tasks.

The enqueue script schedules each conversation at its batch's due time in
``<company>:webhook_due`` (Redis's clock). A dispatcher thread runs in every
worker process: it looks at the earliest entries, claims the due ones one
script each (``CLAIM_DUE``: the entry removed and the lease taken for a fresh
task in one step, so two dispatchers — two containers in a deploy overlap —
never dispatch a conversation twice) and publishes one drain task per claim,
with no countdown. It sleeps until the earliest due time, at most
``POLL_SECONDS``, so a newly written earlier entry waits no longer than that.

Nothing waits in worker memory: an open batching window is one sorted-set
entry, and a window that slides is the same entry rescored. A drain task that
finishes early claims further due conversations itself (``claim``), which
saves the round trip through the broker when the worker is busy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from celery import Celery

from app import keys
from app.lease import new_task_id, schedule_drain, take_over_if_finished
from app.scripts import Batch, Scripts
from app.settings import Settings

__all__ = ["POLL_SECONDS", "Claim", "Dispatcher"]

log = logging.getLogger(__name__)
POLL_SECONDS = 0.01
LOOK_AHEAD = 200  # entries read per company per look


@dataclass(frozen=True)
class Claim:
    company: str
    conversation: str
    task_id: str


class Dispatcher:
    def __init__(self, client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings) -> None:
        self._client, self._scripts, self._celery, self._settings = client, scripts, celery, settings
        self._thread: threading.Thread | None = None

    def _look(self) -> tuple[float, list[tuple[str, str, float]]]:
        """(now, [(company, conversation, due)]) of the earliest entries, one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.time()
        companies = list(self._settings.companies)
        for company in companies:
            pipe.zrange(keys.due(company), 0, LOOK_AHEAD - 1, withscores=True)
        (seconds, micros), *entries = pipe.execute()
        found = [
            (c, conv, float(due)) for c, rows in zip(companies, entries, strict=True) for conv, due in rows
        ]
        return seconds + micros / 1e6, found

    def claim(self, limit: int = LOOK_AHEAD) -> tuple[list[Claim], float | None]:
        """Claim up to ``limit`` due conversations (their leases name the returned task
        ids); and the seconds until the next entry is due (None when none is waiting)."""
        now, entries = self._look()
        due = [e for e in entries if e[2] <= now][:limit]
        later = [e[2] - now for e in entries if e[2] > now]
        if not due:
            return [], min(later, default=None)
        ttl_ms = int(self._settings.lease_ttl_seconds * 1000)
        batch = Batch(self._client)
        fresh = [new_task_id() for _ in due]
        for (company, conv, _), task_id in zip(due, fresh, strict=True):
            batch.script(
                self._scripts.claim_due,
                [keys.due(company), keys.active_task(company, conv)],
                [conv, task_id, ttl_ms],
            )
        claims = []
        for (company, conv, _), (code, holder, pttl) in zip(due, batch.execute(), strict=True):
            if int(code) == 1:
                claims.append(Claim(company, conv, holder))
            elif int(code) == 2 and holder and int(pttl) < ttl_ms // 2:
                # The holder is more than half a lease late: only then pay for a result lookup.
                take_over_if_finished(
                    self._client, self._scripts, self._celery, company, conv, holder, ttl_ms
                )
        return claims, 0.0 if len(due) == limit else min(later, default=None)

    def dispatch(self) -> float | None:
        """Claim what is due and publish a drain task for each; the seconds until the next."""
        claims, wait = self.claim()
        for claim in claims:
            try:
                schedule_drain(self._celery, claim.company, claim.conversation, claim.task_id, 0)
            except Exception:
                # The lease names a task that does not exist: it expires, the sweeper reschedules.
                log.exception(
                    "drain task not published company=%s conversation=%s", claim.company, claim.conversation
                )
        return wait

    def start(self) -> None:
        """The dispatcher thread of this worker process."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True, name="dispatcher")
            self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                wait = self.dispatch()
                pause = POLL_SECONDS if wait is None else min(POLL_SECONDS, max(0.0, wait))
            except redis.RedisError as exc:
                log.warning("dispatcher cannot reach Redis error=%s", type(exc).__name__)
                pause = 1.0
            except Exception:  # the thread must outlive any one failure
                log.exception("dispatch pass failed")
                pause = 1.0
            time.sleep(pause)
