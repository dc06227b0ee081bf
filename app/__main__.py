"""Operator commands: ``python -m app <command>``.

check-config   validate the environment; print the problem and exit 2 if bad
show-config    print the effective configuration, secrets masked
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from app.settings import CompanyConfig, ConfigError, load_settings

SECRET_FIELDS = ("chatwoot_api_token", "chatwoot_webhook_secret", "webhook_token", "openai_api_key")


def _masked(config: CompanyConfig) -> dict[str, object]:
    data = dataclasses.asdict(config)
    for name in SECRET_FIELDS:
        if data.get(name):
            data[name] = "***"
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["check-config", "show-config"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        for company in settings.companies.values():
            if not company.has_webhook_auth:
                print(
                    f"warning: company {company.company_id!r} has no CHATWOOT_WEBHOOK_SECRET or"
                    " WEBHOOK_TOKEN: every webhook will be refused (401)",
                    file=sys.stderr,
                )
        print(f"configuration ok: {len(settings.companies)} company(ies)")
        return 0
    print(json.dumps({cid: _masked(c) for cid, c in settings.companies.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
