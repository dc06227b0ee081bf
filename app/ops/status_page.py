"""The HTML of /status: one section per company (figures, the busiest and the
human-held conversations, the dead letters with their replay forms, the gap
histogram as inline SVG), no script at all."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

from flask import Response, url_for

from app.batching.analytics import SAME_BURST_SECONDS, GapReport
from app.batching.report import SmartEstimate, report, smart_estimate
from app.metrics import Stat
from app.ops.dead_letters import is_ambiguous
from app.ops.queries import busiest, in_the_last
from app.ops.status_guard import token
from app.settings import CompanyConfig
from app.store import keys
from app.store.client import redis_now

__all__ = ["ago", "company_section", "in_chatwoot", "page", "table"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1em;max-width:60em}table{border-collapse:collapse}"
    "td,th{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left}.bad{color:#b00}"
    "h2{margin-top:1.5em}form{display:inline}"
)


def page(title: str, body: str) -> Response:
    html = (
        f"<!doctype html><html><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<meta http-equiv=refresh content=30><title>{escape(title)}</title><style>{_STYLE}</style>"
        f"</head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(html, mimetype="text/html")


def table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def company_section(client: Any, config: CompanyConfig, now: float) -> str:
    company, window = config.company_id, config.batch_window_seconds
    stats = client.hgetall(keys.stats(company))
    gauges = client.hgetall(keys.gauges(company))
    age = now - float(gauges.get("at", now)) if gauges else None

    def stat(name: Stat) -> int:
        return int(stats.get(name.value, 0))

    rows: list[tuple[str, Any]] = [
        ("messages waiting or in flight", gauges.get("waiting", "not summed yet")),
        ("oldest waiting message", f"{float(gauges.get('oldest_age_seconds', 0)):.0f} s" if gauges else "—"),
        ("conversations with a live lease", gauges.get("live_leases", "—")),
        (
            "waiting for a free worker slot",
            f"{gauges.get('waiting_for_slot', 0)} conversation(s), the earliest for"
            f" {float(gauges.get('slot_wait_seconds', 0)):.0f} s"
            if gauges
            else "—",
        ),
        (
            "those figures summed",
            ago(age) if age is not None else "never (is a worker's housekeeping running?)",
        ),
        ("dead letters waiting", client.llen(keys.dead_letters(company))),
        ("replies sent / failed in the last hour", _last_hour(client, company, now)),
        (
            "replies sent / failed (since the counters began)",
            f"{stat(Stat.REPLIES_SENT)} / {stat(Stat.REPLIES_FAILED)}",
        ),
        ("conversations held by humans now", _held_by_humans(client, company)),
        ("contacts opted out of the bot (OPT_OUT_KEYWORDS)", client.scard(keys.opted_out(company))),
        ("the bot's spend today, UTC (BOT_PRICES; BOT_SPEND_PER_DAY)", _spend_today(client, config)),
        (
            "handed to humans: by the bot / by an agent's reply",
            f"{stat(Stat.HANDOFFS)} / {stat(Stat.AGENT_TAKEOVERS)}",
        ),
    ]
    parts = [f"<h2>{escape(company)}</h2>", table(rows), "<h3>Busiest conversations</h3>"]
    states = busiest(client, company, 10)
    if states:
        accounts = client.hmget(keys.session_accounts(company), [s.conversation for s in states])
        lines = "".join(
            f"<tr><td><a href='{_link(company, s.conversation)}'>"
            f"{escape(s.conversation)}</a></td><td>{s.waiting}</td><td>{s.in_flight}</td>"
            f"<td>{escape(s.lease_holder or '')}</td><td>{(s.oldest_age_seconds or 0):.0f} s</td>"
            f"<td>{in_chatwoot(config, account, s.conversation)}</td></tr>"
            for s, account in zip(states, accounts, strict=True)
        )
        parts.append(
            "<table><tr><th>conversation</th><th>waiting</th><th>in flight</th><th>lease</th>"
            f"<th>oldest</th><th></th></tr>{lines}</table>"
        )
    else:
        parts.append("<p>none: every conversation is answered</p>")
    parts.append(_dead_letters(client, config))
    parts.append(_batching(report(client, company, window)))
    parts.append(_smart(smart_estimate(client, config)))
    return "".join(parts)


def _smart(estimate: SmartEstimate) -> str:
    """What BATCH_WINDOW_MODE=smart would do on the company's logged fragments, next to
    its current mode (the end of ``python -m app analytics``)."""
    if not estimate.fragments:
        return ""
    rows = []
    for name, result in ((f"current ({estimate.mode})", estimate.current), ("smart", estimate.smart)):
        merged, calls, p50, p90, end = result.row()
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{merged:.1%}</td><td>{calls:.1f}</td>"
            f"<td>{p50:.1f} s</td><td>{p90:.1f} s</td><td>{end:.1f} s</td></tr>"
        )
    return (
        f"<h3>The smart window on the latest {estimate.fragments} fragments"
        f" ({estimate.contacts} contacts)</h3><table><tr><th>mode</th><th>pairs merged</th>"
        "<th>bot calls / 100 messages</th><th>single-message wait p50</th><th>p90</th>"
        f"<th>burst end wait p50</th></tr>{''.join(rows)}</table>"
    )


def _last_hour(client: Any, company: str, now: float) -> str:
    found = in_the_last(client, company, 3600, now)
    if found is None:
        return "— (the worker's gauges pass keeps the history)"
    grown, span = found
    over = "" if span >= 3500 else f" (over the last {span / 60:.0f} min: history is that short)"
    return f"{grown['replies_sent']} / {grown['replies_failed']}{over}"


def _spend_today(client: Any, config: CompanyConfig) -> str:
    if not config.bot_prices and not config.bot_spend_per_day:
        return "— (BOT_PRICES unset)"
    day = time.strftime("%Y-%m-%d", time.gmtime(redis_now(client)))
    spent = float(client.get(keys.bot_spend_day(config.company_id, day)) or 0)
    ceiling = f" of {config.bot_spend_per_day:g}" if config.bot_spend_per_day else ""
    return f"{spent:.4f}{ceiling}"


def _held_by_humans(client: Any, company: str, most: int = 10_000) -> str:
    """Handoff markers present now (a bot handoff or an agent's takeover), counted up to ``most``."""
    count = 0
    for _ in client.scan_iter(match=keys.handoff(company, "*"), count=1000):
        count += 1
        if count >= most:
            return f"{most:,}+"
    return str(count)


def _dead_letters(client: Any, config: CompanyConfig) -> str:
    company = config.company_id
    raws = client.lrange(keys.dead_letters(company), 0, 49)
    if not raws:
        return "<h3>Dead letters</h3><p>none</p>"
    form_token = token(client, company)
    action = url_for("status.replay", company=company)
    rows = []
    for index, raw in enumerate(raws):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"stage": "unreadable"}
        ambiguous = is_ambiguous(entry)
        form = (
            f"<form method=post action='{action}'><input type=hidden name=index value={index}>"
            f"<input type=hidden name=token value={form_token}>"
            f"<label><input type=checkbox name=confirm value=yes required> sure</label>"
            + (
                "<label><input type=checkbox name=ambiguous value=yes required> it may already have"
                " been answered</label>"
                if ambiguous
                else ""
            )
            + "<button>replay</button></form>"
        )
        rows.append(
            f"<tr><td>{escape(str(entry.get('conversation_id', '?')))}"
            f" {in_chatwoot(config, _account_of(entry), str(entry.get('conversation_id', '')))}</td>"
            f"<td>{escape(str(entry.get('stage')))}</td>"
            f"<td>{escape(str(entry.get('error', ''))[:200])}</td><td>{len(entry.get('messages') or [])}</td>"
            f"<td>{'yes' if ambiguous else ''}</td><td>{form}</td></tr>"
        )
    everything = (
        f"<form method=post action='{url_for('status.replay_all', company=company)}'>"
        f"<input type=hidden name=token value={form_token}>"
        "<label><input type=checkbox name=confirm value=yes required> sure</label>"
        "<label><input type=checkbox name=ambiguous value=yes> the ambiguous ones too</label>"
        "<button>replay all</button></form>"
    )
    return (
        f"<h3>Dead letters (oldest first)</h3><p>{everything}</p>"
        "<table><tr><th>conversation</th><th>stage</th><th>error</th>"
        f"<th>messages</th><th>ambiguous</th><th></th></tr>{''.join(rows)}</table>"
    )


