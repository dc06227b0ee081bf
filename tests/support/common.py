"""Paths and helpers every stand-in uses: the repository root, a free port, waiting
for a condition, an HTTP listener with a real server's accept backlog."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Listener(ThreadingHTTPServer):
    """A test server with a real server's accept backlog: socketserver's default of 5
    refuses connections when forty client threads connect at once (Chatwoot behind nginx
    and a bot behind its proxy accept hundreds)."""

    request_queue_size = 1024
    daemon_threads = True
