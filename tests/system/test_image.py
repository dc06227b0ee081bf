"""The container as it is delivered: the Dockerfile built with podman and run, as an
operator would (a volume, a published port), and checked from outside.

No image registry is reachable from the test machines, so the base image is a local
stand-in for ``python:3.11-slim`` (tests/image/base.sh: Debian bookworm with Debian's
Python 3.11; made once per machine, then kept by podman). Layers are cached: after a
code change the rebuild is the final ``COPY`` only. A machine without podman fails
here naming what is missing (``make test`` installs it), never skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

BASE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/chatwoot-bot-gateway:test"
WORK = Path(os.environ.get("GATEWAY_IMAGE_WORK", "/var/tmp/gateway-image"))
REPORT = WORK / "image-report.json"  # the figures docs/operations.md quotes


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=_env())
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(WORK / "containers.conf")}


def _containers_conf() -> None:
    """This machine's settings for rootful podman: the OCI runtime's rlimits within the
    hard limits (raising one is refused in these sandboxes), runc (crun refuses hybrid
    cgroups), netavark networking."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = nofile if nofile != resource.RLIM_INFINITY else 1048576
    # conmon, between podman and runc, keeps a lower process limit than this shell's
    # (runc failed with 96,555: "error setting rlimit type 6"); 32,768 is what it allows.
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    limits = [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "containers.conf").write_text(
        "[containers]\n"
        f"default_ulimits = {json.dumps(limits)}\n"
        '[engine]\nruntime = "runc"\n'
        '[network]\nnetwork_backend = "netavark"\n'
    )


@pytest.fixture(scope="module")
def image() -> str:
    missing = [p for p in ("podman", "runc", "debootstrap") if shutil.which(p) is None]
    assert not missing, f"{', '.join(missing)} not found: `make test` installs them (make test-deps)"
    _containers_conf()
    if podman("image", "exists", BASE, check=False).returncode != 0:
        made = subprocess.run(
            ["bash", str(ROOT / "tests/image/base.sh"), str(WORK)],
            capture_output=True,
            text=True,
            timeout=1200,
            env=_env(),
        )
        assert made.returncode == 0, f"the stand-in base image was not made:\n{made.stderr[-3000:]}"
    started = time.monotonic()
    podman("build", "--pull=never", "--format", "docker", "-t", IMAGE, str(ROOT), timeout=1500)
    built = time.monotonic() - started
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    base = int(podman("image", "inspect", BASE, "--format", "{{.Size}}").stdout.strip())
    REPORT.write_text(json.dumps({"build_seconds": round(built, 1), "image_bytes": size, "base_bytes": base}))
    return IMAGE


class Container:
    def __init__(self, image: str, *extra: str) -> None:
        self.name = f"gw-test-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.name}-data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        podman(
            "run",
            "-d",
            "--name",
            self.name,
            "-p",
            f"127.0.0.1:{self.port}:8080",
            "-v",
            f"{self.volume}:/data",
            "-e",
            f"PUBLIC_URL={self.url}",
            *extra,
            image,
        )

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def ready(self, timeout: float = 120) -> None:
        def answers() -> bool:
            try:
                return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(answers, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"/readyz never answered 200:\n{self.logs()[-4000:]}") from None

    def outbox(self) -> str:
        return podman("exec", self.name, "python", "-m", "app", "outbox", check=False).stdout

    def webhook(self, token: str, message_id: int, conversation: int, text: str) -> requests.Response:
        body = {
            "event": "message_created",
            "id": message_id,
            "message_type": "incoming",
            "content": text,
            "conversation": {"id": conversation, "status": "pending"},
            "account": {"id": 1},
            "sender": {"type": "contact"},
        }
        return requests.post(f"{self.url}/webhook/chatwoot/default?token={token}", json=body, timeout=5)

    def stop(self) -> float:
        started = time.monotonic()
        podman("stop", "-t", "30", self.name, timeout=60)
        took = time.monotonic() - started
        code = podman("inspect", self.name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0", f"exit code {code} after SIGTERM:\n{self.logs()[-3000:]}"
        return took

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)
        podman("volume", "rm", "-f", self.volume, check=False)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    made: list[Container] = []
    yield made
    for container in made:
        container.remove()


def test_the_image_runs_as_the_readme_says_and_keeps_what_it_accepted(image: str, containers) -> None:  # type: ignore[no-untyped-def]
    gateway = Container(image)
    containers.append(gateway)
    gateway.ready()
    log = gateway.logs()
    match = re.search(
        rf"point Chatwoot at {re.escape(gateway.url)}/webhook/chatwoot/default\?token=(\S+)", log
    )
    assert match, f"the printed URL is not the published one:\n{log[-3000:]}"
    token = match.group(1)
    assert "Control server error" not in log and "Traceback" not in log, log[-3000:]

    answer = gateway.webhook(token, 1, 7, "hi")
    assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
    wait_for(lambda: '"content": "hi"' in gateway.outbox(), timeout=40)  # the default 10 s window

    # Every process but tini runs as the unprivileged user, the volume handed to it.
    top = podman("top", gateway.name, "user", "pid", "args").stdout.splitlines()[1:]
    others = [line for line in top if line.split()[1] != "1" and line.split()[0] != "gateway"]
    assert not others, top
    assert podman("exec", gateway.name, "stat", "-c", "%U %a", "/data").stdout.split() == ["gateway", "700"]
    assert podman("healthcheck", "run", gateway.name, check=False).returncode == 0

    took = gateway.stop()
    assert took < 10, f"SIGTERM took {took:.1f} s"
    assert "all children exited" in gateway.logs()

    # A restart on the same volume keeps the token; a message accepted just before a stop
    # (still in its batching window) is answered after the next start.
    podman("start", gateway.name)
    gateway.ready()
    assert "using the WEBHOOK_TOKEN kept in /data/webhook_token" in gateway.logs()
    assert gateway.webhook(token, 2, 8, "survives a stop").status_code == 202
    gateway.stop()
    podman("start", gateway.name)
    gateway.ready()
    wait_for(lambda: "survives a stop" in gateway.outbox(), timeout=60)


def test_the_image_runs_on_a_read_only_root(image: str, containers) -> None:  # type: ignore[no-untyped-def]
    """Everything it writes is under /data (the volume) and podman's tmpfs /tmp and /run."""
    gateway = Container(image, "--read-only")
    containers.append(gateway)
    gateway.ready()
    token = re.search(r"\?token=(\S+)", gateway.logs())
    assert token, gateway.logs()[-3000:]
    assert gateway.webhook(token.group(1), 1, 9, "read only").status_code == 202
    wait_for(lambda: "read only" in gateway.outbox(), timeout=40)
    assert "Read-only file system" not in gateway.logs()
