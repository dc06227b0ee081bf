"""Every counter of <company>:webhook_stats is declared once (app.metrics.Stat): the Lua
scripts and the Python code write only declared ones, and /metrics reports them all."""

from __future__ import annotations

import re

import pytest

from app.metrics import Stat, render_counters
from app.ops.health import COUNTERS
from app.store import scripts
from tests.support import ROOT

APP = ROOT / "app"


def test_every_counter_a_script_writes_is_declared() -> None:
    sources = scripts.SOURCES
    one_of_each_area = {"ENQUEUE", "OBSERVE", "START_RUN", "CLAIM_DUE", "COMPLETE", "STORE_ANSWER", "PURGE"}
    assert one_of_each_area <= set(sources)
    declared = {s.value for s in Stat}
    for name, source in sources.items():
        rendered = scripts.render(source)
        assert "@" not in re.sub(r"'[^']*'", "", rendered), name  # every @token@ rendered
        written = re.findall(r"HINCRBY', [\w\[\]]+, '([^']+)'", rendered)
        assert set(written) <= declared, (name, written)


def test_python_writes_no_counter_by_a_string_of_its_own() -> None:
    literal = re.compile(r"hincrby\(\s*keys\.stats\([^)]*\),\s*[\"']")
    offenders = [p.name for p in APP.rglob("*.py") if literal.search(p.read_text())]
    assert offenders == []


def test_an_undeclared_counter_name_in_a_script_stops_the_import() -> None:
    with pytest.raises(ValueError):
        render_counters("redis.call('HINCRBY', KEYS[1], @not_a_counter@, 1)")


def test_metrics_report_every_declared_counter() -> None:
    assert set(COUNTERS) == {s.value for s in Stat}
    assert COUNTERS["webhooks_queued"][0] == "gateway_webhooks_queued"
