"""Small helpers the benchmarks share: a free port, gunicorn as start.sh runs it, waiting for HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def gunicorn(
    target: str, port: int, env: dict[str, str], workers: int, as_start_sh: bool = True
) -> subprocess.Popen:
    """gunicorn serving ``target``; ``as_start_sh``: with deploy/gunicorn.conf.py, as the
    container runs the gateway (threaded workers, keep-alive, the access log); without
    it, gunicorn's defaults (sync workers), as the baselines ran."""
    bin_dir = Path(sys.executable).parent
    config = ["--config", "deploy/gunicorn.conf.py"] if as_start_sh else []
    return subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            target,
            *config,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
