"""Who holds a conversation (app/conversation/ownership.py): the transition table, every arrow of it
driven through the real scripts on the real Redis, what each Chatwoot payload says, and
the table in docs/conversation.md, which must be this table."""

from __future__ import annotations

import re

import pytest
import redis

from app.chatwoot.messages import AgentReply, Ignored, StatusChange, StoredMessage
from app.chatwoot.payload import parse_webhook
from app.conversation.ownership import MARKERS, STATUS_EVENTS, TRANSITIONS, Event, Holder, Seen, holder_of
from app.settings import CompanyConfig
from app.store import keys
from app.store.scripts import Scripts
from tests import chatwoot_payloads as cw
from tests.support import ROOT

C = "default"
STATUS_OF = {event: status for status, event in STATUS_EVENTS.items()}


def drive(s: Scripts, r: redis.Redis, company: CompanyConfig, holder: Holder, event: Event) -> Holder:
    """Put a fresh conversation in ``holder``'s hands, let ``event`` happen to it through the
    script that sees that event in production, and say who holds it after."""
    conv = f"{holder.name}-{event.name}"
    if MARKERS[holder]:
        r.set(keys.handoff(C, conv), MARKERS[holder])
    if event in STATUS_OF:  # conversation_status_changed, or conversation_updated naming the status
        s.ownership.observe(company, conv, Seen(STATUS_OF[event], status_changed=True)).run()
    elif event is Event.HUMAN_REPLIED:  # an agent's public reply, not one of the gateway's own
        s.ownership.agent_reply(company, conv, 900, "digest of an agent's words", Seen()).run()
    elif event is Event.HUMAN_ASSIGNED:
        s.ownership.observe(company, conv, Seen("open", False, "user:7", assignee_changed=True)).run()
    elif event is Event.BOT_ASSIGNED:
        s.ownership.observe(company, conv, Seen("pending", False, "agent_bot:3", assignee_changed=True)).run()
    elif event is Event.UNASSIGNED_PENDING:
        s.ownership.observe(company, conv, Seen("pending", False, "none", assignee_changed=True)).run()
    elif event is Event.BOT_HANDED_OFF:
        r.set(keys.lease(C, conv), "run#1")
        s.batch.mark_handoff(C, conv, "run#1", company.handoff_ttl_seconds).run()
    else:  # a reset keyword, a session expiring
        s.ownership.apply_event(C, conv, event, company.handoff_ttl_seconds).run()
    return holder_of(r.get(keys.handoff(C, conv)))


def test_every_arrow_of_the_table_through_the_real_scripts(rdb: redis.Redis) -> None:
    s, company = Scripts(rdb), CompanyConfig(company_id=C)
    assert len(TRANSITIONS) == len(Holder) * len(Event)  # every holder, every event
    for (holder, event), after in TRANSITIONS.items():
        assert drive(s, rdb, company, holder, event) is after, (holder, event)


def test_a_change_is_told_from_a_value_repeated(rdb: redis.Redis) -> None:
    """A payload that repeats the status or assignee seen last is no event (an agent's reply
    leaves an Agent Bot conversation pending, and every payload shows the assignee); a
    different one is, without saying it changed; nothing seen before is no change."""
    s, company = Scripts(rdb), CompanyConfig(company_id=C)
    rdb.set(keys.handoff(C, "1"), "agent")
    assert s.ownership.observe(company, "1", Seen("pending")).run() == (
        Holder.HUMAN,
        Holder.HUMAN,
    )  # first seen
    assert s.ownership.observe(company, "1", Seen("pending")).run()[1] is Holder.HUMAN  # repeated
    assert s.ownership.observe(company, "1", Seen("open")).run()[1] is Holder.HUMAN  # open: humans look at it
    assert (
        s.ownership.observe(company, "1", Seen("pending")).run()[1] is Holder.BOT
    )  # open -> pending: a change
    assert (
        s.ownership.observe(company, "2", Seen("pending", False, "user:7")).run()[1] is Holder.BOT
    )  # first seen
    assert (
        s.ownership.observe(company, "2", Seen("pending", False, "user:7")).run()[1] is Holder.BOT
    )  # shown again
    assert (
        s.ownership.observe(company, "2", Seen("pending", False, "user:8")).run()[1] is Holder.HUMAN
    )  # reassigned
    assert s.ownership.observe(company, "2", Seen("pending", False, "agent_bot:3")).run()[1] is Holder.BOT


