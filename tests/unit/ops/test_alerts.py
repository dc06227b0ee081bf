"""The Prometheus alert rules and the Grafana dashboard in deploy/: promtool checks the
rules and runs their unit tests (each rule fires once and stays silent once), and every
metric they or the dashboard query is one the gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import redis

from app.ops.queries import refresh_gauges
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import ROOT

RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
_METRIC = re.compile(r"\bgateway_[a-z0-9_]+")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package)")
    return found


def test_the_alert_rules_are_valid_and_each_fires_and_stays_silent_as_its_test_says() -> None:
    check = subprocess.run(
        [_promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert check.returncode == 0 and "9 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    fired = {m for m in re.findall(r"alertname: (\w+)", (RULES / "alerts.test.yml").read_text())}
    defined = set(re.findall(r"alert: (\w+)", (RULES / "alerts.yml").read_text()))
    assert fired == defined  # every rule has its cases


@pytest.fixture
def exported(redis_url: str, rdb: redis.Redis) -> set[str]:
    """Every metric name /metrics shows once a webhook went through and the gauges were summed."""
    web = make_client(base_env(redis_url, "http://127.0.0.1:9"))
    post_webhook(web, cw.message("hi", 42))
    refresh_gauges(rdb, ["default"])
    rdb.zadd("gateway:worker_heartbeats", {"w@h": rdb.time()[0]})
    text = web.get("/metrics").get_data(as_text=True)
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("gateway_")}
    return names | {n.removesuffix(s) for n in names for s in _SUFFIXES if n.endswith(s)}


def test_every_metric_the_rules_and_the_dashboard_query_is_exported(exported: set[str]) -> None:
    queried = set(_METRIC.findall((RULES / "alerts.yml").read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    queried |= {m for e in exprs for m in _METRIC.findall(e)}
    assert queried - exported == set()


def test_the_dashboard_draws_the_alert_thresholds() -> None:
    """The panels of alerted metrics show the alert's threshold as a red step."""
    dashboard = json.loads(DASHBOARD.read_text())
    steps = {
        p["title"]: [
            s.get("value") for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["color"] == "red"
        ]
        for p in dashboard["panels"]
        if "fieldConfig" in p
    }
    assert steps["Oldest waiting message"] == [90]
    assert steps["Workers alive"] == [None]  # red below the first step: green from 1 worker
    assert steps["Messages in the local spool"] == [1]
