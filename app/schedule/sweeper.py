"""The periodic sweeper: no conversation with work is left without a drainer.

Runs every SWEEP_INTERVAL_SECONDS (Celery beat inside the worker). For every
conversation in the index that has messages queued or in flight but neither a
live lease nor a due entry (its holder died, a publish was lost), it writes a
due entry for now (RESCUE script): the dispatcher hands it to a drain task. It
also takes over a lease whose holder has finished (``take_over_if_finished``).
Running it twice at once (two workers with beat) is harmless: every step is a
Lua check-and-set.
"""

from __future__ import annotations

import logging

import redis
from celery import Celery

from app.metrics import Stat
from app.schedule.lease import take_over_if_finished
from app.settings import Settings
from app.store import keys
from app.store.scripts import Rescue, RoundTrip, Scripts

__all__ = ["sweep"]

log = logging.getLogger(__name__)


SWEEP_CHUNK = 500  # conversations looked at in one round trip


def _sweep_chunk(
    client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings, company: str, chunk: list[str]
) -> int:
    """RESCUE each conversation of ``chunk``, its lease's holder and time left read in
    the same round trip (a backlog of thousands of conversations costs a few round trips
    a sweep, not three each); a finished holder is taken over. How many were rescued."""
    ttl_ms = int(settings.lease_ttl_seconds * 1000)
    trip = RoundTrip(client)
    for conv in chunk:
        trip.add(scripts.schedule.rescue(company, conv))
        trip.pipe.pttl(keys.lease(company, conv))
        trip.pipe.get(keys.lease(company, conv))
    replies = trip.execute()
    rescheduled = taken_over = 0
    for index, conv in enumerate(chunk):
        rescue, lease_ms, holder = replies[3 * index : 3 * index + 3]
        if rescue is Rescue.RESCHEDULED:
            rescheduled += 1
            log.warning("sweeper rescued company=%s conversation=%s: scheduled now", company, conv)
        elif rescue is Rescue.BUSY and holder and lease_ms < ttl_ms // 2:
            if take_over_if_finished(client, scripts, celery, company, conv, holder, ttl_ms) is not None:
                taken_over += 1
    if rescheduled:
        client.hincrby(keys.stats(company), Stat.SWEEPER_RESCUES, rescheduled)
    return rescheduled + taken_over


def sweep(client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings) -> int:
    """Reschedule every stranded conversation; return how many."""
    rescued = 0
    for company in settings.companies:
        chunk: list[str] = []
        for conv in client.sscan_iter(keys.conversation_index(company), count=SWEEP_CHUNK):
            chunk.append(conv)
            if len(chunk) == SWEEP_CHUNK:
                rescued += _sweep_chunk(client, scripts, celery, settings, company, chunk)
                chunk = []
        if chunk:
            rescued += _sweep_chunk(client, scripts, celery, settings, company, chunk)
    return rescued
