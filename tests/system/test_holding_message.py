"""BOT_HOLDING_MESSAGE: a bot as slow as an LLM leaves the contact waiting; past
BOT_HOLDING_AFTER_SECONDS they get one "one moment" message, never when the answer comes
first, and never twice for a batch — a worker killed after posting it does not make the
next run post it again. Through the real pipeline."""

from __future__ import annotations

import pytest
import redis

from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
HOLD = "Um momento, estou verificando…"


@pytest.fixture
def env(redis_url: str, stand: Stand, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    stand.reset()
    return fault_env(redis_url, stand, tmp_path, BOT_HOLDING_MESSAGE=HOLD, BOT_HOLDING_AFTER_SECONDS="0.5")


def test_a_slow_bot_call_gets_one_holding_message_and_a_fast_one_none(
    env: dict[str, str], rdb: redis.Redis, stand: Stand, workers: list[Worker]
) -> None:
    workers.append(Worker(env, "holding").start(rdb))
    web = make_client(env)
    stand.bot_delay = 1.5
    assert post_webhook(web, cw.message("qual o horário de domingo?", 601)).status_code == 202
    wait_for(lambda: len(stand.replies(601)) == 2, timeout=15)
    assert stand.replies(601) == [HOLD, "qual o horário de domingo?"]

    stand.bot_delay = 0.0
    assert post_webhook(web, cw.message("obrigado", 602)).status_code == 202
    wait_for(lambda: stand.replies(602), timeout=10)
    assert stand.replies(602) == ["obrigado"]  # the answer came first: no holding message


def test_a_run_resuming_the_batch_after_a_crash_does_not_post_the_holding_message_again(
    env: dict[str, str], rdb: redis.Redis, stand: Stand, workers: list[Worker]
) -> None:
    victim = Worker(env, "victim", housekeeping=True).start(rdb)
    workers.append(victim)
    web = make_client(env)
    stand.bot_delay = 3.0
    assert post_webhook(web, cw.message("posso pagar no pix?", 603)).status_code == 202
    wait_for(lambda: stand.replies(603) == [HOLD], timeout=15)
    victim.kill()  # mid bot call: its answer never stored
    workers.append(Worker(env, "heir", housekeeping=True).start(rdb))
    wait_for(lambda: len(stand.replies(603)) == 2, timeout=30)
    assert stand.replies(603) == [HOLD, "posso pagar no pix?"]
    assert len([c for c in stand.bot_calls if str(c["conversation_id"]) == "603"]) == 2  # asked again
