"""BOT_CALLS_PER_DAY: past the day's budget, conversations go to humans with a message
instead of costing another bot call. Through the real pipeline."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, fault_env, idle, make_client, openai_env, post_webhook
from tests.support import ROOT, Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def test_past_the_daily_budget_conversations_go_to_humans(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
):
    stand.reset()
    env = base_env(
        redis_url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path),
        BOT_CALLS_PER_DAY="2",
        BUDGET_MESSAGE="Nossa equipe vai te responder em breve.",
        BATCH_WINDOW_SECONDS="0.3",
        BATCH_MAX_WAIT_SECONDS="1",
    )
    worker = Worker(env, "budget").start(rdb)
    try:
        web = make_client(env)
        for conversation in (201, 202):
            assert post_webhook(web, cw.message(f"pergunta {conversation}", conversation)).status_code == 202
            wait_for(lambda c=conversation: stand.replies(c), timeout=10)
        assert post_webhook(web, cw.message("e a terceira?", 203)).status_code == 202
        wait_for(lambda: stand.calls("toggle_status"), timeout=10)
        assert len(stand.bot_calls) == 2  # the third conversation cost no bot call
        assert stand.replies(203) == ["Nossa equipe vai te responder em breve."]
        assert rdb.get(keys.handoff("default", 203)) == "bot"
        day = time.strftime("%Y-%m-%d", time.gmtime(rdb.time()[0]))
        assert (
            rdb.get(keys.bot_calls_day("default", day)) == "2"
            and rdb.ttl(keys.bot_calls_day("default", day)) > 0
        )
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_bot_calls_today{company="default"} 2.0' in metrics
        assert 'gateway_bot_calls_per_day{company="default"} 2.0' in metrics
        assert 'gateway_budget_handoffs_total{company="default"} 1.0' in metrics
    finally:
        worker.stop()


def test_the_loop_guard_hands_a_conversation_answered_too_often_to_humans_with_a_note(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
):
    """LOOP_MAX_REPLIES: another bot's auto-replies (or a flood) would have the bot answer
    forever. Past three answers in the window, the fourth batch costs no bot call: the
    conversation goes to humans, with a private note saying why; another conversation is
    answered as before."""
    stand.reset()
    env = fault_env(redis_url, stand, tmp_path, LOOP_MAX_REPLIES="3", LOOP_WINDOW_MINUTES="10")
    worker = Worker(env, "loop").start(rdb)
    try:
        web = make_client(env)
        for n in range(1, 4):  # an auto-responder answering every reply
            assert post_webhook(web, cw.message(f"auto-reply {n}", 301)).status_code == 202
            wait_for(lambda n=n: len(stand.replies(301)) == n, timeout=10)
        assert post_webhook(web, cw.message("auto-reply 4", 301)).status_code == 202
        wait_for(lambda: stand.notes(301), timeout=10)
        (note,) = stand.notes(301)
        assert "Loop guard" in note and "3 times in 10 minutes" in note
        wait_for(lambda: stand.calls("toggle_status"), timeout=10)
        assert len(stand.bot_calls) == 3 and len(stand.replies(301)) == 3  # no fourth call, no reply
        assert rdb.get(keys.handoff("default", 301)) == "bot"
        assert post_webhook(web, cw.message("a person", 302)).status_code == 202
        wait_for(lambda: stand.replies(302), timeout=10)  # other conversations: unaffected
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_loop_handoffs_total{company="default"} 1.0' in metrics
    finally:
        worker.stop()


def test_a_contact_who_opts_out_is_answered_once_then_never_in_any_conversation_until_opting_in(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
):
    """OPT_OUT_KEYWORDS: "SAIR" gets OPT_OUT_MESSAGE once and no bot call; the contact's
    later messages, in that conversation or another, get nothing (the humans have them in
    Chatwoot); "voltar" brings the bot back, that message answered. The status page, the
    metrics and the command line see it."""
    stand.reset()
    env = fault_env(
        redis_url,
        stand,
        tmp_path,
        OPT_OUT_KEYWORDS="stop,sair",
        OPT_OUT_MESSAGE="Você não receberá mais mensagens automáticas.",
        OPT_IN_KEYWORDS="voltar",
        STATUS_BASIC_AUTH="ops:a-long-status-password",
    )
    worker = Worker(env, "optout").start(rdb)
    try:
        web = make_client(env)
        assert post_webhook(web, cw.message("oi", 401)).status_code == 202
        wait_for(lambda: stand.replies(401) == ["oi"], timeout=10)
        assert post_webhook(web, cw.message(" SAIR ", 401)).status_code == 202
        wait_for(lambda: len(stand.replies(401)) == 2, timeout=10)
        assert stand.replies(401)[1] == "Você não receberá mais mensagens automáticas."
        assert len(stand.bot_calls) == 1
        for conversation, text in ((401, "oi de novo"), (402, "outra conversa"), (401, "sair")):
            assert post_webhook(web, cw.message(text, conversation)).status_code == 202
        wait_for(lambda: all(idle(rdb, c) for c in (401, 402)), timeout=10)
        assert len(stand.bot_calls) == 1 and len(stand.replies(401)) == 2 and stand.replies(402) == []
        assert rdb.smembers(keys.opted_out("default")) == {"301"}
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_contacts_opted_out{company="default"} 1.0' in metrics
        assert 'gateway_opt_outs_total{company="default"} 1.0' in metrics
        page = web.get("/status", headers={"Authorization": basic("ops", "a-long-status-password")})
        assert "contacts opted out of the bot (OPT_OUT_KEYWORDS)</th><td>1<" in page.get_data(as_text=True)
        listed = subprocess.run(
            [sys.executable, "-m", "app", "opted-out"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert listed.returncode == 0 and listed.stdout.split() == ["301"], listed.stderr

        assert post_webhook(web, cw.message("voltar", 402)).status_code == 202
        wait_for(lambda: stand.replies(402) == ["voltar"], timeout=10)  # answered again
        assert rdb.scard(keys.opted_out("default")) == 0
    finally:
        worker.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_spend_in_money_is_counted_from_each_answers_usage_and_its_ceiling_hands_off(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
) -> None:
    """BOT_PRICES turns each openai answer's usage into money: /metrics and the status page
    show it, and BOT_SPEND_PER_DAY hands conversations to humans once today's spend has
    reached it (the call that crosses it completes)."""
    stand.reset()
    stand.usage = (1_000_000, 500_000)  # 0.15 + 0.30 = 0.45 a call at the prices below
    env = openai_env(
        redis_url,
        stand,
        tmp_path,
        BOT_PRICES="big-model=2.5/10, small-model=0.15/0.60",
        BOT_SPEND_PER_DAY="0.5",
        BUDGET_MESSAGE="Nossa equipe vai te responder em breve.",
        STATUS_BASIC_AUTH="ops:a-long-status-password",
    )
    worker = Worker(env, "spend").start(rdb)
    try:
        web = make_client(env)
        for conversation in (211, 212):  # 0.45 spent, then 0.90: under the ceiling when asked
            assert post_webhook(web, cw.message(f"pergunta {conversation}", conversation)).status_code == 202
            wait_for(lambda c=conversation: stand.replies(c), timeout=10)
        assert post_webhook(web, cw.message("e a terceira?", 213)).status_code == 202
        wait_for(lambda: stand.replies(213), timeout=10)
        assert stand.replies(213) == ["Nossa equipe vai te responder em breve."]
        assert len(stand.completions) == 2 and rdb.get(keys.handoff("default", 213)) == "bot"
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_bot_cost_total{company="default",model="small-model"} 0.9' in metrics
        assert 'gateway_bot_tokens_total{company="default",kind="input",model="small-model"} 2e+06' in metrics
        assert (
            'gateway_bot_tokens_total{company="default",kind="output",model="small-model"} 1e+06' in metrics
        )
        assert 'gateway_bot_spend_today{company="default"} 0.9' in metrics
        assert 'gateway_bot_spend_per_day{company="default"} 0.5' in metrics
        page = web.get("/status", headers={"Authorization": basic("ops", "a-long-status-password")})
        assert "(BOT_PRICES; BOT_SPEND_PER_DAY)</th><td>0.9000 of 0.5<" in page.get_data(as_text=True)
    finally:
        worker.stop()
