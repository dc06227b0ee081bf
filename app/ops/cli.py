"""Operator commands: ``python -m app <command> [options]`` (``--help`` on each).

With ``REDIS_URL`` unset and ``make run``'s data directory present (``DATA_DIR``,
default ``./data``), the commands talk to its embedded Redis
(127.0.0.1:``EMBEDDED_REDIS_PORT``, default 6399).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from app.batching.report import plot, report, smart_estimate
from app.bots import load_handler
from app.ops.dead_letters import is_ambiguous, list_dead_letters, replay_dead_letters
from app.ops.queries import busiest as busiest_states
from app.ops.queries import conversation_state
from app.ops.queries import purge as purge_conversation
from app.settings import ConfigError, Settings, load_settings
from app.settings.load import masked
from app.store import keys
from app.store.client import check, connect
from app.store.scripts import Scripts


def _embedded_redis_default() -> None:
    """``make run`` without REDIS_URL started an embedded Redis: talk to it."""
    if os.environ.get("REDIS_URL", "").strip():
        return
    folder = Path(os.environ.get("DATA_DIR", "data")) / "redis"
    if folder.is_dir():
        port = os.environ.get("EMBEDDED_REDIS_PORT", "6399")
        password = (folder / "password").read_text().strip() if (folder / "password").is_file() else ""
        auth = f":{password}@" if password else ""
        os.environ["REDIS_URL"] = f"redis://{auth}127.0.0.1:{port}/0"
        click.echo(f"REDIS_URL is unset: using make run's embedded Redis on 127.0.0.1:{port}", err=True)


def _settings() -> Settings:
    _embedded_redis_default()
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)


def _company(settings: Settings, company: str | None) -> str:
    """The company a command acts on: ``--company``, which is required when there are
    several (a default would act on whichever came first)."""
    names = list(settings.companies)
    if company is None and len(names) > 1:
        click.echo(f"several companies are configured ({', '.join(names)}): pass --company", err=True)
        sys.exit(2)
    chosen = company or names[0]
    if chosen not in settings.companies:
        click.echo(f"unknown company {chosen!r} (configured: {', '.join(names)})", err=True)
        sys.exit(2)
    return chosen


def _confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; without a terminal, only ``--yes`` goes on."""
    if yes:
        return
    if not sys.stdin.isatty():
        click.echo(f"{question} — no terminal to ask on: pass --yes", err=True)
        sys.exit(2)
    if not click.confirm(question, default=False):
        click.echo("nothing done")
        sys.exit(1)


def _redis_fit(settings: Settings) -> bool:
    """Check the Redis the gateway is given (``app.store.client.check``); print why not."""
    problems, warnings = check(settings.redis_url)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in problems:
        click.echo(f"configuration error: {problem}", err=True)
    return not problems


company_option = click.option("--company", help="company id (default: the first configured)")
conversation_argument = click.argument("conversation", type=click.IntRange(min=0))


@click.group(help=__doc__)
def cli() -> None:
    pass


@cli.command("check-config")
def check_config() -> None:
    """Validate the configuration and the Redis it names; exit 2 naming the problem."""
    settings = _settings()
    for served in settings.served():  # each company's bot, and each inbox's own
        if served.bot_backend == "python" and served.bot_handler:
            try:
                load_handler(served.bot_handler)
            except ConfigError as exc:
                click.echo(f"configuration error: {exc}", err=True)
                sys.exit(2)
    for warning in settings.warnings():
        click.echo(f"warning: {warning}", err=True)
    for company in settings.companies.values():
        for warning in company.warnings():
            click.echo(f"warning: company {company.company_id!r}: {warning}", err=True)
        if not company.has_webhook_auth:
            click.echo(
                f"warning: company {company.company_id!r} has no CHATWOOT_WEBHOOK_SECRET or"
                " WEBHOOK_TOKEN: every webhook will be refused (401)",
                err=True,
            )
    if not _redis_fit(settings):
        sys.exit(2)
    click.echo(f"configuration ok: {len(settings.companies)} company(ies)")


@cli.command("show-config")
def show_config() -> None:
    """Print the effective configuration, secrets masked."""
    settings = _settings()
    click.echo(json.dumps({cid: masked(c) for cid, c in settings.companies.items()}, indent=2))


@cli.command("dead-letters")
@company_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def dead_letters(company: str | None, limit: int) -> None:
    """List the dead letters, oldest first (one JSON line each, no message bodies)."""
    settings = _settings()
    client = connect(settings.redis_url)
    for entry in list_dead_letters(client, _company(settings, company), limit):
        summary = {k: v for k, v in entry.items() if k != "messages"} | {
            "messages": len(entry.get("messages", []))
        }
        click.echo(json.dumps(summary))


@cli.command()
@company_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def outbox(company: str | None, limit: int) -> None:
    """The dry-run outbox (no CHATWOOT_BASE_URL): what the gateway would have posted to
    Chatwoot, newest last, one JSON line each."""
    settings = _settings()
    client = connect(settings.redis_url)
    cid = _company(settings, company)
    entries = client.lrange(keys.outbox(cid), -limit, -1)
    if not entries:
        click.echo(
            f"the outbox of {cid!r} is empty (replies land there while CHATWOOT_BASE_URL is unset)", err=True
        )
    for raw in entries:
        click.echo(raw)


