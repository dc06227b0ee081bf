"""Accepting a message: one atomic Redis step, nothing else.

``accept`` runs the ENQUEUE script: de-duplicate, bound the queue, push the
message (with Redis's clock as its arrival time) and schedule the conversation
at its batch's due time in ``<company>:webhook_due``. The webhook publishes no
Celery task: a dispatcher in the workers (``app.schedule.dispatcher``) claims due
conversations. So every webhook costs exactly one EVALSHA.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from app.chatwoot.payload import StoredMessage
from app.settings import CompanyConfig, Settings
from app.store.scripts import EnqueueResult, Scripts

__all__ = ["Accepted", "accept"]


@dataclass(frozen=True)
class Accepted:
    result: EnqueueResult

    @property
    def new_batch(self) -> bool:
        return self.result.length == 1


def accept(
    client: redis.Redis,
    scripts: Scripts,
    settings: Settings,
    company: CompanyConfig,
    message: StoredMessage,
    delivery_id: str | None,
    ordered: bool = False,
) -> Accepted:
    """Make the message durable in its conversation's queue and schedule the conversation.
    ``ordered``: place it by its Chatwoot id (a message moved in from the local spool)."""
    command = company.asks_for_a_human(message)  # due at once: a command does not wait for the window
    return Accepted(
        scripts.intake.enqueue(settings, company, message, delivery_id, ordered, due_now=command).run()
    )
