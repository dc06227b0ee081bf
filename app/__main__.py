"""Operator commands: ``python -m app <command>``.

check-config         validate the environment; print the problem and exit 2 if bad
show-config          print the effective configuration, secrets masked
dead-letters         list the dead letters of a company (newest last)
replay-dead-letters  re-queue dead letters in order (--limit N for the oldest N)
busiest              conversations with work in flight: depth, lease holder, oldest age
show CONVERSATION    one conversation's queue, lease and handoff state
purge CONVERSATION   drop a conversation's waiting and in-flight messages (asks first; --yes)
analytics            batching report: gaps between fragments, what the window merges,
                     the window that would merge 90/95/99%, batch sizes (--png FILE draws it)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import redis

from app.analytics import plot, report
from app.bots import load_handler
from app.dead_letters import list_dead_letters, replay_dead_letters
from app.ops import busiest, conversation_state, purge
from app.redis_client import connect, fitness
from app.scripts import Scripts
from app.settings import CompanyConfig, ConfigError, Settings, load_settings

SECRET_FIELDS = ("chatwoot_api_token", "chatwoot_webhook_secret", "webhook_token", "openai_api_key")


def _masked(config: CompanyConfig) -> dict[str, object]:
    data = dataclasses.asdict(config)
    for name in SECRET_FIELDS:
        if data.get(name):
            data[name] = "***"
    return data


def _redis_fit(settings: Settings) -> bool:
    """Check the Redis the gateway is given (``app.redis_client.fitness``); print why not."""
    try:
        problems, warnings = fitness(connect(settings.redis_url))
    except redis.RedisError as exc:
        print(f"warning: Redis not checked, unreachable now ({type(exc).__name__})", file=sys.stderr)
        return True
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"configuration error: {problem}", file=sys.stderr)
    return not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=[
            "check-config",
            "show-config",
            "dead-letters",
            "replay-dead-letters",
            "busiest",
            "show",
            "purge",
            "analytics",
        ],
    )
    parser.add_argument("conversation", nargs="?", help="conversation id (show, purge)")
    parser.add_argument("--yes", action="store_true", help="purge without asking")
    parser.add_argument("--png", help="analytics: also write the histogram to this PNG file")
    parser.add_argument("--company", help="company id (default: the only one configured)")
    parser.add_argument("--limit", type=int, default=None, help="most entries to list or replay")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        for company in settings.companies.values():
            if company.bot_backend == "python" and company.bot_handler:
                try:
                    load_handler(company.bot_handler)
                except ConfigError as exc:
                    print(f"configuration error: {exc}", file=sys.stderr)
                    return 2
            if not company.has_webhook_auth:
                print(
                    f"warning: company {company.company_id!r} has no CHATWOOT_WEBHOOK_SECRET or"
                    " WEBHOOK_TOKEN: every webhook will be refused (401)",
                    file=sys.stderr,
                )
        if not _redis_fit(settings):
            return 2
        print(f"configuration ok: {len(settings.companies)} company(ies)")
        return 0
    if args.command == "show-config":
        print(json.dumps({cid: _masked(c) for cid, c in settings.companies.items()}, indent=2))
        return 0
    return _operate(settings, args)


def _operate(settings: Settings, args: argparse.Namespace) -> int:
    company = args.company or next(iter(settings.companies))
    if company not in settings.companies:
        print(f"unknown company {company!r}", file=sys.stderr)
        return 2
    client = connect(settings.redis_url)
    if args.command in ("show", "purge") and not (args.conversation or "").isdigit():
        print(f"{args.command} needs a conversation id (a number)", file=sys.stderr)
        return 2
    if args.command == "analytics":
        result = report(client, company, settings.companies[company].batch_window_seconds)
        print(result.text())
        if args.png:
            plot(result, args.png)
            print(f"histogram written to {args.png}")
        return 0
    if args.command == "busiest":
        for state in busiest(client, company, args.limit or 20):
            print(json.dumps(state.as_dict()))
        return 0
    if args.command == "show":
        print(json.dumps(conversation_state(client, company, args.conversation).as_dict(), indent=2))
        return 0
    if args.command == "purge":
        state = conversation_state(client, company, args.conversation)
        total = state.waiting + state.in_flight
        if (
            not args.yes
            and input(f"drop {total} message(s) of conversation {args.conversation}? [y/N] ") != "y"
        ):
            print("nothing dropped")
            return 1
        print(f"dropped {purge(client, Scripts(client), company, args.conversation)} message(s)")
        return 0
    if args.command == "dead-letters":
        for entry in list_dead_letters(client, company, args.limit or 50):
            print(
                json.dumps(
                    {k: v for k, v in entry.items() if k != "messages"}
                    | {"messages": len(entry.get("messages", []))}
                )
            )
        return 0
    count = replay_dead_letters(client, Scripts(client), company, settings.queue_ttl_seconds, args.limit)
    print(f"re-queued {count} message(s) of company {company!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
