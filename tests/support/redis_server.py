"""A real redis-server for the tests, on a free port, that a fault test can stop."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.common import free_port, wait_for


def ensure_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() == 0:  # the README's `make test` installs it; this covers a bare pytest
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False)
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    return path


class RedisServer:
    """A redis-server on a free port that a test may stop and start again."""

    def __init__(
        self,
        data_dir: Path,
        persistent: bool = False,
        password: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self._extra = list(extra)  # more redis-server arguments (e.g. a maxmemory-policy)
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._dir = data_dir
        self._persistent = persistent
        self._password = password
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        aof = ["--appendonly", "no"]
        if self._persistent:
            aof = ["--appendonly", "yes", "--appendfsync", "always"]
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self._dir)]
        self._proc = subprocess.Popen(
            [ensure_redis_server(), *args, *aof, *self._auth_args(), *self._extra, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self._password)
        wait_for(lambda: _pings(client), timeout=10)

    def _auth_args(self) -> list[str]:
        return ["--requirepass", self._password] if self._password else []

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