def _batching(result: GapReport) -> str:
    """The gap histogram as inline SVG, the window and the 90/95/99 % lines, in words too."""
    if not result.pairs:
        return "<h3>Batching</h3><p>no fragment pairs recorded yet</p>"
    shown = [(b, c) for b, c in result.buckets if b <= SAME_BURST_SECONDS]
    most = max((c for _, c in shown), default=0)
    width, height, scale = 600, 200, 600 / SAME_BURST_SECONDS
    bars, lower = [], 0.0
    for bound, count in shown:
        h = (count / most) * (height - 20) if most else 0
        bars.append(
            f"<rect x={lower * scale:.1f} y={height - h:.1f}"
            f" width={max(1.0, (bound - lower) * scale - 1):.1f}"
            f" height={h:.1f} fill='#4c72b0'><title>≤ {bound:g} s: {count}</title></rect>"
        )
        lower = bound
    lines = [_vline(result.window * scale, height, "stroke='#c44e52'")]
    words = [
        f"current window {result.window:g} s merges"
        f" {result.merged_same_burst_share():.0%} of same-burst pairs"
    ]
    for share in (0.90, 0.95, 0.99):
        bound = result.window_for(share)
        if bound is not None:
            x = min(bound, SAME_BURST_SECONDS) * scale
            lines.append(_vline(x, height, "stroke='#55a868' stroke-dasharray=4"))
            words.append(f"{share:.0%} of them: {bound:g} s")
    advised = result.window_for(0.95)
    if advised is not None and advised != result.window:
        words.append(f"to merge 95 % of same-burst pairs, set BATCH_WINDOW_SECONDS to {advised:g}")
    svg = (
        f"<svg viewBox='0 0 {width} {height}' width=100% role=img aria-label='gap histogram'>"
        f"{''.join(bars)}{''.join(lines)}</svg>"
    )
    title = f"<h3>Batching: gaps between fragments (up to {SAME_BURST_SECONDS:g} s)</h3>"
    return f"{title}{svg}<p>{escape('; '.join(words))}</p>"


def _vline(x: float, height: int, style: str) -> str:
    return f"<line x1={x:.1f} x2={x:.1f} y1=0 y2={height} {style}/>"


def in_chatwoot(config: CompanyConfig, account: Any, conversation: str) -> str:
    """A link to the conversation in Chatwoot's dashboard, where an operator acts on it
    (when the account is known: from the conversation's session, or its dead letter)."""
    account = str(account or "")
    if not (config.chatwoot_base_url and account.isdecimal() and conversation.isdecimal()):
        return ""
    url = f"{config.chatwoot_base_url}/app/accounts/{account}/conversations/{conversation}"
    return f"<a href='{escape(url)}' target=_blank rel=noopener>in Chatwoot</a>"


def _account_of(entry: dict) -> str:
    """The account of a dead letter's conversation, from its first stored message."""
    for raw in entry.get("messages") or []:
        try:
            return str(json.loads(raw).get("account_id") or "")
        except (ValueError, AttributeError):
            return ""
    return ""


def _link(company: str, conversation: str) -> str:
    return url_for("status.conversation", company=company, conversation=conversation)
