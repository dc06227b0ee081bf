"""Batching analytics on seeded gaps: the numbers, and a PNG an operator can open."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from app.batching.analytics import record_gaps
from app.batching.report import plot, report
from app.metrics import Histogram, observe
from app.store import keys
from tests.conftest import base_env
from tests.support import ROOT


def seed(rdb: redis.Redis) -> None:
    record_gaps(rdb, "default", "1", [0, 1, 2.2, 9.9, 200])  # gaps 1, 1.2, 7.7, 190.1
    record_gaps(rdb, "default", "2", [1000, 1012, 1013])  # gaps 12, 1
    record_gaps(rdb, "default", "3", [5000, 5003])  # gap 3 ...
    record_gaps(rdb, "default", "3", [5020])  # ... and 17 across two batches
    for size in (3, 1, 1, 2):
        observe(rdb, "default", Histogram.BATCH_SIZE, size)


def test_report_numbers(rdb: redis.Redis) -> None:
    seed(rdb)
    result = report(rdb, "default", window=10)
    assert result.pairs == 8
    assert result.buckets == [(1.0, 2), (1.5, 1), (3.0, 1), (8.0, 1), (12.0, 1), (17.0, 1), (300.0, 1)]
    assert result.merged_share() == pytest.approx(5 / 8)
    # Same-burst pairs (gap <= 60 s): 7; cumulative 2, 3, 4, 5, 6, 7.
    assert result.window_for(0.5) == 3.0
    assert result.window_for(0.85) == 12.0
    assert result.window_for(0.90) == 17.0
    assert dict(result.batch_sizes)["1.0"] == 2 and dict(result.batch_sizes)["3.0"] == 1
    text = result.text()
    assert result.merged_same_burst_share() == pytest.approx(5 / 7)
    assert "8 fragment pairs" in text and "merged by the current window: 62.5% of all pairs, 71.4%" in text
    assert "window merging 90% of same-burst pairs (gap <= 60 s): 17 s" in text
    assert float(rdb.hget(keys.last_fragment("default"), "3")) == 5020


def test_png_and_cli(rdb: redis.Redis, redis_url: str, tmp_path) -> None:
    seed(rdb)
    path = tmp_path / "gaps.png"
    plot(report(rdb, "default", 10), str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    cli_png = tmp_path / "cli.png"
    result = subprocess.run(
        [sys.executable, "-m", "app", "analytics", "--png", str(cli_png)],
        cwd=ROOT,
        env=base_env(redis_url, "http://127.0.0.1:9", BATCH_WINDOW_SECONDS="10", BATCH_MAX_WAIT_SECONDS="30"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "merged by the current window: 62.5%" in result.stdout and cli_png.exists()


def test_png_without_matplotlib_says_how_to_get_it(rdb: redis.Redis, redis_url: str, tmp_path) -> None:
    """The image leaves matplotlib out (it served only this drawing, ~160 MB of the image)."""
    seed(rdb)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "matplotlib.py").write_text("raise ImportError('not installed here')\n")
    env = base_env(redis_url, "http://127.0.0.1:9")
    env["PYTHONPATH"] = str(blocked)
    result = subprocess.run(
        [sys.executable, "-m", "app", "analytics", "--png", str(tmp_path / "x.png")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "pip install matplotlib" in result.stderr
    assert "merged by the current window" in result.stdout  # the report itself needs nothing more