@cli.command("hash-password")
@click.option("--cost", type=click.IntRange(4, 15), default=12, show_default=True)
def hash_password(cost: int) -> None:
    """Read a password on standard input; print its bcrypt hash, for STATUS_BASIC_AUTH
    (user:<hash>): the environment then holds no password."""
    import bcrypt

    password = sys.stdin.readline().rstrip("\n")
    if not password:
        click.echo("no password on standard input", err=True)
        sys.exit(2)
    click.echo(bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode())


@cli.command("replay-dead-letters")
@company_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="only the oldest N")
@click.option(
    "--include-ambiguous",
    is_flag=True,
    help="also the ambiguous ones (their reply may have reached the contact: a second answer)",
)
@click.option("--yes", is_flag=True, help="do not ask")
def replay(company: str | None, limit: int | None, include_ambiguous: bool, yes: bool) -> None:
    """Re-queue the dead letters in order; the dispatcher hands them to the bot again."""
    settings = _settings()
    cid = _company(settings, company)
    client = connect(settings.redis_url)
    entries = list_dead_letters(client, cid, settings.dead_letter_max)
    ambiguous = sum(1 for e in entries if is_ambiguous(e))
    chosen = len(entries) - (0 if include_ambiguous else ambiguous)
    if limit is not None:
        chosen = min(chosen, limit)
    note = "" if include_ambiguous or not ambiguous else f" ({ambiguous} ambiguous one(s) skipped)"
    _confirm(f"re-queue {chosen} dead letter(s) of company {cid!r}{note}?", yes)
    done = replay_dead_letters(
        client, Scripts(client), cid, settings.queue_ttl_seconds, limit, include_ambiguous
    )
    skipped = f"; {done.ambiguous_skipped} ambiguous left in the list" if done.ambiguous_skipped else ""
    click.echo(
        f"re-queued {done.messages} message(s) of {done.letters} dead letter(s) of company {cid!r}{skipped}"
    )


@cli.command()
@company_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def busiest(company: str | None, limit: int) -> None:
    """Conversations with work in flight: depth, lease holder and TTL, oldest age."""
    settings = _settings()
    for state in busiest_states(connect(settings.redis_url), _company(settings, company), limit):
        click.echo(json.dumps(state.as_dict()))


@cli.command("opted-out")
@company_option
@click.option(
    "--clear", "contact", help="take this Chatwoot contact id off the list: the bot answers them again"
)
def opted_out(company: str | None, contact: str | None) -> None:
    """Contacts that opted out of the bot (OPT_OUT_KEYWORDS), one Chatwoot contact id a line."""
    settings = _settings()
    client, cid = connect(settings.redis_url), _company(settings, company)
    if contact is None:
        for member in sorted(client.smembers(keys.opted_out(cid)), key=lambda m: (len(m), m)):
            click.echo(member)
        return
    if not client.srem(keys.opted_out(cid), contact):
        click.echo(f"contact {contact!r} is not opted out in company {cid!r}", err=True)
        sys.exit(1)
    click.echo(f"contact {contact} opted in again: the bot answers them")


@cli.command()
@conversation_argument
@company_option
def show(conversation: int, company: str | None) -> None:
    """One conversation: queue, in flight, lease, handoff."""
    settings = _settings()
    state = conversation_state(connect(settings.redis_url), _company(settings, company), str(conversation))
    click.echo(json.dumps(state.as_dict(), indent=2))


@cli.command()
@conversation_argument
@company_option
@click.option("--yes", is_flag=True, help="do not ask")
def purge(conversation: int, company: str | None, yes: bool) -> None:
    """Drop a conversation's waiting and in-flight messages."""
    settings = _settings()
    cid, client = _company(settings, company), connect(settings.redis_url)
    state = conversation_state(client, cid, str(conversation))
    total = state.waiting + state.in_flight
    _confirm(f"drop {total} message(s) of conversation {conversation} of company {cid!r}?", yes)
    dropped = purge_conversation(client, Scripts(client), cid, str(conversation))
    click.echo(f"dropped {dropped} message(s) of conversation {conversation} of company {cid!r}")


@cli.command()
@click.option("--company", help="company id (default: every configured company)")
@click.option("--png", type=click.Path(dir_okay=False), help="also draw the histogram into this PNG file")
def analytics(company: str | None, png: str | None) -> None:
    """The batching report, per company: gaps, what the window merges, the windows for
    90/95/99 %, and what the smart window would have merged and waited on the same
    fragments (decide before setting BATCH_WINDOW_MODE=smart)."""
    settings = _settings()
    chosen = [_company(settings, company)] if company else list(settings.companies)
    if png and len(chosen) > 1:
        click.echo("--png draws one company: pass --company too", err=True)
        sys.exit(2)
    client = connect(settings.redis_url)
    for cid in chosen:
        config = settings.companies[cid]
        result = report(client, cid, config.batch_window_seconds)
        click.echo(result.text())
        click.echo(smart_estimate(client, config).text())
        if png:
            try:
                plot(result, png)
            except ImportError:
                click.echo(
                    "--png needs matplotlib, which the image leaves out (it serves only this drawing):"
                    " pip install matplotlib",
                    err=True,
                )
                sys.exit(2)
            click.echo(f"histogram written to {png}")


def main() -> None:
    """``python -m app``."""
    cli(prog_name="python -m app")
