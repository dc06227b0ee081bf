"""What a rebuild installs is what was tested (security review 2026-12-03, finding 13):
requirements.lock pins every package requirements.txt pulls in, transitive ones
included, each with its hashes; the container and `make` install it with
``--require-hashes``; and the locked set is audited for known vulnerabilities."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from importlib import metadata

import pytest

from tests.support import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\[\],-]+)==([^\s\\;]+)")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw.split("[", 1)[0]).lower()


def _lock() -> dict[str, tuple[str, int]]:
    """name -> (version, hashes) of requirements.lock."""
    found: dict[str, tuple[str, int]] = {}
    current = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        pin = PIN.match(line)
        if pin:
            current = _name(pin.group(1))
            found[current] = (pin.group(2), 0)
        elif current and "--hash=sha256:" in line:
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
    return found


def test_every_locked_package_has_a_version_and_its_hashes() -> None:
    lock = _lock()
    assert len(lock) > 30  # the transitive ones too (werkzeug, jinja2, tornado, urllib3, ...)
    for needed in ("werkzeug", "jinja2", "tornado", "urllib3", "click", "vine", "billiard", "amqp"):
        assert needed in lock, needed
    assert all(hashes >= 1 for _, hashes in lock.values()), [n for n, (_, h) in lock.items() if not h]


def test_the_lock_holds_every_direct_pin_of_requirements_txt() -> None:
    lock = _lock()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        pin = PIN.match(line.strip())
        if pin:
            assert lock.get(_name(pin.group(1)), ("",))[0] == pin.group(2), line


def test_what_runs_here_is_what_is_locked() -> None:
    """The suite runs against the locked versions (make installs the lock)."""
    for name, (version, _) in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-conditional dependency of another platform
        assert installed == version, f"{name}: {installed} installed, {version} locked"


def test_the_container_and_make_install_the_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "-r requirements.txt" not in dockerfile
    assert "--require-hashes -r requirements.lock" in (ROOT / "Makefile").read_text()


def _osv_reachable() -> bool:
    try:
        socket.getaddrinfo("api.osv.dev", 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    not _osv_reachable(), reason="api.osv.dev does not resolve from here: nothing to audit against"
)
def test_no_locked_package_has_a_known_vulnerability() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            str(ROOT / "requirements.lock"),
            "--require-hashes",
            "--disable-pip",
            "-s",
            "osv",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
