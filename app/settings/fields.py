"""The parts every setting is made of: its parser (one per kind of value, each
raising ``ConfigError`` naming the variable), the choices of the settings that are
one of a few (``WindowMode``, ``BotBackend``, ``Integration``)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlparse

from app.errors import GatewayError


class WindowMode(StrEnum):
    """BATCH_WINDOW_MODE: how a batch's quiet period is chosen (docs/design.md, "Batching")."""

    FIXED = "fixed"
    SLIDING = "sliding"
    LEARNED = "learned"
    SMART = "smart"


class BotBackend(StrEnum):
    """BOT_BACKEND: how the bot is asked (app/bots/)."""

    ECHO = "echo"
    HTTP = "http"
    OPENAI = "openai"
    PYTHON = "python"


class Integration(StrEnum):
    """CHATWOOT_INTEGRATION: an Agent Bot inbox, or an account webhook (README, "Point Chatwoot at it")."""

    AGENT_BOT = "agent_bot"
    WEBHOOK = "webhook"


class BotMode(StrEnum):
    """BOT_MODE: the bot answers the contact, or drafts a private note for the agents."""

    ANSWER = "answer"
    DRAFT = "draft"


class ContextPart(StrEnum):
    """BOT_CONTEXT: what of the conversation the bot is told beyond its messages
    (app/chatwoot/context.py reads each from Chatwoot's payload)."""

    LABELS = "labels"
    CONVERSATION_ATTRIBUTES = "conversation_attributes"
    CONTACT_ATTRIBUTES = "contact_attributes"
    REFERRAL = "referral"
    INBOX = "inbox"
    ASSIGNEE = "assignee"
    TEAM = "team"
    QUOTED = "quoted"


CONTEXT_PARTS = tuple(ContextPart)
BOT_MODES = tuple(BotMode)
BOT_BACKENDS = tuple(BotBackend)
INTEGRATIONS = tuple(Integration)
WINDOW_MODES = tuple(WindowMode)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
STATUS_PASSWORD_MIN_CHARS = 16
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_COMPANY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(GatewayError, ValueError):
    """A configuration value is missing or invalid; the message names it."""


# The parsers: (variable name, raw text) -> value, raising ConfigError naming the variable.
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


def _one_of(choices: tuple[str, ...], upper: bool = False) -> Callable[[str, str], str]:
    """A parser accepting one of ``choices``, case-insensitive (kept upper case if ``upper``)."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
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


def _context_parts(name: str, raw: str) -> tuple[ContextPart, ...]:
    """A comma-separated list of ``ContextPart`` names, ``all``, or ``none`` (or nothing)."""
    words = [w.strip().lower() for w in raw.split(",") if w.strip()]
    if words == ["all"]:
        return CONTEXT_PARTS
    if not words or words == ["none"]:
        return ()
    unknown = [w for w in words if w not in CONTEXT_PARTS]
    if unknown:
        raise ConfigError(
            f"{name}: unknown part {', '.join(map(repr, unknown))}; a comma-separated list of"
            f" {', '.join(CONTEXT_PARTS)}, or all, or none"
        )
    return tuple(ContextPart(w) for w in dict.fromkeys(words))


@dataclass(frozen=True)
class Price:
    """What a model costs per million tokens, in the operator's currency (BOT_PRICES)."""

    model: str
    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


_PRICE = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def _prices(name: str, raw: str) -> tuple[Price, ...]:
    """``model=input/output`` per million tokens, comma-separated: ``gpt-4o-mini=0.15/0.60``."""
    prices = []
    for entry in (e for e in raw.split(",") if e.strip()):
        found = _PRICE.match(entry)
        if not found:
            raise ConfigError(
                f"{name}: {entry.strip()!r} is not model=input/output (prices per million tokens,"
                " e.g. gpt-4o-mini=0.15/0.60)"
            )
        prices.append(Price(found.group(1), float(found.group(2)), float(found.group(3))))
    if not prices:
        raise ConfigError(f"{name} must list model=input/output prices, got {raw!r}")
    return tuple(prices)


@dataclass(frozen=True)
class WindowTemplate:
    """SERVICE_WINDOW_TEMPLATE: the approved WhatsApp template posted instead of free text
    outside the 24-hour window; ``params`` may say ``{name}`` (the contact's) and ``{text}``
    (what the bot would have said)."""

    name: str
    language: str
    category: str = "UTILITY"
    params: tuple[str, ...] = ()

    def render(self, contact_name: str, text: str) -> tuple[str, ...]:
        return tuple(p.replace("{name}", contact_name).replace("{text}", text)[:1024] for p in self.params)


def _window_template(name: str, raw: str) -> WindowTemplate:
    """``{"name": …, "language": …, "category"?: …, "params"?: […]}``."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f'{name} must be JSON: {{"name": …, "language": …, "params": [...]}}') from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ConfigError(f'{name} must name the template: {{"name": …, "language": …}}')
    language, category = data.get("language"), data.get("category", "UTILITY")
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", language):
        raise ConfigError(
            f"{name}: 'language' must be a WhatsApp language code such as pt_BR, got {language!r}"
        )
    params = data.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params) or len(params) > 10:
        raise ConfigError(f"{name}: 'params' must be a list of at most 10 strings")
    unknown = set(data) - {"name", "language", "category", "params"}
    if unknown or not isinstance(category, str):
        raise ConfigError(f"{name}: unknown member(s) {sorted(unknown)}; name, language, category, params")
    return WindowTemplate(data["name"].strip(), language, category.upper(), tuple(params))


def _minutes(name: str, raw: str) -> tuple[float, ...]:
    """Increasing positive minutes, comma-separated: ``30,240``."""
    try:
        marks = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated minutes, e.g. 30,240, got {raw!r}") from None
    if not marks or any(m <= 0 for m in marks) or list(marks) != sorted(set(marks)) or len(marks) > 10:
        raise ConfigError(f"{name} must be up to 10 increasing positive minutes, e.g. 30,240, got {raw!r}")
    return marks


def _messages(name: str, raw: str) -> tuple[str, ...]:
    """Messages separated by ``|`` (a message may hold commas)."""
    found = tuple(m.strip() for m in raw.split("|") if m.strip())
    if not found:
        raise ConfigError(f"{name} must be messages separated by |, got {raw!r}")
    return found


def _non_negative_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a number of 0 or more, got {raw!r}")
    return value


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
