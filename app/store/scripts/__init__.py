"""Every multi-key state change of the gateway, as one Lua script each.

Each area of the gateway has its module here, and in it each script is written
once, one after another: its header (KEYS and ARGV), its Lua — which binds every
KEYS and ARGV entry to a name on its first lines, so the body reads ``queue``, not
``KEYS[1]`` — its result type, and the typed method that calls it, which builds its
KEYS (``app.store.keys``) and ARGV and decodes its reply into a named value. No
script builds a key.

``Scripts(redis)`` registers them all on one client; each area registers its own:

- ``scripts.intake``: ENQUEUE, UPDATE_QUEUED (what a webhook changes);
- ``scripts.ownership``: OBSERVE, AGENT_REPLY, APPLY_EVENT, EXPIRE_SESSIONS (who
  holds a conversation; the table of ``app.conversation.ownership`` rendered into Lua);
- ``scripts.lease``: START_RUN, RENEW, HAND_OVER (which run may drain);
- ``scripts.schedule``: CLAIM_DUE, DEFER, RELEASE_IF_EMPTY, RESCUE (when it drains);
- ``scripts.batch``: CLAIM_BATCH, RELEASE_ATTEMPT, NOTE_ERROR, MARK_HANDOFF, COMPLETE;
- ``scripts.ledger``: STORE_ANSWER, MARK_PART, RECORD_SENT, STORE_TRANSCRIPT,
  REMEMBER_TURN (the reply ledger);
- ``scripts.housekeeping``: REPLAY_DEAD_LETTER, PURGE, SPEND_BOT_CALL.

``app.store.scripts.core`` is the typed layer they share (``Call``, ``RoundTrip``).
"""

from __future__ import annotations

import redis

from app.store.scripts import batch, housekeeping, intake, lease, ledger, ownership, schedule
from app.store.scripts.batch import BatchScripts, ClaimedBatch
from app.store.scripts.core import Call, RoundTrip, render
from app.store.scripts.housekeeping import HousekeepingScripts
from app.store.scripts.intake import Enqueued, EnqueueResult, IntakeScripts, Updated
from app.store.scripts.lease import LeaseScripts
from app.store.scripts.ledger import LedgerScripts
from app.store.scripts.ownership import OwnershipScripts, Sender
from app.store.scripts.schedule import Dispatch, DueClaim, Rescue, ScheduleScripts

__all__ = [
    "SOURCES",
    "Call",
    "ClaimedBatch",
    "Dispatch",
    "DueClaim",
    "EnqueueResult",
    "Enqueued",
    "Rescue",
    "RoundTrip",
    "Scripts",
    "Sender",
    "Updated",
    "render",
]

# Every script's Lua source by name, as written (``render`` makes it what Redis gets).
SOURCES: dict[str, str] = {
    name: value
    for area in (intake, ownership, lease, schedule, batch, ledger, housekeeping)
    for name, value in vars(area).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str) and "redis.call" in value
}


class Scripts:
    """The Lua scripts, registered on one Redis client, by area."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.intake = IntakeScripts(client)
        self.ownership = OwnershipScripts(client)
        self.lease = LeaseScripts(client)
        self.schedule = ScheduleScripts(client)
        self.batch = BatchScripts(client)
        self.ledger = LedgerScripts(client)
        self.housekeeping = HousekeepingScripts(client)
