"""The gateway's own processes, started for real: a Celery worker, start.sh."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import redis

from tests.support.common import BIN, ROOT, wait_for


def boot_start_sh(env: dict[str, str], log: Path, script: Path = ROOT / "start.sh") -> subprocess.Popen:
    """start.sh as the container runs it, in its own session, its output into ``log``
    (``env``'s own PATH or HOME, when it has one, is kept; ``script``: another copy's)."""
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp"), **env}
    with open(log, "w") as out:
        return subprocess.Popen(
            ["bash", str(script)],
            cwd=script.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Worker:
    """A real ``celery -A app.worker worker`` process."""

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        pool: str = "solo",
        housekeeping: bool = False,
        concurrency: int = 1,
        prefetch: int = 1,
    ) -> None:
        self.env, self.name, self.pool, self.concurrency = env, name, pool, concurrency
        self.housekeeping = housekeeping  # the sweeper, gauges and session expiry (app.schedule.housekeeping)
        self.prefetch = prefetch  # start.sh's CELERY_PREFETCH_MULTIPLIER
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(env.get("TEST_LOG_DIR", "/tmp")) / f"worker-{name}-{os.getpid()}.log"

    def start(self, client: redis.Redis, ready: bool = True) -> Worker:
        """Start it; with ``ready``, wait for its first heartbeat."""
        args = [
            str(BIN / "celery"),
            "-A",
            "app.worker",
            "worker",
            f"--pool={self.pool}",
            f"--concurrency={self.concurrency}",
            f"--prefetch-multiplier={self.prefetch}",
            "--loglevel=INFO",
            f"--hostname={self.name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        if not self.housekeeping:
            args.append("--no-housekeeping")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        hostname = f"{self.name}@{socket.gethostname()}"
        if ready:
            wait_for(lambda: client.zscore("gateway:worker_heartbeats", hostname) or self._died(), timeout=30)
        return self

    def _died(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"worker exited: {self.log_path.read_text()[-3000:]}")
        return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it started, too
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the process group
            except ProcessLookupError:
                pass
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()
