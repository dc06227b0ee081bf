"""The README's first steps, run as written: start.sh with its defaults (what `make run`
starts: port 8080, the embedded Redis on 6399, the echo bot, the dry-run outbox) in a
copy of the checkout, then the "Try it without Chatwoot" block, verbatim."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

from tests.support import BIN, ROOT, boot_start_sh, wait_for

pytestmark = pytest.mark.slow


def _try_it_block() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Try it without Chatwoot")
    match = re.search(r"```sh\n(.*?)```", readme[start:], re.DOTALL)
    assert match, "the README lost its try-it block"
    return match.group(1)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_readmes_try_it_block_works_as_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for port in (8080, 6399, 8089):
        assert _free(port), f"port {port} is taken: the README's defaults need it free on this machine"
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("app", "deploy"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("start.sh", "wsgi.py"):
        shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    log = tmp_path / "start.log"
    proc = boot_start_sh({}, log, script=copy / "start.sh")
    try:
        wait_for(lambda: (copy / "data" / "webhook_token").exists() or proc.poll() is not None, timeout=40)
        wait_for(lambda: not _free(8080) or proc.poll() is not None, timeout=40)  # the proxy, last to start
        assert proc.poll() is None, log.read_text()[-3000:]
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _try_it_block()],
            cwd=copy,
            env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"status":"queued"' in done.stdout, done.stdout
        assert '"conversation_id": "7"' in done.stdout and '"content": "hi"' in done.stdout, done.stdout
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=40) == 0, log.read_text()[-3000:]
        finally:
            proc.kill()
