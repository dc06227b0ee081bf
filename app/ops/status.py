"""GET /status: what an operator needs without Prometheus, on a phone, without JavaScript.

Behind ``STATUS_BASIC_AUTH`` (``user:password``; the page answers 404 while it is
unset). Every figure comes from the code behind /metrics and the command line:
the stats hash and the worker-summed gauges (``app.ops.queries.refresh_gauges``), the
busiest conversations (``app.ops.queries.busiest``), the dead letters
(``app.ops.dead_letters``) and the gap histogram (``app.batching.report.report``), drawn
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

from html import escape
from typing import Any

from flask import Blueprint, abort, current_app, redirect, request, url_for

from app.ops.dead_letters import is_ambiguous, read_dead_letter, replay_dead_letters, replay_one
from app.ops.queries import conversation_state
from app.ops.status_guard import authenticate, same_site, secure, token_ok
from app.ops.status_page import ago, company_section, in_chatwoot, page, table
from app.store import keys
from app.store.client import redis_now

__all__ = ["bp"]

bp = Blueprint("status", __name__)
bp.before_request(authenticate)
bp.after_request(secure)


@bp.get("/status")
def status():  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    client, settings = gateway.redis, gateway.settings
    now = redis_now(client)
    heartbeats = client.zrange(keys.worker_heartbeats(), 0, -1, withscores=True)
    max_age = settings.worker_heartbeat_max_age_seconds
    workers = [
        (name, f"<span class={'' if now - at <= max_age else 'bad'}>{ago(now - at)}</span>")
        for name, at in heartbeats
    ]
    body = [
        "<h2>Workers</h2>",
        table(workers) if workers else "<p class=bad>no worker has ever reported</p>",
    ]
    body.append(table([("spooled in this web process (Redis unreachable)", gateway.spool.backlog())]))
    for config in settings.companies.values():
        body.append(company_section(client, config, now))
    return page("Chatwoot gateway", "".join(body))


def _checked_post(company: str) -> Any:
    """The gateway, for a replay form of a known company that carries the page's token
    (else 404 or 403)."""
    gateway = current_app.extensions["gateway"]
    if gateway.settings.company(company) is None:
        abort(404)
    if not same_site() or not token_ok(gateway.redis, company, request.form.get("token", "")):
        abort(403)
    return gateway


@bp.post("/status/<company>/dead-letters/replay-all")
def replay_all(company: str):  # type: ignore[no-untyped-def]
    gateway = _checked_post(company)
    if request.form.get("confirm") != "yes":
        return page("Not replayed", "<p>tick “sure” to replay</p>"), 400
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
    chatwoot = in_chatwoot(gateway.settings.companies[company], account, conversation)
    back = f"<p>{chatwoot} <a href='{url_for('status.status')}'>back</a></p>"
    return page(f"{company}: conversation {conversation}", table(rows) + back)


@bp.post("/status/<company>/dead-letters/replay")
def replay(company: str):  # type: ignore[no-untyped-def]
    gateway = _checked_post(company)
    form = request.form
    if form.get("confirm") != "yes" or not form.get("index", "").isdecimal():
        return page("Not replayed", "<p>tick “sure” to replay</p>"), 400
    client = gateway.redis
    raw = client.lindex(keys.dead_letters(company), int(form["index"]))
    if raw is None:
        return page("Not replayed", "<p>that dead letter is gone (replayed or dropped meanwhile)</p>"), 409
    try:
        entry = read_dead_letter(company, raw)
    except ValueError as exc:
        return page("Not replayed", f"<p>{escape(str(exc))}</p>"), 400
    if is_ambiguous(entry) and form.get("ambiguous") != "yes":
        return page("Not replayed", "<p>this one may already have been answered: confirm it</p>"), 400
    count = replay_one(gateway.scripts, company, raw, entry, gateway.settings.queue_ttl_seconds)
    if count is None:
        return page("Not replayed", "<p>that dead letter is gone (replayed meanwhile)</p>"), 409
    return redirect(url_for("status.status"), code=303)
