"""Races of the drain loop, made deterministic: the real Drainer against the real
Redis, with a webhook landing exactly where a race would put it."""

from __future__ import annotations

import dataclasses
import time

import redis

from app.chatwoot.messages import StoredMessage
from app.drain.due import release_if_empty
from app.drain.run import RunContext
from app.intake.accept import accept
from app.store import keys
from app.store.client import redis_now
from tests.conftest import dry_run_drainer


def test_a_message_landing_between_the_empty_check_and_the_release_is_not_stranded(
    redis_url: str, rdb: redis.Redis
) -> None:
    """No lost wake-up (DESIGN.md invariant 3): a message that lands while the drainer
    goes to release is seen by the release, and the conversation stays scheduled."""
    drainer = dry_run_drainer(redis_url, rdb, BATCH_WINDOW_SECONDS="1", BATCH_MAX_WAIT_SECONDS="5")
    scripts, settings, company = drainer.scripts, drainer.settings, drainer.company
    first = StoredMessage(1, "42", 1, "first", received_at=time.time() - 5)
    rdb.rpush(keys.queue("default", "42"), first.to_json())
    landed: list[object] = []

    def webhook_lands_before_the_release(ctx: RunContext) -> bool:
        if not landed:  # the drainer has answered everything it saw and goes to release...
            assert not rdb.llen(keys.queue("default", "42"))
            second = StoredMessage(2, "42", 1, "second", received_at=time.time())
            landed.append(accept(rdb, scripts, settings, company, second, None))  # ...and B arrives
        return release_if_empty(ctx)

    outcome = dataclasses.replace(drainer, release=webhook_lands_before_the_release).run()
    accepted = landed[0]
    assert accepted.result.status == "queued" and accepted.result.holder.startswith("T1#")  # a live run
    assert outcome == "deferred"  # the release saw the message; its batch is due in a second
    assert [json_content(m) for m in rdb.lrange(keys.queue("default", "42"), 0, -1)] == ["second"]
    due_in = rdb.zscore(keys.due("default"), "42") - redis_now(rdb)
    assert 0.5 < due_in <= 1.0  # scheduled: the dispatcher hands it to a fresh task then
    assert not rdb.exists(keys.lease("default", "42"))
    assert [e for e in rdb.lrange(keys.outbox("default"), 0, -1) if '"first"' in e]


def json_content(raw: str) -> str:
    return StoredMessage.from_json(raw).content
