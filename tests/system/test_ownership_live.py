"""Who holds a conversation, through the real pipeline, whatever Chatwoot delivers.

Each sequence of docs/conversation.md ("Sequences") is played as Chatwoot plays it —
signed webhooks shaped by its serializers (tests/chatwoot_payloads.py), the web app,
a real worker, real Redis, the local Chatwoot stand-in — and then again with each
conversation event dropped, one at a time (a lost delivery, an event an operator switched
off), and as an older release plays it (only conversation_opened and
conversation_resolved, nothing when an agent sets a conversation back to pending),
with that one event lost too — unless nothing that arrives later can tell it happened
(``alone``: docs/conversation.md says what then ends the takeover). Whatever arrives, the
contact's last message must be answered, or left to the humans, as the sequence says."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, make_client, post_webhook
from tests.support import ROOT, Stand, Worker, wait_for

pytestmark = pytest.mark.slow
CID = "owned"
OLDER_RELEASE_EVENTS = ("conversation_opened", "conversation_resolved")  # all a bot got before 4.16


@dataclass(frozen=True)
class Contact:
    text: str
    status: str
    answered: bool  # else left to the humans (the webhook answers 200 ignored)
    assignee: dict[str, Any] | None = None


@dataclass(frozen=True)
class Agent:
    text: str
    status: str
    assignee: dict[str, Any] | None = None


@dataclass(frozen=True)
class Handoff:
    """The contact asks for a human (HANDOFF_KEYWORDS): the gateway hands off (toggle_status)."""


@dataclass(frozen=True)
class Update:
    """A conversation event: conversation_status_changed, _opened, _resolved or _updated."""

    event: str
    status: str
    changed: tuple[tuple[str, Any, Any], ...] = ()
    assignee: dict[str, Any] | None = None
    alone: bool = False  # an older release sends only this, and nothing later says it happened

    def payload(self, conversation: int) -> dict[str, Any]:
        changes = [cw.changed(*c) for c in self.changed]
        if self.event == "conversation_updated":
            return cw.conversation_updated(conversation, self.status, changes or None, self.assignee)
        if self.event == "conversation_status_changed":
            previous = next((c[1] for c in self.changed if c[0] == "status"), "pending")
            return cw.status_changed(conversation, self.status, previous, self.assignee)
        return cw.status_event(self.event, conversation, self.status, self.assignee)


BOT, HUMAN = cw.AGENT_BOT_PUSH, cw.AGENT_PUSH
Step = Contact | Agent | Handoff | Update

SEQUENCES: dict[str, list[Step]] = {
    "an agent replies in the dashboard and later resolves; the contact writes the next day": [
        Contact("hi, I want to book", "pending", answered=True),
        Agent("Hello, Ana here, I will handle your booking", "pending"),
        Update("conversation_updated", "pending"),  # first_reply_created_at, waiting_since
        Contact("thanks Ana, Tuesday works", "pending", answered=False),
        Update("conversation_status_changed", "resolved", (("status", "pending", "resolved"),)),
        Update("conversation_resolved", "resolved", alone=True),
        Update("conversation_updated", "resolved", (("status", "pending", "resolved"),)),
        Contact("one more question", "pending", answered=True),  # a bot inbox reopens it pending
    ],
    "the bot hands off and an agent sets the conversation back to pending": [
        Contact("hello", "pending", answered=True),
        Handoff(),
        Update("conversation_status_changed", "open", (("status", "pending", "open"),)),
        Update("conversation_opened", "open"),
        Update("conversation_updated", "open", (("status", "pending", "open"),)),
        Contact("is anyone there?", "open", answered=False),
        Update("conversation_status_changed", "pending", (("status", "open", "pending"),)),
        Update("conversation_updated", "pending", (("status", "open", "pending"),)),
        Contact("still there?", "pending", answered=True),
    ],
    "the bot hands off, an agent resolves, the contact writes the next day": [
        Contact("hello", "pending", answered=True),
        Handoff(),
        Update("conversation_status_changed", "open", (("status", "pending", "open"),)),
        Update("conversation_opened", "open"),
        Contact("is anyone there?", "open", answered=False),
        Update("conversation_status_changed", "resolved", (("status", "open", "resolved"),)),
        Update("conversation_resolved", "resolved"),
        Update("conversation_updated", "resolved", (("status", "open", "resolved"),)),
        Contact("good morning", "pending", answered=True),
    ],
    "an agent uses Take over, then assigns the bot back (bot ownership, 4.16+)": [
        Contact("hello", "pending", answered=True, assignee=BOT),
        Update(
            "conversation_updated",
            "open",
            (("status", "pending", "open"), ("assignee_id", None, 7), ("assignee_agent_bot_id", 3, None)),
            HUMAN,
        ),
        Update("conversation_status_changed", "open", (("status", "pending", "open"),), HUMAN),
        Update("conversation_opened", "open", assignee=HUMAN),
        Contact("hi Ana", "open", answered=False, assignee=HUMAN),
        Update(
            "conversation_updated",
            "pending",
            (("status", "open", "pending"), ("assignee_id", 7, None), ("assignee_agent_bot_id", None, 3)),
            BOT,
        ),
        Update("conversation_status_changed", "pending", (("status", "open", "pending"),), BOT),
        Contact("bot again?", "pending", answered=True, assignee=BOT),
    ],
    "an agent assigns themselves to a pending conversation (older releases keep it pending)": [
        Contact("hello", "pending", answered=True),
        Update("conversation_updated", "pending", (("assignee_id", None, 7),), HUMAN),
        Contact("hello?", "pending", answered=False, assignee=HUMAN),
    ],
    "an agent takes a conversation by assignment, then unassigns it and leaves it pending": [
        Contact("hello", "pending", answered=True),
        Update("conversation_updated", "pending", (("assignee_id", None, 7),), HUMAN),
        Contact("hello?", "pending", answered=False, assignee=HUMAN),
        Update("conversation_updated", "pending", (("assignee_id", 7, None),)),
        Contact("anyone?", "pending", answered=True),
    ],
}


def variants() -> list[tuple[str, list[Step]]]:
    """Each sequence as played, with each conversation event dropped in turn, as an older
    release plays it, and as an older release with its one event lost."""
    found = []
    for name, steps in SEQUENCES.items():
        found.append((name, steps))
        events = [i for i, step in enumerate(steps) if isinstance(step, Update)]
        found += [(f"{name} / {steps[i].event} #{i} lost", steps[:i] + steps[i + 1 :]) for i in events]  # type: ignore[union-attr]
        older = [s for s in steps if not isinstance(s, Update) or s.event in OLDER_RELEASE_EVENTS]
        found.append((f"{name} / an older release", older))
        kept = [i for i, s in enumerate(older) if isinstance(s, Update) and not s.alone]
        found += [(f"{name} / an older release, #{i} lost", older[:i] + older[i + 1 :]) for i in kept]
    return found


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    company = chatwoot_company(
        CID, stand, handoff_keywords="human", handoff_message="A human will answer you."
    )  # an Agent Bot inbox: pending conversations are the bot's
    return companies_env(redis_url, tmp_path_factory.mktemp("ownership"), [company])


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "ownership", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def play(web: Any, stand: Stand, conversation: int, steps: list[Step]) -> None:
    answered = 0

    def send(payload: dict[str, Any]) -> Any:
        return post_webhook(web, payload, company=CID, secret=f"{CID}-secret")

    for number, step in enumerate(steps):
        if isinstance(step, Contact):
            message = cw.message(step.text, conversation, status=step.status, assignee=step.assignee)
            answer = send(message)
            if step.answered:
                assert answer.status_code == 202, (number, step, answer.json)
                answered += 1
                wait_for(lambda n=answered: len(stand.replies(conversation)) >= n, timeout=15)
            else:
                assert answer.status_code == 200, (number, step, answer.json)
        elif isinstance(step, Agent):
            send(
                cw.message(
                    step.text, conversation, message_type="outgoing", sender=cw.AGENT, status=step.status
                )
            )
        elif isinstance(step, Handoff):
            assert send(cw.message("human", conversation)).status_code == 202
            answered += 1  # the handoff message
            wait_for(
                lambda: any(
                    f"/{conversation}/toggle_status" in c["path"] for c in stand.calls("toggle_status")
                )
            )
        else:
            assert send(step.payload(conversation)).status_code == 200
    assert len(stand.replies(conversation)) == answered


def test_every_sequence_ends_right_whatever_chatwoot_delivers(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    played = variants()
    failures: dict[str, BaseException] = {}

    def run(name: str, web: Any, conversation: int, steps: list[Step]) -> None:
        try:
            play(web, stand, conversation, steps)
        except BaseException as exc:  # reported below, with the variant's name
            failures[name] = exc

    # Each variant's web app is built here, one after another: Python 3.11.7 raises
    # "SystemError: AST constructor recursion depth mismatch" when threads build ASTs at
    # once (CPython gh-106905), and werkzeug compiles every route into one. gunicorn
    # builds the app once per worker process, before its threads, so this is the test's
    # concern only.
    threads = [
        threading.Thread(target=run, args=(name, make_client(env), 700 + number, steps))
        for number, (name, steps) in enumerate(played)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, "\n".join(f"{name}: {exc!r}" for name, exc in failures.items())
    assert len(played) > 3 * len(SEQUENCES)


def test_the_sequences_are_the_ones_docs_conversation_md_lists() -> None:

    text = (ROOT / "docs" / "conversation.md").read_text()
    for name in SEQUENCES:
        assert name in text, name