def test_assignment_is_routine_through_an_account_webhook(rdb: redis.Redis) -> None:
    """Through an account webhook conversations are open and humans' auto-assignment is
    routine: an assignment is no takeover there (only a human's reply is)."""
    s = Scripts(rdb)
    company = CompanyConfig(company_id=C, chatwoot_integration="webhook")
    seen = Seen("open", False, "user:7", assignee_changed=True)
    assert s.ownership.observe(company, "3", seen).run() == (Holder.BOT, Holder.BOT)
    assert rdb.get(keys.assignee(C, "3")) == "user:7"  # kept all the same


def test_every_chatwoot_event_says_what_it_changed() -> None:
    """What each payload, shaped by Chatwoot's serializers, says of who holds the conversation."""
    resolved = parse_webhook(cw.status_event("conversation_resolved", 42, "resolved"), 0)
    assert isinstance(resolved, StatusChange) and resolved.seen == Seen("resolved", True, "none")
    opened = parse_webhook(cw.status_event("conversation_opened", 42, "open", cw.AGENT_PUSH), 0)
    assert isinstance(opened, StatusChange) and opened.seen == Seen("open", True, "user:7")
    repeated = parse_webhook(cw.conversation_updated(42, "pending"), 0)  # after an agent's reply
    assert isinstance(repeated, StatusChange) and repeated.seen == Seen("pending", False, "none")
    took_over = cw.conversation_updated(
        42,
        "open",
        [cw.changed("status", "pending", "open"), cw.changed("assignee_id", None, 7)],
        assignee=cw.AGENT_PUSH,
    )  # the dashboard's "Take over" (Conversations::AssignmentService#assign_agent)
    assert parse_webhook(took_over, 0).seen == Seen("open", True, "user:7", True)  # type: ignore[union-attr]
    handed_back = cw.conversation_updated(
        42, "pending", [cw.changed("assignee_agent_bot_id", None, 3)], assignee=cw.AGENT_BOT_PUSH
    )
    assert parse_webhook(handed_back, 0).seen == Seen("pending", False, "agent_bot:3", True)  # type: ignore[union-attr]
    message = parse_webhook(cw.message("hi", 42, assignee=cw.AGENT_BOT_PUSH), 0)
    assert isinstance(message, StoredMessage) and message.seen == Seen("pending", False, "agent_bot:3")
    note = parse_webhook(cw.private_note("call her back", 42), 0)
    assert isinstance(note, Ignored) and note.seen == Seen("pending", False, "none")
    reply = parse_webhook(cw.agent_reply("Ana here", 42, status="open"), 0)
    assert isinstance(reply, AgentReply) and reply.seen == Seen("open", False, "none")


def test_an_agent_bot_assignee_is_never_a_human() -> None:
    seen = parse_webhook(cw.message("hi", 42, assignee=cw.AGENT_BOT_PUSH), 0).seen  # type: ignore[union-attr]
    assert not seen.assignee.startswith("user:")


def expected_table() -> str:
    header = "| event | " + " | ".join(h.value for h in Holder) + " |"
    rule = "|---|" + "---|" * len(Holder)
    rows = [
        f"| {event.value} | " + " | ".join(TRANSITIONS[(h, event)].value for h in Holder) + " |"
        for event in Event
    ]
    return "\n".join([header, rule, *rows])


def test_the_table_in_docs_is_this_table() -> None:
    """docs/conversation.md draws the state machine; its transition table is checked here,
    cell by cell, against app/conversation/ownership.py."""
    text = (ROOT / "docs" / "conversation.md").read_text()
    found = re.search(r"<!-- transitions -->\n(.*?)\n<!-- /transitions -->", text, re.S)
    assert found, "docs/conversation.md lost its transition table"
    assert found.group(1) == expected_table()


@pytest.mark.parametrize("marker", ["agent", "something a newer release wrote"])
def test_an_unknown_marker_reads_as_a_human(marker: str) -> None:
    assert holder_of(marker) is (Holder.HUMAN)
