"""Settings: read the environment (or COMPANIES_FILE) once, validate, pass in.

A wrong value raises ``ConfigError`` whose message names the variable; the
processes print it and stop (``python -m app check-config`` does the same for
start.sh before anything starts).

Each setting is declared once: a dataclass field with its default and, in its
``metadata``, the parser that reads it from the environment (NAME in upper case)
or from a COMPANIES_FILE object (lower case). pydantic-settings does this with
typed fields and errors naming the field, and was weighed: it would add
pydantic-core (a compiled package of several MB) to a small image, its
environment and JSON sources would still need this module's two spellings and
cross-field rules (max wait ≥ window, a URL required by the backend), and its
messages name a field path rather than the variable an operator sets. A
dataclass with one parser per field keeps messages like "BOT_URL must be an
http(s) URL, got 'x'" and no dependency.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse
from zoneinfo import ZoneInfo

from app.logs import mask_secrets
from app.settings.hours import BusinessHours, local_time, parse_business_hours, parse_time_zone

if TYPE_CHECKING:
    from app.chatwoot.payload import StoredMessage

__all__ = [
    "BotBackend",
    "CompanyConfig",
    "ConfigError",
    "Integration",
    "Settings",
    "WindowMode",
    "load_settings",
]


class WindowMode(StrEnum):
    """BATCH_WINDOW_MODE: how a batch's quiet period is chosen (docs/batching.md)."""

    FIXED = "fixed"
    SLIDING = "sliding"
    LEARNED = "learned"
    SMART = "smart"


class BotBackend(StrEnum):
    """BOT_BACKEND: how the bot is asked (app/bots.py)."""

    ECHO = "echo"
    HTTP = "http"
    OPENAI = "openai"
    PYTHON = "python"


class Integration(StrEnum):
    """CHATWOOT_INTEGRATION: an Agent Bot inbox, or an account webhook (docs/chatwoot-setup.md)."""

    AGENT_BOT = "agent_bot"
    WEBHOOK = "webhook"


BOT_BACKENDS = tuple(BotBackend)
INTEGRATIONS = tuple(Integration)
WINDOW_MODES = tuple(WindowMode)
STATUS_PASSWORD_MIN_CHARS = 16
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_COMPANY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names it."""


# name -> (parser, CompanyConfig field); the environment variable is NAME upper case.
def _str(name: str, raw: str) -> str:
    return raw.strip()


def _url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _whole_number(name: str, raw: str, minimum: int, wanted: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must {wanted}, got {raw!r}")
    return value


def _positive_int(name: str, raw: str) -> int:
    return _whole_number(name, raw, 1, "be a positive whole number")


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    """A parser accepting one of ``choices``, case-insensitive."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def is_bcrypt(stored: str) -> bool:
    """Is STATUS_BASIC_AUTH's password a bcrypt hash (``python -m app hash-password``)?"""
    return bool(_BCRYPT.match(stored))


def _user_password(name: str, raw: str) -> str:
    user, _, password = raw.strip().partition(":")
    if not user or not password:
        raise ConfigError(f"{name} must look like user:password")
    return raw.strip()


