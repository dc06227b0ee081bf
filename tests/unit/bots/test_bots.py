"""The bot backends against a local OpenAI-compatible server and real Redis."""

from __future__ import annotations

import re

import pytest

from app.batching.rules import Segment
from app.bots import EchoBot, OpenAIBot, PythonBot, bot_request, load_handler, parse_bot_answer
from app.chatwoot.messages import Attachment, StoredMessage
from app.chatwoot.replies import Rich
from app.drain.ledger import StoredAnswer
from app.errors import BotError
from app.settings import CompanyConfig, ConfigError
from app.store import keys
from tests.support import Stand


def segment(*texts: str, image: bool = False) -> Segment:
    attachments = (Attachment("image", "https://cw.example/photo.jpg", None),) if image else ()
    messages = tuple(
        StoredMessage(i + 1, "42", 1, t, 0.0, inbox_id=4, attachments=attachments if i == 0 else ())
        for i, t in enumerate(texts)
    )
    return Segment(messages, batched=len(messages) > 1 and not image)


def test_request_shape() -> None:
    request = bot_request("acme", segment("hi", "there"))
    assert request["text"] == "hi there" and request["batched"] is True
    assert [m["content"] for m in request["messages"]] == ["hi", "there"]
    assert set(request) == {
        "version",
        "company",
        "account_id",
        "conversation_id",
        "inbox_id",
        "contact",
        "messages",
        "text",
        "batched",
    }


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([], "JSON object"),
        ({}, "neither"),
        ({"reply": 3}, "'reply' must be a string"),
        ({"replies": "x"}, "list of strings"),
        ({"reply": "  "}, "empty reply"),
        ({"reply": "x", "handoff": "yes"}, "handoff"),
    ],
)
def test_bad_bot_answers_are_named(answer, message: str) -> None:
    with pytest.raises(BotError, match=message):
        parse_bot_answer(answer)


def test_good_bot_answers() -> None:
    assert parse_bot_answer({"reply": "ok"}).replies == ("ok",)
    assert parse_bot_answer({"replies": ["a", "", "b"]}).replies == ("a", "b")
    assert parse_bot_answer({"handoff": True}).handoff is True
    assert parse_bot_answer({"replies": []}).replies == ()


def test_echo_replies_verbatim() -> None:
    assert EchoBot().answer(bot_request("acme", segment("hi", "there"))).replies == ("hi there",)


def test_python_handler_loading_and_failures() -> None:
    bot = PythonBot(load_handler("tests.bot_handlers:shout"))
    assert bot.answer(bot_request("acme", segment("hi"))).replies == ("HI", "(1 fragments)")
    with pytest.raises(BotError, match="RuntimeError: handler bug"):
        PythonBot(load_handler("tests.bot_handlers:broken")).answer(bot_request("acme", segment("x")))
    with pytest.raises(ConfigError, match="BOT_HANDLER"):
        load_handler("tests.bot_handlers:missing")


def test_openai_keeps_recent_turns_in_redis_and_passes_images(rdb, stand: Stand) -> None:
    stand.reset()
    config = CompanyConfig(
        company_id="acme",
        bot_backend="openai",
        openai_base_url=f"{stand.url}/v1",
        openai_api_key="sk-test",
        openai_model="test-model",
        bot_system_prompt="Be brief.",
        session_idle_minutes=1,
    )
    bot = OpenAIBot(config, rdb, retries=0)
    first = bot.answer(bot_request("acme", segment("hi", "I need a dentist")))
    assert first.replies == ("you said: hi I need a dentist",) and not first.handoff
    assert rdb.llen(keys.bot_history("acme", "42")) == 0  # kept once posted, not when answered
    bot.remember("42", "1-2", "hi I need a dentist", first.replies[0])
    bot.remember("42", "1-2", "hi I need a dentist", first.replies[0])  # a resumed run: kept once
    second = bot.answer(bot_request("acme", segment("tuesday?")))
    assert second.replies == ("you said: tuesday?",)
    sent = stand.completions[1]["json"]
    assert sent["model"] == "test-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][1] == {"role": "user", "content": "hi I need a dentist"}  # no tag
    assert sent["messages"][0]["content"] == "Be brief."
    assert stand.completions[1]["authorization"] == "Bearer sk-test"
    assert 0 < rdb.ttl(keys.bot_history("acme", "42")) <= 60
    with_image = bot.answer(bot_request("acme", segment("what is this", image=True)))
    parts = stand.completions[2]["json"]["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": "https://cw.example/photo.jpg"}} in parts
    assert with_image.replies
    handoff = bot.answer(bot_request("acme", segment("I want a human")))
    assert handoff.handoff and handoff.replies == ("a human will call you",)


def test_a_handoff_may_name_a_team_and_leave_a_note() -> None:
    reply = parse_bot_answer({"reply": "ok", "handoff": True, "team": 7, "note": "  wants a refund "})
    assert (reply.team, reply.note) == (7, "wants a refund")
    for bad, why in (
        ({"team": "7"}, "'team'"),
        ({"team": True}, "'team'"),
        ({"team": 0}, "'team'"),
        ({"note": 3}, "'note'"),
    ):
        with pytest.raises(BotError, match=why):
            parse_bot_answer({"reply": "ok", "handoff": True, **bad})


def test_a_stored_answer_keeps_its_team_and_note_for_a_resumed_batch() -> None:
    answer = StoredAnswer("1-2", ("bye",), True, 7, "summary")
    assert StoredAnswer.from_json("1-2", answer.to_json()) == answer
    plain = StoredAnswer("3-3", ("hi",), False)
    assert StoredAnswer.from_json("3-3", plain.to_json()) == plain and "team" not in plain.to_json()


def test_rich_replies_are_parsed_and_a_bad_one_is_named() -> None:
    reply = parse_bot_answer(
        {"replies": ["oi", {"content": "Escolha", "choices": ["A", {"title": "Outro", "value": "other"}]}]}
    )
    assert reply.replies == ("oi", Rich("Escolha", (("A", "A"), ("Outro", "other"))))
    assert parse_bot_answer({"reply": {"media": ["https://x.example/menu.pdf"]}}).replies == (
        Rich("", (), ("https://x.example/menu.pdf",)),
    )
    for bad, named in [
        ({"reply": {"content": "x", "choices": ["y" * 25]}}, "over 24 characters"),
        ({"reply": {"content": "x", "choices": [str(i) for i in range(11)]}}, "at most 10"),
        ({"reply": {"content": "x", "media": ["file:///etc/passwd"]}}, "http(s) URLs"),
        (
            {"reply": {"content": "x", "choices": ["a"], "media": ["https://x.example/a.jpg"]}},
            "has choices and media",
        ),
        ({"reply": {"content": " "}}, "neither content nor media"),
        ({"reply": 3}, "a string or an object"),
    ]:
        with pytest.raises(BotError, match=re.escape(named)):
            parse_bot_answer(bad)
