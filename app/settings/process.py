"""The process's settings (``Settings``): Redis, the web and the worker, and every
company's ``CompanyConfig`` by id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from app.settings.company import CompanyConfig
from app.settings.fields import (
    LOG_FORMATS,
    LOG_LEVELS,
    STATUS_PASSWORD_MIN_CHARS,
    _non_negative_int,
    _one_of,
    _positive_float,
    _positive_int,
    _str,
    _user_password,
    is_bcrypt,
)

__all__ = ["Settings"]


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
    log_level: str = field(default="INFO", metadata={"parse": _one_of(LOG_LEVELS, upper=True)})
    log_format: str = field(default="text", metadata={"parse": _one_of(LOG_FORMATS)})

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
