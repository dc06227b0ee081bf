"""Who holds a conversation: the bot, or the humans (docs/conversation.md).

The *holder* is kept in one Redis key per conversation (``keys.handoff``): no
key while the bot holds it, ``bot`` after the bot handed it to humans, ``agent``
after a human took it over. A conversation that carries a pause label
(``PAUSE_LABELS``, ``keys.paused``) is paused on top of that, whoever holds it;
in an Agent Bot inbox a conversation that is not ``pending`` belongs to the
humans by its status alone (``CompanyConfig.answers_only_pending``).

The holder changes on *events*, and this module is their one table:
``TRANSITIONS[(holder, event)]`` is the holder after the event, for every holder
and every event. The Lua scripts that see events (ENQUEUE, AGENT_REPLY,
OBSERVE, MARK_HANDOFF, APPLY_EVENT) apply this same table: it is rendered into
them (``lua_tables``), so no script spells a holder or an event of its own.

Chatwoot tells the gateway about a conversation through whichever events an
operator left switched on, and deliveries get lost (docs/conversation.md). So
no single event is relied on: every payload that carries the conversation's
status and assignee is *observed* — messages the gateway ignores included, and
its own ``toggle_status`` — and an event is derived from what changed since the
last payload seen (``STATUS_EVENTS``, ``assignee_event``): a status *change*,
not a status repeated (an agent's reply leaves an Agent Bot conversation
``pending``), and an assignment *change*, not an assignee still shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AGENT_BOT",
    "BOTS_STATUS",
    "HUMAN",
    "MARKERS",
    "NOBODY",
    "STATUS_EVENTS",
    "TRANSITIONS",
    "Event",
    "Holder",
    "Seen",
    "assignee_of",
    "holder_of",
    "lua_tables",
]


class Holder(StrEnum):
    BOT = "bot holds it"
    HANDED_OFF = "handed off by the bot"
    HUMAN = "a human holds it"


# The value of ``keys.handoff`` for each holder ('' = no key). "bot" and "agent" are the
# values every release of the gateway wrote: kept, so markers already in Redis still read.
MARKERS: dict[Holder, str] = {Holder.BOT: "", Holder.HANDED_OFF: "bot", Holder.HUMAN: "agent"}


def holder_of(marker: str | None) -> Holder:
    """The holder a ``keys.handoff`` value names (an unknown value: a human, to be safe)."""
    if not marker:
        return Holder.BOT
    return next((h for h, m in MARKERS.items() if m == marker), Holder.HUMAN)


class Event(StrEnum):
    """What can happen to a conversation, as the gateway learns it."""

    TO_PENDING = "status changed to pending"
    TO_RESOLVED = "status changed to resolved"
    TO_OPEN = "status changed to open"
    TO_SNOOZED = "status changed to snoozed"
    HUMAN_REPLIED = "a human replied (dashboard or WhatsApp phone)"
    HUMAN_ASSIGNED = "a human was assigned"
    BOT_ASSIGNED = "the agent bot was assigned"
    UNASSIGNED_PENDING = "unassigned while pending"
    BOT_HANDED_OFF = "the bot handed off"
    RESET_KEYWORD = "the contact sent a reset keyword"
    SESSION_EXPIRED = "the bot session expired"


# A status event's name by the status it changed to (another status: no event).
STATUS_EVENTS: dict[str, Event] = {
    "pending": Event.TO_PENDING,
    "resolved": Event.TO_RESOLVED,
    "open": Event.TO_OPEN,
    "snoozed": Event.TO_SNOOZED,
}

_BACK_TO_BOT = {Event.TO_PENDING, Event.TO_RESOLVED, Event.BOT_ASSIGNED, Event.UNASSIGNED_PENDING}
_TO_HUMAN = {Event.HUMAN_REPLIED, Event.HUMAN_ASSIGNED}


def _next(holder: Holder, event: Event) -> Holder:
    if event in _TO_HUMAN:
        return Holder.HUMAN  # whoever held it: a human has it now
    if event in _BACK_TO_BOT:
        return Holder.BOT  # pending again (or resolved: the contact's next message reopens it pending)
    if event is Event.BOT_HANDED_OFF:
        return Holder.HANDED_OFF if holder is Holder.BOT else holder
    if event in (Event.RESET_KEYWORD, Event.SESSION_EXPIRED):
        return Holder.BOT if holder is Holder.HANDED_OFF else holder  # a human's takeover stays
    return holder  # open or snoozed: humans look at it; who holds it does not change


TRANSITIONS: dict[tuple[Holder, Event], Holder] = {(h, e): _next(h, e) for h in Holder for e in Event}


# How an assignee is kept (``keys.assignee``): ``<type>:<id>`` as Chatwoot's push data
# types it — "user" is a human, "agent_bot" a bot (Captain: "captain_assistant", no
# human) — or NOBODY. Only a *change* of it is an event, and only in an Agent Bot inbox,
# where the bot owns pending conversations: "unassigned" gives a conversation back
# to the bot only while it is pending (BOTS_STATUS).
HUMAN, AGENT_BOT, NOBODY, BOTS_STATUS = "user", "agent_bot", "none", "pending"


def assignee_of(assignee: Any) -> str | None:
    """A payload's ``meta.assignee`` as the gateway keeps it; None when the payload does
    not say (no ``meta``)."""
    if assignee is None:
        return NOBODY
    if not isinstance(assignee, dict):
        return None
    kind = assignee.get("type")
    kind = kind if isinstance(kind, str) and kind else HUMAN  # User#push_event_data types "user"
    return f"{kind[:32]}:{str(assignee.get('id', ''))[:32]}"


@dataclass(frozen=True)
class Seen:
    """What one payload says of who holds its conversation: its status ('' when it does
    not say) and assignee (``assignee_of``; '' when it does not say), and whether the
    event is itself a change of either (``conversation_status_changed``, a
    ``changed_attributes`` naming them) rather than a value repeated."""

    status: str = ""
    status_changed: bool = False
    assignee: str = ""
    assignee_changed: bool = False

    def args(self) -> list[str]:
        """As the scripts take them (``observe`` in app/store/scripts/)."""
        flag = {True: "1", False: "0"}
        return [self.status, flag[self.status_changed], self.assignee, flag[self.assignee_changed]]


def lua_tables() -> str:
    """The transition table and the names the scripts use, as Lua: ``NEXT[marker .. '|'
    .. event]`` is the marker after the event, ``STATUS_EVENT[status]`` the event of a
    change to that status, ``MARKER``, ``EVENT`` and ``ASSIGNEE`` the values by name."""
    rows = ",\n".join(
        f"  [{_lua(MARKERS[h] + '|' + e.name)}] = {_lua(MARKERS[n])}" for (h, e), n in TRANSITIONS.items()
    )
    events = ",\n".join(f"  [{_lua(status)}] = {_lua(e.name)}" for status, e in STATUS_EVENTS.items())
    markers = ", ".join(f"{h.name} = {_lua(m)}" for h, m in MARKERS.items())
    names = ", ".join(f"{e.name} = {_lua(e.name)}" for e in Event)
    assignees = (
        f"HUMAN = {_lua(HUMAN + ':')}, BOT = {_lua(AGENT_BOT + ':')}, NOBODY = {_lua(NOBODY)},"
        f" BOTS_STATUS = {_lua(BOTS_STATUS)}"
    )
    return (
        f"local NEXT = {{\n{rows}\n}}\nlocal STATUS_EVENT = {{\n{events}\n}}\n"
        f"local MARKER = {{{markers}}}\nlocal EVENT = {{{names}}}\nlocal ASSIGNEE = {{{assignees}}}\n"
    )


def _lua(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
