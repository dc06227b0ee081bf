"""GET /status: what an operator needs without Prometheus, on a phone, without JavaScript.

Behind ``STATUS_BASIC_AUTH`` (``user:password``; the page answers 404 while it is
unset). Every figure comes from the code behind /metrics and the command line:
the stats hash and the worker-summed gauges (``app.ops.queries.refresh_gauges``), the
busiest conversations (``app.ops.queries.busiest``), the dead letters
(``app.ops.dead_letters``) and the gap histogram (``app.batching.analytics.report``), drawn
as inline SVG. A dead letter can be replayed from the page: the form asks for a
confirmation, refuses an ``ambiguous`` entry unless that is confirmed too, and
carries a token so that another site cannot post it with the browser's stored
credentials.

The page is on the public port (review 2026-12-03, findings 5, 7, 8):

* failed logins are limited: ``FAILURES_PER_CLIENT`` a minute from one address (the
  client the proxy saw), ``FAILURES_IN_ALL`` a minute from everyone; past either, 429
  without checking the password until the minute ends. Each failure is counted
  (``gateway_status_auth_failures_total``) and logged, sampled;
* the replay token is HMAC(a random secret kept in Redis, company and hour), the
  current or the previous hour's accepted: it says nothing of the password and
  expires; the form is also refused when the browser says it comes from another site
  (``Sec-Fetch-Site``, ``Origin``);
* every answer forbids framing, sniffing, caching and referrers, with a CSP that
  allows no script at all.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from html import escape
from typing import Any
from urllib.parse import urlparse

import redis
from flask import Blueprint, Response, abort, current_app, redirect, request, url_for

from app.batching.analytics import SAME_BURST_SECONDS, GapReport, SmartEstimate, report, smart_estimate
from app.logs import Sampled
from app.metrics import STATUS_AUTH_FAILURES, Stat
from app.ops.dead_letters import is_ambiguous, read_dead_letter, replay_dead_letters, replay_one
from app.ops.queries import busiest, conversation_state, in_the_last
from app.settings import CompanyConfig, is_bcrypt
from app.store import keys
from app.store.client import redis_now

__all__ = ["bp"]

bp = Blueprint("status", __name__)
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1em;max-width:60em}table{border-collapse:collapse}"
    "td,th{border-bottom:1px solid #ddd;padding:.25em .5em;text-align:left}.bad{color:#b00}"
    "h2{margin-top:1.5em}form{display:inline}"
)


def _credentials() -> tuple[str, str] | None:
    raw = current_app.extensions["gateway"].settings.status_basic_auth
    if not raw:
        return None
    user, _, password = raw.partition(":")
    return user, password


log = logging.getLogger(__name__)
_failure_lines = Sampled(log)
FAILURES_PER_CLIENT, FAILURES_IN_ALL, FAILURE_WINDOW_SECONDS = 10, 100, 60
TOKEN_HOURS = 2  # a page's replay token is accepted this hour and the next
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _client() -> str:
    """The address of whoever asks: the one the container's proxy saw (it sets
    X-Forwarded-For to it, whatever the client sent) when the request came through it,
    else the peer."""
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    try:
        behind_proxy = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        behind_proxy = False
    if forwarded and behind_proxy:
        peer = forwarded.rsplit(",", 1)[-1].strip()
    return peer[:64] or "unknown"


def _throttled(client: redis.Redis, address: str) -> bool:
    counts = client.mget(keys.status_failures(address), keys.status_failures())
    return int(counts[0] or 0) >= FAILURES_PER_CLIENT or int(counts[1] or 0) >= FAILURES_IN_ALL


def _count_failure(client: redis.Redis, address: str) -> None:
    pipe = client.pipeline(transaction=False)
    for key in (keys.status_failures(address), keys.status_failures()):
        pipe.set(key, 0, ex=FAILURE_WINDOW_SECONDS, nx=True)  # the window starts at the first failure
        pipe.incr(key)
    pipe.execute()


def _secret(client: redis.Redis) -> str:
    """The random secret replay tokens are derived from, made on first use."""
    secret = client.get(keys.status_secret())
    if secret is None:
        client.set(keys.status_secret(), secrets.token_hex(32), nx=True)
        secret = client.get(keys.status_secret()) or ""
    return secret


def _sign(secret: str, company: str, hour: int) -> str:
    return hmac.new(secret.encode(), f"replay:{company}:{hour}".encode(), hashlib.sha256).hexdigest()[:32]


def _token(client: redis.Redis, company: str, hour: int | None = None) -> str:
    """The replay form's token for ``company`` in ``hour`` (this one by default)."""
    return _sign(_secret(client), company, int(time.time() // 3600) if hour is None else hour)


def _token_ok(client: redis.Redis, company: str, given: str) -> bool:
    secret, now = _secret(client), int(time.time() // 3600)
    return any(
        hmac.compare_digest(given.encode(), _sign(secret, company, now - back).encode())
        for back in range(TOKEN_HOURS)
    )


def _same_site() -> bool:
    """Does the browser say the form comes from this site? ``Sec-Fetch-Site`` when it sends
    one (every current browser); else an ``Origin`` naming another host is refused. A
    same-origin form post carries ``Origin: null`` under the page's no-referrer policy,
    so "null" alone decides nothing; neither header: not a browser (the token decides)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin", "null")
    return origin == "null" or (urlparse(origin).netloc or "").lower() == request.host.lower()


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


@bp.before_request
def _authenticate():  # type: ignore[no-untyped-def]
    credentials = _credentials()
    if credentials is None:
        abort(404)
    given = request.authorization
    challenge = {"WWW-Authenticate": 'Basic realm="gateway status"'}
    if given is None:  # a browser's first request: not a guess
        return Response("status page: credentials required (STATUS_BASIC_AUTH)", 401, challenge)
    client, address = current_app.extensions["gateway"].redis, _client()
    if _throttled(client, address):
        STATUS_AUTH_FAILURES.labels("throttled").inc()
        _failure_lines.log(logging.WARNING, "throttled", "status page: login throttled client=%s", address)
        return Response(
            "status page: too many failed logins, try again in a minute",
            429,
            {"Retry-After": str(FAILURE_WINDOW_SECONDS)},
        )
    ok = (
        given.type == "basic"
        and hmac.compare_digest((given.username or "").encode(), credentials[0].encode())
        and _password_ok(given.password or "", credentials[1])
    )
    if not ok:
        _count_failure(client, address)
        STATUS_AUTH_FAILURES.labels("wrong_credentials").inc()
        _failure_lines.log(logging.WARNING, "wrong", "status page: wrong credentials client=%s", address)
        return Response("status page: credentials required (STATUS_BASIC_AUTH)", 401, challenge)
    return None


_VERIFIED_SECONDS = 300.0
_verified: dict[bytes, float] = {}  # digest of a password checked against the hash -> when


def _password_ok(given: str, stored: str) -> bool:
    """The given password against STATUS_BASIC_AUTH's: a bcrypt hash is checked with
    bcrypt (a good password is then remembered, as a digest, for five minutes in this
    process: the page refreshes every 30 s and each request carries the password);
    a plain one is compared in constant time."""
    if not is_bcrypt(stored):
        return hmac.compare_digest(given.encode(), stored.encode())
    key = hashlib.sha256(f"{stored}\0{given}".encode()).digest()
    now = time.monotonic()
    if now - _verified.get(key, -_VERIFIED_SECONDS) < _VERIFIED_SECONDS:
        return True
    import bcrypt

    if not bcrypt.checkpw(given.encode(), stored.encode()):
        return False
    if len(_verified) > 100:
        _verified.clear()
    _verified[key] = now
    return True


def _page(title: str, body: str) -> Response:
    html = (
        f"<!doctype html><html><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<meta http-equiv=refresh content=30><title>{escape(title)}</title><style>{_STYLE}</style>"
        f"</head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(html, mimetype="text/html")


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


@bp.get("/status")
def status():  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    client, settings = gateway.redis, gateway.settings
    now = redis_now(client)
    heartbeats = client.zrange(keys.worker_heartbeats(), 0, -1, withscores=True)
    max_age = settings.worker_heartbeat_max_age_seconds
    workers = [
        (name, f"<span class={'' if now - at <= max_age else 'bad'}>{_ago(now - at)}</span>")
        for name, at in heartbeats
    ]
    body = [
        "<h2>Workers</h2>",
        _table(workers) if workers else "<p class=bad>no worker has ever reported</p>",
    ]
    body.append(_table([("spooled in this web process (Redis unreachable)", gateway.spool.backlog())]))
    for config in settings.companies.values():
        body.append(_company_section(client, config, now))
    return _page("Chatwoot gateway", "".join(body))


def _company_section(client: Any, config: CompanyConfig, now: float) -> str:
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
            _ago(age) if age is not None else "never (is a worker's housekeeping running?)",
        ),
        ("dead letters waiting", client.llen(keys.dead_letters(company))),
        ("replies sent / failed in the last hour", _last_hour(client, company, now)),
        (
            "replies sent / failed (since the counters began)",
            f"{stat(Stat.REPLIES_SENT)} / {stat(Stat.REPLIES_FAILED)}",
        ),
        ("conversations held by humans now", _held_by_humans(client, company)),
        (
            "handed to humans: by the bot / by an agent's reply",
            f"{stat(Stat.HANDOFFS)} / {stat(Stat.AGENT_TAKEOVERS)}",
        ),
    ]
    parts = [f"<h2>{escape(company)}</h2>", _table(rows), "<h3>Busiest conversations</h3>"]
    states = busiest(client, company, 10)
    if states:
        accounts = client.hmget(keys.session_accounts(company), [s.conversation for s in states])
        lines = "".join(
            f"<tr><td><a href='{_link(company, s.conversation)}'>"
            f"{escape(s.conversation)}</a></td><td>{s.waiting}</td><td>{s.in_flight}</td>"
            f"<td>{escape(s.lease_holder or '')}</td><td>{(s.oldest_age_seconds or 0):.0f} s</td>"
            f"<td>{_in_chatwoot(config, account, s.conversation)}</td></tr>"
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
    token = _token(client, company)
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
            f"<input type=hidden name=token value={token}>"
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
            f" {_in_chatwoot(config, _account_of(entry), str(entry.get('conversation_id', '')))}</td>"
            f"<td>{escape(str(entry.get('stage')))}</td>"
            f"<td>{escape(str(entry.get('error', ''))[:200])}</td><td>{len(entry.get('messages') or [])}</td>"
            f"<td>{'yes' if ambiguous else ''}</td><td>{form}</td></tr>"
        )
    everything = (
        f"<form method=post action='{url_for('status.replay_all', company=company)}'>"
        f"<input type=hidden name=token value={token}>"
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


def _in_chatwoot(config: CompanyConfig, account: Any, conversation: str) -> str:
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


def _checked_post(company: str) -> Any:
    """The gateway, for a replay form of a known company that carries the page's token
    (else 404 or 403)."""
    gateway = current_app.extensions["gateway"]
    if gateway.settings.company(company) is None:
        abort(404)
    if not _same_site() or not _token_ok(gateway.redis, company, request.form.get("token", "")):
        abort(403)
    return gateway


@bp.post("/status/<company>/dead-letters/replay-all")
def replay_all(company: str):  # type: ignore[no-untyped-def]
    gateway = _checked_post(company)
    if request.form.get("confirm") != "yes":
        return _page("Not replayed", "<p>tick “sure” to replay</p>"), 400
    replay_dead_letters(
        gateway.redis,
        gateway.scripts,
        company,
        gateway.settings.queue_ttl_seconds,
        include_ambiguous=request.form.get("ambiguous") == "yes",
    )
    return redirect(url_for("status.status"), code=303)


@bp.get("/status/<company>/conversations/<conversation>")
def conversation(company: str, conversation: str):  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    if gateway.settings.company(company) is None or not conversation.isdecimal():
        abort(404)
    state = conversation_state(gateway.redis, company, conversation)
    rows = [(k, escape(str(v))) for k, v in state.as_dict().items()]
    account = gateway.redis.hget(keys.session_accounts(company), conversation)
    chatwoot = _in_chatwoot(gateway.settings.companies[company], account, conversation)
    back = f"<p>{chatwoot} <a href='{url_for('status.status')}'>back</a></p>"
    return _page(f"{company}: conversation {conversation}", _table(rows) + back)


@bp.post("/status/<company>/dead-letters/replay")
def replay(company: str):  # type: ignore[no-untyped-def]
    gateway = _checked_post(company)
    form = request.form
    if form.get("confirm") != "yes" or not form.get("index", "").isdecimal():
        return _page("Not replayed", "<p>tick “sure” to replay</p>"), 400
    client = gateway.redis
    raw = client.lindex(keys.dead_letters(company), int(form["index"]))
    if raw is None:
        return _page("Not replayed", "<p>that dead letter is gone (replayed or dropped meanwhile)</p>"), 409
    try:
        entry = read_dead_letter(company, raw)
    except ValueError as exc:
        return _page("Not replayed", f"<p>{escape(str(exc))}</p>"), 400
    if is_ambiguous(entry) and form.get("ambiguous") != "yes":
        return _page("Not replayed", "<p>this one may already have been answered: confirm it</p>"), 400
    count = replay_one(gateway.scripts, company, raw, entry, gateway.settings.queue_ttl_seconds)
    if count is None:
        return _page("Not replayed", "<p>that dead letter is gone (replayed meanwhile)</p>"), 409
    return redirect(url_for("status.status"), code=303)