def _checked_by(check: Callable[[str], object]) -> Callable[[str, str], str]:
    """A parser that keeps the text once ``check`` accepts it (its ValueError says why)."""

    def parse(name: str, raw: str) -> str:
        try:
            check(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return raw.strip()

    return parse


def _company_id(name: str, raw: str) -> str:
    value = raw.strip()
    if not _COMPANY_ID.match(value):
        raise ConfigError(f"{name} must be 1-64 letters, digits, '_' or '-', got {raw!r}")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _keywords(name: str, raw: str) -> tuple[str, ...]:
    words = tuple(w.strip().lower() for w in raw.split(",") if w.strip())
    if not words:
        raise ConfigError(f"{name} must be a comma-separated list of words, got {raw!r}")
    return words


_HOST_ENTRY = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    """Host names (``media.example.com``, ``*.s3.amazonaws.com``, ``storage:9000``): no
    scheme, path or credentials."""
    hosts = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    if not hosts:
        raise ConfigError(f"{name} must be a comma-separated list of host names, got {raw!r}")
    for host in hosts:
        if not _HOST_ENTRY.match(host):
            raise ConfigError(
                f"{name}: {host!r} is not a host name (host, host:port or *.domain; no scheme or path)"
            )
    return hosts


def _inbox_ids(name: str, raw: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of inbox ids, got {raw!r}") from None
    if not ids or any(i <= 0 for i in ids):
        raise ConfigError(f"{name} must be a comma-separated list of inbox ids, got {raw!r}")
    return ids


def _non_negative_int(name: str, raw: str) -> int:
    return _whole_number(name, raw, 0, "not be negative")


def _reply_split(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("none", "paragraphs"):
        raise ConfigError(f"{name} must be none or paragraphs, got {raw!r}")
    return value


def _handler(name: str, raw: str) -> str:
    value = raw.strip()
    if not _HANDLER.match(value):
        raise ConfigError(f"{name} must look like package.module:function, got {raw!r}")
    return value


@dataclass(frozen=True)
class CompanyConfig:
    company_id: str = field(default="default", metadata={"parse": _company_id})
    chatwoot_base_url: str | None = field(default=None, metadata={"parse": _url})
    chatwoot_api_token: str | None = field(default=None, repr=False, metadata={"parse": _str})
    chatwoot_webhook_secret: str | None = field(default=None, repr=False, metadata={"parse": _str})
    webhook_token: str | None = field(default=None, repr=False, metadata={"parse": _str})
    bot_backend: str = field(default="echo", metadata={"parse": _one_of(BOT_BACKENDS)})
    bot_url: str | None = field(default=None, metadata={"parse": _url})
    bot_timeout_seconds: float = field(default=30.0, metadata={"parse": _positive_float})
    openai_base_url: str | None = field(default=None, metadata={"parse": _url})
    openai_api_key: str | None = field(default=None, repr=False, metadata={"parse": _str})
    openai_model: str | None = field(default=None, metadata={"parse": _str})
    bot_system_prompt: str = field(
        default="You are a helpful customer-support assistant.", metadata={"parse": _str}
    )
    bot_handler: str | None = field(default=None, metadata={"parse": _handler})
    bot_fallback_message: str | None = field(default=None, metadata={"parse": _str})
    batch_window_mode: str = field(default="sliding", metadata={"parse": _one_of(WINDOW_MODES)})
    batch_window_seconds: float = field(default=10.0, metadata={"parse": _positive_float})
    batch_window_min_seconds: float = field(default=3.0, metadata={"parse": _positive_float})
    batch_window_max_seconds: float = field(default=30.0, metadata={"parse": _positive_float})
    batch_max_wait_seconds: float = field(default=30.0, metadata={"parse": _positive_float})
    batch_max_avg_chars: int = field(default=400, metadata={"parse": _positive_int})
    max_queue_per_conversation: int = field(default=200, metadata={"parse": _positive_int})
    max_conversations_waiting: int = field(default=10_000, metadata={"parse": _positive_int})
    session_idle_minutes: float = field(default=15.0, metadata={"parse": _positive_float})
    reply_split: str = field(default="none", metadata={"parse": _reply_split})
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
    handoff_team_id: int | None = field(default=None, metadata={"parse": _positive_int})
    bot_calls_per_day: int = field(default=0, metadata={"parse": _non_negative_int})
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
        """Is this message a text that is, whole, one of HANDOFF_KEYWORDS ("human",
        "atendente")? Such a command skips the window and the bot."""
        return (
            bool(self.handoff_keywords)
            and message.is_text_only
            and message.content.strip().lower() in self.handoff_keywords
        )

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
        for name in ("chatwoot_base_url", "bot_url", "openai_base_url"):
            url = getattr(self, name)
            if url and urlparse(url).scheme == "http" and not _is_loopback(url):
                found.append(
                    f"{name.upper()} is plain http outside this machine ({mask_secrets(url)}):"
                    " tokens and messages cross the network unencrypted; use https"
                )
        return found


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(repr=False)
    companies: Mapping[str, CompanyConfig]
    max_body_bytes: int = field(default=1024 * 1024, metadata={"parse": _positive_int})
    queue_ttl_seconds: int = field(default=24 * 3600, metadata={"parse": _positive_int})
    seen_ttl_seconds: int = field(default=48 * 3600, metadata={"parse": _positive_int})
    lease_ttl_seconds: float = field(default=20.0, metadata={"parse": _positive_float})
    sweep_interval_seconds: float = field(default=5.0, metadata={"parse": _positive_float})
    batch_max_messages: int = field(default=50, metadata={"parse": _positive_int})
    worker_heartbeat_max_age_seconds: float = field(default=15.0, metadata={"parse": _positive_float})
    chatwoot_timeout_seconds: float = field(default=10.0, metadata={"parse": _positive_float})
    outbound_retries: int = field(default=3, metadata={"parse": _positive_int})
    batch_max_attempts: int = field(default=3, metadata={"parse": _positive_int})
    run_max_seconds: float = field(default=300.0, metadata={"parse": _positive_float})
    dead_letter_max: int = field(default=10000, metadata={"parse": _positive_int})
    # fragments kept per company for `python -m app analytics` (about 40 B each); 0: none
    fragment_log_length: int = field(default=20000, metadata={"parse": _non_negative_int})
    data_dir: str = field(default="data", metadata={"parse": _str})
    spool_max_bytes: int = field(default=64 * 1024 * 1024, metadata={"parse": _positive_int})
    metrics_token: str | None = field(default=None, repr=False, metadata={"parse": _str})
    status_basic_auth: str | None = field(default=None, repr=False, metadata={"parse": _user_password})
    gauges_interval_seconds: float = field(default=15.0, metadata={"parse": _positive_float})
    log_level: str = "INFO"
    log_format: str = "text"

    def company(self, company_id: str) -> CompanyConfig | None:
        return self.companies.get(company_id)

    def served(self) -> list[CompanyConfig]:
        """Every configuration a conversation may be served with: each company's, and
        each of its inboxes' own (COMPANIES_FILE "inboxes")."""
        return [c for company in self.companies.values() for c in (company, *company.inboxes.values())]

    def warnings(self) -> list[str]:
        """What start-up should warn about in the gateway-wide settings."""
        found = []
        if not self.metrics_token:
            found.append(
                "METRICS_TOKEN is unset: /metrics is public on the container's port (it names every"
                " company and its volumes); set one and give it to Prometheus (bearer token)"
            )
        password = (self.status_basic_auth or "").partition(":")[2]
        if self.status_basic_auth and not is_bcrypt(password) and len(password) < STATUS_PASSWORD_MIN_CHARS:
            found.append(
                f"STATUS_BASIC_AUTH's password has {len(password)} characters: /status is on the public"
                f" port; use at least {STATUS_PASSWORD_MIN_CHARS} (failed logins are limited to 10 a minute"
                " per address)"
            )
        return found


_Parser = Callable[[str, str], Any]


def _parsers(cls: type) -> dict[str, _Parser]:
    """name -> parser of every field of ``cls`` that comes from the environment or
    COMPANIES_FILE: the parser is declared with the field (its ``metadata``)."""
    return {f.name: f.metadata["parse"] for f in fields(cls) if "parse" in f.metadata}


COMPANY_FIELDS: dict[str, _Parser] = _parsers(CompanyConfig)
# What an inbox of a company may set for itself (COMPANIES_FILE "inboxes"): its bot and
# its window. Keys, secrets, Chatwoot and the company's policies stay the company's.
INBOX_FIELDS = (
    "bot_backend",
    "bot_url",
    "bot_handler",
    "bot_timeout_seconds",
    "openai_base_url",
    "openai_api_key",
    "openai_model",
    "bot_system_prompt",
    "bot_fallback_message",
    "batch_window_seconds",
    "batch_max_wait_seconds",
    "batch_window_mode",
    "reply_split",
)
GLOBAL_FIELDS: dict[str, _Parser] = _parsers(Settings)


def _parse_fields(
    source: Mapping[str, Any], fields: Mapping[str, _Parser], *, upper: bool, where: str = ""
) -> dict[str, Any]:
    """Parse the fields present in ``source`` (env: NAME upper case; file: lower case)."""
    values: dict[str, Any] = {}
    for key, parse in fields.items():
        lookup = key.upper() if upper else key
        label = f"{where}.{key}" if where else lookup
        raw = source.get(lookup)
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        if isinstance(raw, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in raw):
            raw = ",".join(str(v) for v in raw)  # a list in COMPANIES_FILE: inbox_ids, keywords
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{label} must be a string or number, got {raw!r}")
        values[key] = parse(label, str(raw))
    return values


def _check_company(config: CompanyConfig, where: str) -> CompanyConfig:
    def name(key: str) -> str:
        return f"{where}{key.upper()}" if where == "" else f"{where}.{key}"

    if config.batch_max_wait_seconds < config.batch_window_seconds:
        raise ConfigError(
            f"{name('batch_max_wait_seconds')} ({config.batch_max_wait_seconds}) must not be"
            f" below {name('batch_window_seconds')} ({config.batch_window_seconds})"
        )
    if config.batch_window_max_seconds < config.batch_window_min_seconds:
        raise ConfigError(
            f"{name('batch_window_max_seconds')} ({config.batch_window_max_seconds}) must not be"
            f" below {name('batch_window_min_seconds')} ({config.batch_window_min_seconds})"
        )
    if config.bot_backend == "http" and not config.bot_url:
        raise ConfigError(f"{name('bot_url')} is required when the bot backend is http")
    if config.bot_backend == "openai":
        for key in ("openai_base_url", "openai_model"):
            if not getattr(config, key):
                raise ConfigError(f"{name(key)} is required when the bot backend is openai")
    if config.bot_backend == "python" and not config.bot_handler:
        raise ConfigError(f"{name('bot_handler')} is required when the bot backend is python")
    if config.transcribe_backend == "openai" and not (config.transcribe_base_url or config.openai_base_url):
        raise ConfigError(
            f"{name('transcribe_base_url')} (or {name('openai_base_url')}) is required when the"
            " transcription backend is openai"
        )
    if config.chatwoot_base_url and not config.chatwoot_api_token:
        raise ConfigError(f"{name('chatwoot_api_token')} is required when {name('chatwoot_base_url')} is set")
    return config


def _inboxes(raw: Any, company: dict[str, Any], where: str) -> dict[int, CompanyConfig]:
    """Each inbox's settings: the company's, with the inbox's own bot and window."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object of inbox id -> settings")
    inboxes = {}
    for key, overrides in raw.items():
        here = f"{where}.{key}"
        if not str(key).isdecimal() or int(key) <= 0:
            raise ConfigError(f"{where}: {key!r} is not an inbox id")
        if not isinstance(overrides, dict):
            raise ConfigError(f"{here} must be an object")
        refused = sorted(set(overrides) - set(INBOX_FIELDS))
        if refused:
            raise ConfigError(f"{here} may set only {', '.join(INBOX_FIELDS)}; not {', '.join(refused)}")
        parsed = _parse_fields(
            overrides, {k: COMPANY_FIELDS[k] for k in INBOX_FIELDS}, upper=False, where=here
        )
        inboxes[int(key)] = _check_company(CompanyConfig(**{**company, **parsed}), here)
    return inboxes


def _companies_from_file(path: str) -> dict[str, CompanyConfig]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"COMPANIES_FILE {path!r} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"COMPANIES_FILE {path!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("companies")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"COMPANIES_FILE {path!r} must hold a non-empty list of objects")
    companies: dict[str, CompanyConfig] = {}
    for index, entry in enumerate(data):
        where = f"COMPANIES_FILE[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object")
        unknown = sorted(set(entry) - set(COMPANY_FIELDS) - {"inboxes"})
        if unknown:
            raise ConfigError(f"{where} has unknown settings: {', '.join(unknown)}")
        if "company_id" not in entry:
            raise ConfigError(f"{where}.company_id is required")
        values = _parse_fields(entry, COMPANY_FIELDS, upper=False, where=where)
        inboxes = _inboxes(entry.get("inboxes", {}), values, f"{where}.inboxes")
        config = _check_company(CompanyConfig(**values, inboxes=inboxes), where)
        if config.company_id in companies:
            raise ConfigError(f"{where}.company_id {config.company_id!r} appears twice")
        companies[config.company_id] = config
    return companies


_CERT_REQS = ("required", "optional", "none")


def _tls_verified(url: str) -> str:
    """A ``rediss://`` URL with its certificate check spelled out: ``ssl_cert_reqs``
    defaults to ``required`` (Celery refuses a rediss URL without it, and a TLS
    connection that checks nothing is no protection); ``ssl_ca_certs=<file>`` names
    a private CA (else the system's are used)."""
    parsed = urlparse(url)
    if parsed.scheme != "rediss":
        return url
    query = parse_qs(parsed.query, keep_blank_values=True)
    given = query.get("ssl_cert_reqs", ["required"])[-1].strip().lower().removeprefix("cert_")
    if given not in _CERT_REQS:
        raise ConfigError(f"REDIS_URL's ssl_cert_reqs must be required, optional or none, got {given!r}")
    query["ssl_cert_reqs"] = [given]
    ca = query.get("ssl_ca_certs", [""])[-1]
    if ca and not os.path.isfile(ca):
        raise ConfigError(f"REDIS_URL's ssl_ca_certs file {ca!r} does not exist")
    return urlunparse(parsed._replace(query=urlencode(query, doseq=True)))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings from ``environ`` (default: os.environ)."""
    env = dict(os.environ if environ is None else environ)
    redis_url = env.get("REDIS_URL", "").strip()
    if not redis_url:
        raise ConfigError("REDIS_URL is not set (start.sh starts an embedded Redis when unset)")
    if urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    redis_url = _tls_verified(redis_url)
    if env.get("COMPANIES_FILE", "").strip():
        companies = _companies_from_file(env["COMPANIES_FILE"].strip())
    else:
        values = _parse_fields(env, COMPANY_FIELDS, upper=True)
        values.setdefault("company_id", "default")
        company = _check_company(CompanyConfig(**values), "")
        companies = {company.company_id: company}
    values = _parse_fields(env, GLOBAL_FIELDS, upper=True)
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    log_format = env.get("LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")
    settings = Settings(
        redis_url=redis_url, companies=companies, log_level=level, log_format=log_format, **values
    )
    slowest = max(companies.values(), key=_longest_batch)
    if settings.run_max_seconds <= _longest_batch(slowest):
        transcribes = slowest.transcribe_backend == "openai"
        raise ConfigError(
            f"RUN_MAX_SECONDS ({settings.run_max_seconds:g}) must be more than twice the longest"
            f" BOT_TIMEOUT_SECONDS ({slowest.bot_timeout_seconds:g})"
            + (
                f" plus TRANSCRIBE_BUDGET_SECONDS ({slowest.transcribe_budget_seconds:g})"
                if transcribes
                else ""
            )
            + ": a run "
            + ("transcribes a batch's voice notes, " if transcribes else "")
            + "asks the bot and then posts its answer"
        )
    return settings


def _longest_batch(config: CompanyConfig) -> float:
    """The longest one batch of ``config`` may take: its voice notes' transcription budget
    (TRANSCRIBE_BACKEND=openai), the bot's timeout, and as long again to post the answer."""
    budget = config.transcribe_budget_seconds if config.transcribe_backend == "openai" else 0.0
    return budget + 2 * config.bot_timeout_seconds
