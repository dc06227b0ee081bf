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
from app.store.scripts import Rescue, Scripts

__all__ = ["sweep"]

log = logging.getLogger(__name__)


def _sweep_conversation(
    client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings, company: str, conv: str
) -> bool:
    ttl_ms = int(settings.lease_ttl_seconds * 1000)
    lease = keys.lease(company, conv)
    rescue = scripts.schedule.rescue(company, conv).run()
    if rescue is Rescue.RESCHEDULED:
        client.hincrby(keys.stats(company), Stat.SWEEPER_RESCUES, 1)
        log.warning("sweeper rescued company=%s conversation=%s: scheduled now", company, conv)
        return True
    if rescue is Rescue.BUSY and client.pttl(lease) < ttl_ms // 2:
        holder = client.get(lease)
        if holder:
            return take_over_if_finished(client, scripts, celery, company, conv, holder, ttl_ms) is not None
    return False


def sweep(client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings) -> int:
    """Reschedule every stranded conversation; return how many."""
    rescued = 0
    for company in settings.companies:
        for conv in client.sscan_iter(keys.conversation_index(company), count=500):
            if _sweep_conversation(client, scripts, celery, settings, company, conv):
                rescued += 1
    return rescued
