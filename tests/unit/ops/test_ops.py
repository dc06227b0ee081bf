"""The operator CLI against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import redis

from app.chatwoot.messages import StoredMessage
from app.ops.queries import busiest, conversation_state, purge
from app.store import keys
from app.store.scripts import Scripts
from tests.conftest import base_env, companies_env
from tests.support import ROOT


def seed(client: redis.Redis, conv: str, count: int, age: float, in_flight: int = 0) -> None:
    for i in range(count):
        raw = StoredMessage(int(conv) * 100 + i, conv, 1, f"m{i}", time.time() - age).to_json()
        client.rpush(keys.processing("default", conv) if i < in_flight else keys.queue("default", conv), raw)
    client.sadd(keys.conversation_index("default"), conv)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def test_busiest_and_show(rdb: redis.Redis) -> None:
    seed(rdb, "1", 2, age=5)
    seed(rdb, "2", 6, age=60, in_flight=2)
    seed(rdb, "3", 1, age=1)
    rdb.set(keys.lease("default", "2"), "task-abc", px=15000)
    rdb.set(keys.handoff("default", "3"), "agent")
    states = busiest(rdb, "default")
    assert [s.conversation for s in states] == ["2", "1", "3"]
    top = states[0]
    assert (top.waiting, top.in_flight, top.lease_holder) == (4, 2, "task-abc")
    assert 14 <= top.lease_ttl_seconds <= 15 and 59 <= top.oldest_age_seconds <= 61
    assert conversation_state(rdb, "default", "3").handoff == "agent"


def test_purge_drops_waiting_and_in_flight(rdb: redis.Redis) -> None:
    seed(rdb, "4", 5, age=1, in_flight=2)
    assert purge(rdb, Scripts(rdb), "default", "4") == 5
    assert not rdb.exists(keys.queue("default", "4"), keys.processing("default", "4"))
    assert not rdb.sismember(keys.conversation_index("default"), "4")


def test_cli_commands(redis_url: str, rdb: redis.Redis) -> None:
    env = base_env(redis_url, "http://127.0.0.1:9", OPENAI_API_KEY="sk-secret-123")
    seed(rdb, "5", 3, age=2)
    lines = cli(env, "busiest").stdout.splitlines()
    assert json.loads(lines[0])["conversation"] == "5" and json.loads(lines[0])["waiting"] == 3
    assert json.loads(cli(env, "show", "5").stdout)["waiting"] == 3
    assert cli(env, "purge", "abc").returncode == 2
    refused = subprocess.run(  # no terminal to ask on, no --yes: nothing done
        [sys.executable, "-m", "app", "purge", "5"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "pass --yes" in refused.stderr, refused.stderr
    assert "drop 3 message(s) of conversation 5 of company 'default'?" in refused.stderr
    assert rdb.llen(keys.queue("default", "5")) == 3
    dropped = cli(env, "purge", "5", "--yes").stdout
    assert "dropped 3 message(s) of conversation 5 of company 'default'" in dropped
    shown = cli(env, "show-config").stdout
    assert (
        "cw-token" not in shown
        and "whsec-test-secret" not in shown
        and '"chatwoot_api_token": "***"' in shown
    )


def test_bad_configuration_stops_with_the_variable_named(redis_url: str) -> None:
    env = base_env(redis_url, "http://127.0.0.1:9", BATCH_WINDOW_SECONDS="soon")
    result = cli(env, "check-config")
    assert result.returncode == 2 and "BATCH_WINDOW_SECONDS" in result.stderr


def test_the_cli_finds_make_runs_embedded_redis_when_redis_url_is_unset(
    redis_url: str, rdb: redis.Redis, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    seed(rdb, "7", 3, age=5)
    (tmp_path / "redis").mkdir()  # what make run leaves: DATA_DIR/redis
    env = base_env(redis_url, "http://127.0.0.1:9")
    del env["REDIS_URL"]
    env.update(DATA_DIR=str(tmp_path), EMBEDDED_REDIS_PORT=redis_url.rsplit(":", 1)[1].split("/")[0])
    done = cli(env, "busiest")
    assert done.returncode == 0, done.stderr
    assert "embedded Redis" in done.stderr and json.loads(done.stdout.splitlines()[0])["conversation"] == "7"
    (tmp_path / "redis").rmdir()
    refused = cli(env, "busiest")  # no make run here: the missing variable is named
    assert refused.returncode == 2 and "REDIS_URL" in refused.stderr


def test_subcommands_check_their_arguments(rdb: redis.Redis, redis_url: str) -> None:
    env = base_env(redis_url, "http://127.0.0.1:9")
    assert cli(env, "show", "abc").returncode == 2
    assert cli(env, "busiest", "--company", "nope").returncode == 2
    assert "--limit" in cli(env, "dead-letters", "--help").stdout


def test_check_config_warns_about_plain_http_off_this_machine_and_an_ignored_token(redis_url: str) -> None:
    env = base_env(
        redis_url,
        "http://chatwoot.example.com",
        WEBHOOK_TOKEN="tok-1",
        BOT_URL="https://bot.example.com/answer",
    )
    result = cli(env, "check-config")
    assert result.returncode == 0, result.stderr
    assert "CHATWOOT_BASE_URL is plain http outside this machine" in result.stderr
    assert "BOT_URL" not in result.stderr  # https
    assert "WEBHOOK_TOKEN is ignored" in result.stderr
    quiet = cli(base_env(redis_url, "http://127.0.0.1:9", METRICS_TOKEN="m" * 32), "check-config")  # loopback
    assert quiet.returncode == 0 and "company" not in quiet.stderr and "METRICS_TOKEN" not in quiet.stderr
    public = cli(base_env(redis_url, "http://127.0.0.1:9"), "check-config")
    assert public.returncode == 0 and "warning: METRICS_TOKEN is unset: /metrics is public" in public.stderr


def test_show_config_masks_credentials_inside_urls(redis_url: str) -> None:
    env = base_env(
        redis_url, "https://admin:hunter2@chatwoot.example.com", BOT_URL="https://k:v@bot.example/x"
    )
    shown = cli(env, "show-config").stdout
    assert "hunter2" not in shown and ":v@" not in shown
    assert '"chatwoot_base_url": "https://***@chatwoot.example.com"' in shown


def test_with_several_companies_every_command_needs_company(
    redis_url: str, rdb: redis.Redis, tmp_path
) -> None:
    """A default would act on whichever company came first in COMPANIES_FILE."""
    companies = [
        {"company_id": "clinic", "webhook_token": "a"},
        {"company_id": "shop", "webhook_token": "b"},
    ]
    env = companies_env(redis_url, tmp_path, companies)
    for args in (["purge", "5", "--yes"], ["replay-dead-letters", "--yes"], ["busiest"], ["dead-letters"]):
        result = cli(env, *args)
        assert (
            result.returncode == 2 and "pass --company" in result.stderr and "clinic, shop" in result.stderr
        )
    assert cli(env, "busiest", "--company", "shop").returncode == 0
    unknown = cli(env, "busiest", "--company", "bakery")
    assert unknown.returncode == 2 and "unknown company 'bakery'" in unknown.stderr


def _dead_letter(client: redis.Redis, conv: str, text: str, ambiguous: bool) -> None:
    message = StoredMessage(int(conv) * 100 + len(text), conv, 1, text, time.time()).to_json()
    letter = {"conversation_id": conv, "stage": "chatwoot", "messages": [message], "ambiguous": ambiguous}
    client.rpush(keys.dead_letters("default"), json.dumps(letter))


def test_replay_leaves_ambiguous_dead_letters_unless_asked(redis_url: str, rdb: redis.Redis) -> None:
    """An ambiguous dead letter's reply may have reached the contact: replaying it may
    answer twice, so it stays in the list unless --include-ambiguous."""
    env = base_env(redis_url, "http://127.0.0.1:9")
    _dead_letter(rdb, "61", "first", ambiguous=False)
    _dead_letter(rdb, "62", "maybe answered", ambiguous=True)
    _dead_letter(rdb, "61", "second", ambiguous=False)
    done = cli(env, "replay-dead-letters", "--yes")
    assert done.returncode == 0, done.stderr
    assert "re-queued 2 message(s) of 2 dead letter(s)" in done.stdout and "1 ambiguous left" in done.stdout
    queued = [json.loads(m)["content"] for m in rdb.lrange(keys.queue("default", "61"), 0, -1)]
    assert queued == ["first", "second"]  # in order
    assert rdb.llen(keys.dead_letters("default")) == 1 and not rdb.exists(keys.queue("default", "62"))
    everything = cli(env, "replay-dead-letters", "--yes", "--include-ambiguous")
    assert "re-queued 1 message(s) of 1 dead letter(s)" in everything.stdout
    assert rdb.llen(keys.dead_letters("default")) == 0 and rdb.llen(keys.queue("default", "62")) == 1


def test_conversations_waiting_for_a_free_slot_are_counted_with_the_longest_wait(
    rdb: redis.Redis, redis_url: str
) -> None:
    """Due entries no drain has taken a second after their time wait for a free worker slot:
    the gauges count them and say how long the earliest has waited; /metrics reports both."""
    from app.ops.queries import refresh_gauges
    from app.store.client import redis_now
    from tests.conftest import make_client

    now = redis_now(rdb)
    rdb.zadd(keys.due("default"), {"1": now - 12, "2": now - 3, "3": now - 0.2, "4": now + 30})
    refresh_gauges(rdb, ["default"])
    gauges = rdb.hgetall(keys.gauges("default"))
    assert gauges["waiting_for_slot"] == "2"  # 3 is due, but within the dispatcher's second; 4 is not due
    assert 11.5 < float(gauges["slot_wait_seconds"]) < 13
    text = make_client(base_env(redis_url, "http://127.0.0.1:9")).get("/metrics").get_data(as_text=True)
    assert 'gateway_conversations_waiting_for_a_slot{company="default"} 2.0' in text
    assert 'gateway_slot_wait_seconds{company="default"} 12' in text


def test_outbox_prints_the_dry_run_replies_newest_last(redis_url: str, rdb: redis.Redis) -> None:
    """The README's first check: what the gateway would have posted, without Chatwoot."""
    env = base_env(redis_url, "", BOT_BACKEND="echo")
    for unset in ("CHATWOOT_BASE_URL", "BOT_URL"):
        env.pop(unset)
    empty = cli(env, "outbox")
    assert empty.returncode == 0 and empty.stdout == "" and "is empty" in empty.stderr
    for n in range(3):
        rdb.rpush(
            keys.outbox("default"),
            json.dumps({"kind": "message", "conversation_id": "7", "content": f"r{n}"}),
        )
    shown = cli(env, "outbox", "--limit", "2")
    assert shown.returncode == 0
    assert [json.loads(line)["content"] for line in shown.stdout.splitlines()] == ["r1", "r2"]
