"""The settings themselves: ``CompanyConfig`` (each company's, and each inbox's
override of it) and ``Settings`` (the process's), one dataclass field per variable
with its default and parser, and the rules derived from them."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from app.logs import mask_secrets
from app.settings.fields import (
    BOT_BACKENDS,
    BOT_MODES,
    INTEGRATIONS,
    WINDOW_MODES,
    BotMode,
    ContextPart,
    Price,
    WindowTemplate,
    _bool,
    _checked_by,
    _company_id,
    _context_parts,
    _handler,
    _hosts,
    _inbox_ids,
    _is_loopback,
    _keywords,
    _messages,
    _minutes,
    _non_negative_float,
    _non_negative_int,
    _one_of,
    _positive_float,
    _positive_int,
    _prices,
    _reply_split,
    _str,
    _url,
    _window_template,
)
from app.settings.hours import BusinessHours, local_time, parse_business_hours, parse_time_zone

WHATSAPP_CHANNEL = "Channel::Whatsapp"  # conversation.channel (EventDataPresenter#push_data)

if TYPE_CHECKING:
    from app.chatwoot.messages import StoredMessage


@dataclass(frozen=True)
class CompanyConfig:
    company_id: str = field(default="default", metadata={"parse": _company_id})
    chatwoot_base_url: str | None = field(default=None, metadata={"parse": _url})
    chatwoot_api_token: str | None = field(default=None, repr=False, metadata={"parse": _str})
    chatwoot_webhook_secret: str | None = field(default=None, repr=False, metadata={"parse": _str})
    webhook_token: str | None = field(default=None, repr=False, metadata={"parse": _str})
    bot_backend: str = field(default="echo", metadata={"inbox": True, "parse": _one_of(BOT_BACKENDS)})
    bot_mode: str = field(default="answer", metadata={"inbox": True, "parse": _one_of(BOT_MODES)})
    service_window_hours: float = field(default=24.0, metadata={"inbox": True, "parse": _non_negative_float})
    follow_up_after_minutes: tuple[float, ...] = field(
        default=(), metadata={"inbox": True, "parse": _minutes}
    )
    follow_up_messages: tuple[str, ...] = field(
        default=(), metadata={"inbox": True, "parse": _messages, "separator": "|"}
    )
    service_window_template: WindowTemplate | None = field(
        default=None, metadata={"inbox": True, "parse": _window_template}
    )
    bot_url: str | None = field(default=None, metadata={"inbox": True, "parse": _url})
    bot_timeout_seconds: float = field(default=30.0, metadata={"inbox": True, "parse": _positive_float})
    openai_base_url: str | None = field(default=None, metadata={"inbox": True, "parse": _url})
    openai_api_key: str | None = field(default=None, repr=False, metadata={"inbox": True, "parse": _str})
    openai_model: str | None = field(default=None, metadata={"inbox": True, "parse": _str})
    # Tried when the first endpoint times out or answers 429/5xx, within BOT_TIMEOUT_SECONDS.
    openai_fallback_base_url: str | None = field(default=None, metadata={"inbox": True, "parse": _url})
    openai_fallback_model: str | None = field(default=None, metadata={"inbox": True, "parse": _str})
    openai_fallback_api_key: str | None = field(
        default=None, repr=False, metadata={"inbox": True, "parse": _str}
    )
    bot_system_prompt: str = field(
        default="You are a helpful customer-support assistant.", metadata={"inbox": True, "parse": _str}
    )
    bot_handler: str | None = field(default=None, metadata={"inbox": True, "parse": _handler})
    bot_fallback_message: str | None = field(default=None, metadata={"inbox": True, "parse": _str})
    bot_context: tuple[ContextPart, ...] = field(
        default=(), metadata={"inbox": True, "parse": _context_parts}
    )
    bot_holding_message: str = field(default="", metadata={"inbox": True, "parse": _str})
    bot_holding_after_seconds: float = field(default=8.0, metadata={"inbox": True, "parse": _positive_float})
    batch_window_mode: str = field(
        default="sliding", metadata={"inbox": True, "parse": _one_of(WINDOW_MODES)}
    )
    batch_window_seconds: float = field(default=10.0, metadata={"inbox": True, "parse": _positive_float})
    batch_window_min_seconds: float = field(default=3.0, metadata={"parse": _positive_float})
    batch_window_max_seconds: float = field(default=30.0, metadata={"parse": _positive_float})
    batch_max_wait_seconds: float = field(default=30.0, metadata={"inbox": True, "parse": _positive_float})
    batch_max_avg_chars: int = field(default=400, metadata={"parse": _positive_int})
    max_queue_per_conversation: int = field(default=200, metadata={"parse": _positive_int})
    max_conversations_waiting: int = field(default=10_000, metadata={"parse": _positive_int})
    session_idle_minutes: float = field(default=15.0, metadata={"parse": _positive_float})
    reply_split: str = field(default="none", metadata={"inbox": True, "parse": _reply_split})
    typing_chars_per_second: float = field(default=40.0, metadata={"parse": _positive_float})
    chatwoot_integration: str = field(default="agent_bot", metadata={"parse": _one_of(INTEGRATIONS)})
    bot_only_pending: bool | None = field(
        default=None, metadata={"parse": _bool}
    )  # None: by the integration (agent_bot: pending only)
    inbox_ids: tuple[int, ...] = field(
        default=(), metadata={"parse": _inbox_ids}
    )  # empty: every inbox of the account
    bot_resume_after_minutes: float | None = field(default=None, metadata={"parse": _positive_float})
    handoff_max_days: float = field(default=30.0, metadata={"parse": _positive_float})
    session_expired_message: str | None = field(default=None, metadata={"parse": _str})
    session_reset_keywords: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    pause_labels: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    handoff_keywords: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    handoff_message: str = field(default="", metadata={"parse": _str})
    opt_out_keywords: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    opt_out_message: str = field(default="", metadata={"parse": _str})
    opt_in_keywords: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    handoff_team_id: int | None = field(default=None, metadata={"parse": _positive_int})
    bot_calls_per_day: int = field(default=0, metadata={"parse": _non_negative_int})
    bot_prices: tuple[Price, ...] = field(default=(), metadata={"parse": _prices})
    bot_spend_per_day: float = field(default=0.0, metadata={"parse": _non_negative_float})
    loop_max_replies: int = field(default=0, metadata={"parse": _non_negative_int})
    loop_window_minutes: float = field(default=10.0, metadata={"parse": _positive_float})
    business_hours: str = field(default="", metadata={"parse": _checked_by(parse_business_hours)})
    business_hours_tz: str = field(default="UTC", metadata={"parse": _checked_by(parse_time_zone)})
    bot_hours: str = field(default="always", metadata={"parse": _one_of(("always", "outside", "inside"))})
    away_message: str = field(default="", metadata={"parse": _str})
    transcribe_backend: str = field(
        default="none", metadata={"parse": _one_of(("none", "openai", "chatwoot"))}
    )
    transcribe_base_url: str | None = field(default=None, metadata={"parse": _url})
    transcribe_api_key: str | None = field(default=None, repr=False, metadata={"parse": _str})
    transcribe_model: str = field(default="whisper-1", metadata={"parse": _str})
    transcribe_max_bytes: int = field(default=16 * 1024 * 1024, metadata={"parse": _positive_int})
    transcribe_timeout_seconds: float = field(default=30.0, metadata={"parse": _positive_float})
    transcribe_max_notes: int = field(default=10, metadata={"parse": _non_negative_int})
    transcribe_budget_seconds: float = field(default=60.0, metadata={"parse": _positive_float})
    media_allowed_hosts: tuple[str, ...] = field(default=(), metadata={"parse": _hosts})
    reply_media_max_bytes: int = field(default=16 * 1024 * 1024, metadata={"parse": _positive_int})
    document_max_pages: int = field(default=20, metadata={"parse": _non_negative_int})
    document_max_chars: int = field(default=20_000, metadata={"parse": _positive_int})
    document_max_bytes: int = field(default=10 * 1024 * 1024, metadata={"parse": _positive_int})
    document_timeout_seconds: float = field(default=20.0, metadata={"parse": _positive_float})
    # COMPANIES_FILE only: inbox id -> this company's settings with that inbox's own
    # bot and window (``"inboxes": {"4": {"bot_url": …}}``); other inboxes use the company's.
    inboxes: Mapping[int, CompanyConfig] = field(default_factory=dict, repr=False)
    budget_message: str = field(default="", metadata={"parse": _str})
    ignore_contacts: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    ignore_groups: tuple[str, ...] = field(default=(), metadata={"parse": _keywords})
    supersede_max: int = field(default=2, metadata={"parse": _non_negative_int})

    @property
    def handoff_ttl_seconds(self) -> int:
        """How long a human takeover or a bot handoff lasts without news from Chatwoot:
        ``BOT_RESUME_AFTER_MINUTES`` when set, else ``HANDOFF_MAX_DAYS`` (a marker never
        lives forever: conversations that humans abandon must not pile up in Redis)."""
        if self.bot_resume_after_minutes:
            return max(1, int(self.bot_resume_after_minutes * 60))
        return max(1, int(self.handoff_max_days * 86400))

    @property
    def first_window(self) -> float:
        """The quiet period the enqueue script schedules a batch with (learned and smart:
        the shortest; the drainer, which knows the contact's pace and reads the latest
        fragment, defers it when later)."""
        if self.paced:
            return min(self.batch_window_min_seconds, self.batch_max_wait_seconds)
        return self.batch_window_seconds

    @property
    def paced(self) -> bool:
        """Does the window follow each contact's pace (``app.batching.pace``), learned or smart?"""
        return self.batch_window_mode in ("learned", "smart")

    @property
    def status_ttl_seconds(self) -> int:
        """How long the last seen status of a conversation is kept (HANDOFF_MAX_DAYS)."""
        return max(1, int(self.handoff_max_days * 86400))

    def checks_window(self, channel: str | None) -> bool:
        """Is a conversation of ``channel`` held to WhatsApp's customer-service window?"""
        return bool(self.service_window_hours) and channel == WHATSAPP_CHANNEL

    def price_of(self, model: str) -> Price | None:
        """BOT_PRICES' entry for ``model`` (exact name), if any."""
        return next((p for p in self.bot_prices if p.model == model), None)

    @property
    def drafts(self) -> bool:
        """BOT_MODE=draft: every answer is a private note for the agents, the contact gets
        nothing, and the bot drafts whoever holds the conversation (a pause label still
        pauses it)."""
        return self.bot_mode == BotMode.DRAFT

    @property
    def answers_only_pending(self) -> bool:
        """Answer only ``pending`` conversations? In an Agent Bot inbox ``pending`` is the
        bot's and ``open`` the humans' (the Agent Bot receives both): yes by default.
        Through an account webhook, conversations start ``open``: no by default."""
        if self.bot_only_pending is not None:
            return self.bot_only_pending
        return self.chatwoot_integration == "agent_bot"

    @property
    def bot_owns_pending(self) -> bool:
        """Does the bot own pending conversations (an Agent Bot inbox)? Then assigning a
        human takes a conversation over and assigning the bot hands it back; through an
        account webhook assignment is routine (auto-assignment) and no takeover."""
        return self.chatwoot_integration == "agent_bot"

    def for_inbox(self, inbox_id: int | None) -> CompanyConfig:
        """The settings a conversation of this inbox is served with."""
        return self.inboxes.get(inbox_id, self) if inbox_id is not None else self

    def serves_inbox(self, inbox_id: int | None) -> bool:
        return not self.inbox_ids or inbox_id in self.inbox_ids

    def ignored_sender(self, contact: Mapping[str, Any], group: tuple[str, ...] | None) -> str | None:
        """Why the bot never answers this sender (IGNORE_CONTACTS, IGNORE_GROUPS), or None.
        Patterns are exact values or shell-style (``+5511*``, ``*``), case-insensitive."""
        if group is not None:
            for pattern in self.ignore_groups:
                if pattern == "*" or any(fnmatch.fnmatchcase(g, pattern) for g in group):
                    return f"group conversation matches IGNORE_GROUPS {pattern!r}"
        values = [
            str(contact[k]).strip().lower() for k in ("phone_number", "identifier", "email") if contact.get(k)
        ]
        for pattern in self.ignore_contacts:
            if any(fnmatch.fnmatchcase(v, pattern) for v in values):
                return f"contact matches IGNORE_CONTACTS {pattern!r}"
        return None

    @property
    def keeps_hours(self) -> bool:
        """Does BOT_HOURS make the bot's answering depend on BUSINESS_HOURS?"""
        return self.bot_hours != "always" and bool(self.business_hours)

    @cached_property
    def _opening(self) -> tuple[BusinessHours, ZoneInfo]:
        """BUSINESS_HOURS and their time zone, parsed once (they were checked at load)."""
        return parse_business_hours(self.business_hours), parse_time_zone(self.business_hours_tz)

    def is_business_open(self, unix: float) -> bool:
        hours, zone = self._opening
        return hours.is_open(local_time(unix, zone))

    def bot_on_duty(self, unix: float) -> bool:
        """Does the bot answer at ``unix`` (BOT_HOURS against BUSINESS_HOURS)?"""
        return not self.keeps_hours or self.is_business_open(unix) == (self.bot_hours == "inside")

    def seconds_until_hours_change(self, unix: float) -> float:
        """Until the business opens or closes next (how long an away message holds)."""
        hours, zone = self._opening
        local = local_time(unix, zone)
        return (hours.next_change(local) - local).total_seconds()

    def asks_for_a_human(self, message: StoredMessage) -> bool:
        """Is it, whole, one of HANDOFF_KEYWORDS ("human")? It skips the window and the bot."""
        return says(message, self.handoff_keywords)

    def pausing_label(self, labels: tuple[str, ...] | None) -> str | None:
        """The first of PAUSE_LABELS the conversation carries, if any."""
        return next((label for label in labels or () if label in self.pause_labels), None)

    @property
    def dry_run(self) -> bool:
        return not self.chatwoot_base_url

    @property
    def has_webhook_auth(self) -> bool:
        return bool(self.chatwoot_webhook_secret or self.webhook_token)

    def warnings(self) -> list[str]:
        """What start-up should warn about: settings that work but expose something."""
        found = []
        if self.chatwoot_webhook_secret and self.webhook_token:
            found.append(
                "WEBHOOK_TOKEN is ignored: CHATWOOT_WEBHOOK_SECRET is set, so every webhook"
                " must carry X-Chatwoot-Signature"
            )
        for name in ("chatwoot_base_url", "bot_url", "openai_base_url", "openai_fallback_base_url"):
            url = getattr(self, name)
            if url and urlparse(url).scheme == "http" and not _is_loopback(url):
                found.append(
                    f"{name.upper()} is plain http outside this machine ({mask_secrets(url)}):"
                    " tokens and messages cross the network unencrypted; use https"
                )
        return found


def says(message: StoredMessage, keywords: tuple[str, ...]) -> bool:
    """Is this message a text that is, whole, one of ``keywords`` (case and spaces aside)?"""
    return bool(keywords) and message.is_text_only and message.content.strip().lower() in keywords
