"""BOT_MODE=draft: the bot's answer is a private note for the agents and the contact gets
nothing — no reply, no "typing", no holding message — with batching and the ledger
unchanged; the bot drafts whoever holds the conversation (an agent answering the contact
is what draft mode is for), a pause label still pauses it; per inbox. Through the real
pipeline."""

from __future__ import annotations

import pytest
import redis

from tests import chatwoot_payloads as cw
from tests.conftest import SECRET, chatwoot_company, companies_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def test_drafts_are_private_notes_whoever_holds_the_conversation_and_per_inbox(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    stand.bot_delay = 1.2  # long enough for "typing" and the holding message, were they sent
    company = chatwoot_company(
        "default",
        stand,
        chatwoot_webhook_secret=SECRET,
        bot_holding_message="Um momento…",
        bot_holding_after_seconds=0.5,
        pause_labels="pausar",
        inboxes={"9": {"bot_mode": "draft"}},
    )
    env = companies_env(redis_url, tmp_path, [company])
    workers.append(Worker(env, "drafts").start(rdb))
    web = make_client(env)

    # Inbox 9 drafts: two fragments, one note for the agents, nothing for the contact.
    for text in ("oi", "quero remarcar"):
        assert post_webhook(web, cw.message(text, 1001, inbox_id=9)).status_code == 202
    wait_for(lambda: stand.notes(1001), timeout=15)
    assert stand.notes(1001) == ["oi quero remarcar"] and stand.replies(1001) == []
    assert not [c for c in stand.calls("toggle_typing_status") if "/conversations/1001/" in c["path"]]

    # An agent answers the contact (a takeover in answer mode); the bot keeps drafting.
    assert post_webhook(web, cw.agent_reply("Claro! Para quando?", 1001)).status_code == 200
    assert post_webhook(web, cw.message("sexta de manhã", 1001, inbox_id=9)).status_code == 202
    wait_for(lambda: len(stand.notes(1001)) == 2, timeout=15)
    assert stand.notes(1001)[1] == "sexta de manhã" and stand.replies(1001) == []

    # A pause label still pauses it.
    paused = cw.message("mais uma coisa", 1001, inbox_id=9, labels=["pausar"])
    assert post_webhook(web, paused).status_code == 200

    # Inbox 4 answers the contact, with its holding message, as before.
    assert post_webhook(web, cw.message("oi", 1002)).status_code == 202
    wait_for(lambda: len(stand.replies(1002)) == 2, timeout=15)
    assert stand.replies(1002) == ["Um momento…", "oi"] and stand.notes(1002) == []
    assert len(stand.notes(1001)) == 2  # nothing drafted while paused
