"""A Redis reached over TLS (``rediss://``): the certificate is checked by default, the
web, the worker and Celery all connect, and an untrusted certificate stops start-up
naming the setting. The redis-server is real, with TLS on and a CA made here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.settings import ConfigError, load_settings
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import ROOT, Stand, Worker, ensure_redis_server, free_port, wait_for

pytestmark = pytest.mark.slow


def _certificates(folder: Path) -> None:
    """A CA and a certificate for 127.0.0.1 signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        *"req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2".split(),
        "-subj",
        "/CN=test-ca",
    )
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    _certificates(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            ensure_redis_server(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(tmp_path / "server.pem"),
            "--tls-key-file",
            str(tmp_path / "server.key"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.pem"))
    wait_for(lambda: _pings(client), timeout=10)
    yield port, tmp_path / "ca.pem"
    proc.terminate()
    proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_rediss_url_checks_the_certificate_by_default() -> None:
    settings = load_settings({"REDIS_URL": "rediss://cache.example.com:6380/0"})
    assert "ssl_cert_reqs=required" in settings.redis_url  # Celery needs it spelled out
    with pytest.raises(ConfigError, match="ssl_cert_reqs must be required, optional or none"):
        load_settings({"REDIS_URL": "rediss://cache.example.com:6380/0?ssl_cert_reqs=maybe"})
    with pytest.raises(ConfigError, match="ssl_ca_certs file"):
        load_settings({"REDIS_URL": "rediss://cache.example.com:6380/0?ssl_ca_certs=/nowhere/ca.pem"})


def test_the_gateway_runs_on_a_tls_redis_and_refuses_an_untrusted_one(
    tls_redis, stand: Stand, tmp_path
) -> None:
    port, ca = tls_redis
    untrusted = base_env(f"rediss://127.0.0.1:{port}/0", stand.url)
    check = subprocess.run(
        [sys.executable, "-m", "app", "check-config"], cwd=ROOT, env=untrusted, capture_output=True, text=True
    )
    assert check.returncode == 2 and "ssl_ca_certs" in check.stderr and "REDIS_URL" in check.stderr
    stand.reset()
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    env = base_env(
        url, stand.url, TEST_LOG_DIR=str(tmp_path), BATCH_WINDOW_SECONDS="0.3", BATCH_MAX_WAIT_SECONDS="1"
    )
    check = subprocess.run(
        [sys.executable, "-m", "app", "check-config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    client = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ca), decode_responses=True)
    worker = Worker(env, "tls").start(client)  # Celery's broker and result backend over TLS
    try:
        web = make_client(env)
        assert post_webhook(web, cw.message("over tls", 87)).status_code == 202
        wait_for(lambda: stand.replies(87), timeout=20)
        assert stand.replies(87) == ["over tls"]
    finally:
        worker.stop()
