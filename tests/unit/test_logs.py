import json
import logging
import time

import pytest

from app.logs import JsonFormatter, Sampled, mask_secrets
from app.store import keys
from tests.conftest import base_env
from tests.support import Worker


def test_json_lines_carry_the_fields_of_the_message() -> None:
    record = logging.LogRecord(
        "app.drain",
        logging.INFO,
        __file__,
        1,
        "batch answered company=%s conversation=%s task=%s",
        ("acme", "42", "t-1"),
        None,
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO" and line["logger"] == "app.drain"
    assert (line["company"], line["conversation"], line["task"]) == ("acme", "42", "t-1")
    assert line["message"] == "batch answered company=acme conversation=42 task=t-1"


def test_sampled_writes_one_line_per_kind_per_period_and_says_what_it_skipped(caplog) -> None:
    now = [100.0]
    sampled = Sampled(logging.getLogger("sampled-test"), every=60, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="sampled-test"):
        assert sampled.log(logging.INFO, "a", "refused %s", "x") is True
        assert [sampled.log(logging.INFO, "a", "refused %s", "x") for _ in range(3)] == [False] * 3
        assert sampled.log(logging.INFO, "b", "other") is True  # kinds are counted apart
        now[0] += 61
        assert sampled.log(logging.INFO, "a", "refused %s", "y") is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused x", "other", "refused y (3 more like it in the last 60 s not logged)"]


def test_mask_secrets_hides_url_credentials_and_token_queries() -> None:
    text = (
        "POST https://bot:s3cr3t@bot.example/answer?token=abc&x=1 failed; see http://h/p?api_access_token=zz"
    )
    masked = mask_secrets(text)
    assert "s3cr3t" not in masked and "abc" not in masked and "zz" not in masked
    assert "https://***@bot.example/answer?token=REDACTED&x=1" in masked


@pytest.mark.parametrize(
    "url",
    [
        "http://:sk-live-abcdef@bot.example.com/hook",  # an empty user (redis://:password@ too)
        "redis://:sk-live-abcdef@127.0.0.1:6379/0",
        "https://sk-live-abcdef@bot.example.com/hook",  # a token as the user
        "https://api.example.com/v1?api_key=sk-live-abcdef",
        "https://api.example.com/v1?x=1&apikey=sk-live-abcdef",
        "https://h/p?secret=sk-live-abcdef",
        "https://h/p?password=sk-live-abcdef#frag",
        "https://s3.example/b/o?X-Amz-Signature=sk-live-abcdef&X-Amz-Credential=sk-live-abcdef",
        "https://h/p?sig=sk-live-abcdef",
        "https://h/p?client_secret=sk-live-abcdef",
    ],
)
def test_mask_secrets_hides_every_form_of_credential_in_a_url(url: str) -> None:
    """Review 2026-12-03, finding 11: ``http://:KEY@host`` and ``?api_key=`` went through."""
    masked = mask_secrets(f"BOT_URL is plain http ({url}): x")
    assert "sk-live-abcdef" not in masked and masked.endswith("): x")


def test_mask_secrets_leaves_ordinary_urls_alone() -> None:
    text = "https://chatwoot.example.com/app/accounts/1/conversations/42?page=2&monkey=3 and a@b.c"
    assert mask_secrets(text) == text


def test_show_config_and_check_config_print_no_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The effective configuration and start.sh's boot-time warning go to the platform log."""
    import os
    import subprocess
    import sys

    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": "redis://:redis-pw-abcdef@127.0.0.1:6379/0",
        "BOT_BACKEND": "http",
        "BOT_URL": "http://:sk-live-abcdef@bot.example.com/hook",
        "OPENAI_BASE_URL": "https://api.example.com/v1?api_key=sk-live-zzz",
    }
    for command in ("show-config", "check-config"):
        done = subprocess.run(
            [sys.executable, "-m", "app", command], env=env, capture_output=True, text=True, timeout=60
        )
        printed = done.stdout + done.stderr
        assert "bot.example.com" in printed, printed
        for secret in ("sk-live-abcdef", "sk-live-zzz", "redis-pw-abcdef"):
            assert secret not in printed, (command, printed)


@pytest.mark.slow
def test_an_idle_worker_writes_no_routine_lines_about_its_housekeeping(redis_url: str, rdb, tmp_path) -> None:
    """The sweep every 0.5 s, the gauges every second: as Celery beat tasks that was ~40 INFO
    lines in 6 idle seconds ("Sending due task", "received", "succeeded"). On the worker's
    own threads (app.schedule.housekeeping) they write nothing while there is nothing to say."""
    env = base_env(
        redis_url,
        "http://127.0.0.1:9",
        TEST_LOG_DIR=str(tmp_path),
        SWEEP_INTERVAL_SECONDS="0.5",
        GAUGES_INTERVAL_SECONDS="1",
    )
    worker = Worker(env, "quiet", housekeeping=True).start(rdb)
    try:
        time.sleep(6)
    finally:
        worker.stop()
    lines = worker.log().splitlines()
    routine = [
        line for line in lines if " INFO " in line and ("Sending due task" in line or "received" in line)
    ]
    assert routine == [], routine[:5]
    assert rdb.exists(keys.gauges("default"))  # the housekeeping did run
