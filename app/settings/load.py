"""Reading the settings: from the environment (upper case), a COMPANIES_FILE (lower
case, per company and per inbox), with the cross-field checks and the TLS rule for
``rediss://`` URLs."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from app.logs import mask_secrets
from app.settings.company import CompanyConfig
from app.settings.fields import ConfigError
from app.settings.process import Settings

_Parser = Callable[[str, str], Any]


def _parsers(cls: type) -> dict[str, _Parser]:
    """name -> parser of every field of ``cls`` that comes from the environment or
    COMPANIES_FILE: the parser is declared with the field (its ``metadata``)."""
    return {f.name: f.metadata["parse"] for f in fields(cls) if "parse" in f.metadata}


COMPANY_FIELDS: dict[str, _Parser] = _parsers(CompanyConfig)
# What an inbox of a company may set for itself (COMPANIES_FILE "inboxes"): its bot and
# its window, the fields declared ``inbox`` in their metadata. Keys, secrets, Chatwoot
# and the company's policies stay the company's.
INBOX_FIELDS = tuple(f.name for f in fields(CompanyConfig) if f.metadata.get("inbox"))
# The secrets, never printed: the fields kept out of ``repr``.
SECRET_FIELDS = tuple(f.name for f in fields(CompanyConfig) if not f.repr and "parse" in f.metadata)
GLOBAL_FIELDS: dict[str, _Parser] = _parsers(Settings)
# How a list in COMPANIES_FILE is joined for its field's parser: commas, unless the
# field's items may hold commas (messages, declared with a ``separator``).
SEPARATORS = {f.name: f.metadata.get("separator", ",") for f in fields(CompanyConfig)}


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
        if isinstance(raw, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in raw
        ):
            raw = SEPARATORS.get(key, ",").join(
                str(v) for v in raw
            )  # a list in COMPANIES_FILE: inbox_ids, keywords
        if isinstance(raw, dict):  # an object in COMPANIES_FILE (SERVICE_WINDOW_TEMPLATE): its JSON
            raw = json.dumps(raw)
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
    if config.openai_fallback_base_url and not (config.openai_fallback_model or config.openai_model):
        raise ConfigError(
            f"{name('openai_fallback_model')} is required with {name('openai_fallback_base_url')}"
        )
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
    settings = Settings(redis_url=redis_url, companies=companies, **values)
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


def masked(config: CompanyConfig) -> dict[str, object]:
    """A company's settings as ``python -m app show-config`` prints them: secrets as
    ``***``, URLs without their credentials."""
    data = dataclasses.asdict(config)
    for name in SECRET_FIELDS:
        if data.get(name):
            data[name] = "***"
    for name, value in data.items():
        if name.endswith("_url") and isinstance(value, str):
            data[name] = mask_secrets(value)
    return data
