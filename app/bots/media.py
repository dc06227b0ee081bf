"""Fetching media a webhook names (a voice note's ``data_url``), safely: whoever can
post a webhook chooses the address, so a fetch goes only to Chatwoot's own origin,
to ``MEDIA_ALLOWED_HOSTS`` when set, else to public addresses — the address actually
connected is checked, after DNS and on every redirect hop — and ends at one
wall-clock deadline, whatever the server trickles (``deadline``: a watchdog shuts
the socket). docs/operations.md ("Security") says what an operator sets, and
``app.bots.transcribe`` why each rule is there."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import ParseResult, urljoin, urlparse

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from app.errors import MediaError
from app.outbound import read_body
from app.settings import CompanyConfig

MAX_REDIRECTS = 3  # Chatwoot's blob URL -> its storage's signed URL, with room for one more
NOT_READY_STATUSES = (403, 404)  # Chatwoot's storage does not have the upload yet
NOT_READY_FIRST_PAUSE_SECONDS = 0.25

__all__ = [
    "MAX_REDIRECTS",
    "NotReady",
    "Origins",
    "RefusedAddress",
    "deadline",
    "fetch",
    "fetch_once",
    "guarded_session",
    "is_public",
    "origin_of",
    "port_of",
    "refusal",
]


class RefusedAddress(NewConnectionError):
    """The host resolved (or was connected) to an address the gateway must not fetch from."""


def is_public(address: str) -> bool:
    """Is ``address`` a global unicast address (not loopback, private, link-local,
    shared, multicast, reserved or unspecified; an IPv4-mapped IPv6 is read as IPv4)?"""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


@dataclasses.dataclass(frozen=True)
class Origins:
    """Where media may be fetched from: ``trusted`` entries (``host`` or ``host:port``, or
    ``*.domain``) at any address, the operator's word; any other host only at a public
    address, unless ``only_trusted`` (``MEDIA_ALLOWED_HOSTS`` set)."""

    trusted: tuple[str, ...]
    only_trusted: bool = False

    @classmethod
    def of(cls, config: CompanyConfig) -> Origins:
        trusted = list(config.media_allowed_hosts)
        if config.chatwoot_base_url:
            trusted.append(origin_of(config.chatwoot_base_url))
        return cls(tuple(trusted), only_trusted=bool(config.media_allowed_hosts))

    def trusts(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.trusted:
            name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if wanted and int(wanted) != port:
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        return False


def port_of(parsed: ParseResult) -> int:
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def origin_of(url: str) -> str:
    parsed = urlparse(url)
    return f"{(parsed.hostname or '').lower()}:{port_of(parsed)}"


# -- the deadline: a watchdog that shuts the sockets of the fetch in progress ---------

_current = threading.local()  # the watch of the calling thread's fetch, if any


class _Watch:
    """Shuts every socket registered with it once ``end`` (monotonic) passes."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, end - time.monotonic()), self._fire)
        self._timer.daemon = True

    def register(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a blocked recv in the fetching thread returns at once
    except OSError:
        pass


@contextmanager
def deadline(end: float) -> Iterator[_Watch]:
    watch = _Watch(end)
    _current.watch = watch
    watch.start()
    try:
        yield watch
    finally:
        watch.cancel()
        _current.watch = None


def _register(sock: socket.socket | None) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.register(sock)


# -- connections that check the address they reached --------------------------------


def _guarded(base: type[HTTPConnection], origins: Origins) -> type[HTTPConnection]:
    class Guarded(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _register(sock)
            if not origins.trusts(self.host, self.port or 0):
                peer = sock.getpeername()[0]
                if origins.only_trusted or not is_public(peer):
                    sock.close()
                    why = "not in MEDIA_ALLOWED_HOSTS" if origins.only_trusted else f"at {peer}, not public"
                    raise RefusedAddress(self, f"{self.host} is {why}: not fetched")
            return sock

        def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            _register(self.sock)  # a kept-alive connection: its socket is watched too
            return super().request(*args, **kwargs)

    return Guarded


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, origins: Origins) -> None:
        self._origins = origins
        super().__init__(pool_maxsize=16)

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        http = type(
            "GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": _guarded(HTTPConnection, self._origins)}
        )
        https = type(
            "GuardedTLSPool",
            (HTTPSConnectionPool,),
            {"ConnectionCls": _guarded(HTTPSConnection, self._origins)},
        )
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}


def guarded_session(origins: Origins) -> requests.Session:
    """A session whose connections go only where ``origins`` allow (checked on the
    address connected) and register their sockets with the calling thread's deadline.
    It never reads proxy variables: the check is on the peer, which must be the host."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(origins)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def refusal(exc: BaseException) -> str:
    """The guard's reason, when it is what stopped a connection."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return ""
        if isinstance(seen, RefusedAddress):
            return str(seen).split(": ", 1)[-1]
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = getattr(seen, "reason", None) or inner or seen.__cause__
    return ""


class NotReady(Exception):
    """The media's server answered one of the statuses the caller asks again on."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def fetch_once(
    session: requests.Session,
    origins: Origins,
    url: str,
    end: float,
    max_bytes: int,
    what: str,
    not_ready: tuple[int, ...] = (),
) -> tuple[bytes, str]:
    """The bytes and content type at ``url`` (a session of ``guarded_session``), redirects
    followed and checked, before ``end`` (monotonic), at most ``max_bytes``; ``MediaError``
    naming ``what`` and the problem, or ``NotReady`` for a status in ``not_ready``."""
    for _ in range(MAX_REDIRECTS + 1):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise MediaError(f"{what} has no http(s) address")
        if origins.only_trusted and not origins.trusts(parsed.hostname, port_of(parsed)):
            raise MediaError(f"{parsed.hostname} is not in MEDIA_ALLOWED_HOSTS: not fetched")
        left = end - time.monotonic()
        if left <= 0:
            raise MediaError(f"no time left to fetch {what}")
        try:
            response = session.get(url, stream=True, timeout=(min(3.05, left), left), allow_redirects=False)
            with response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("Location", ""))
                    continue
                if response.status_code in not_ready:
                    raise NotReady(response.status_code)
                if response.status_code != 200:
                    raise MediaError(f"fetching {what} answered {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdecimal() and int(declared) > max_bytes:
                    raise MediaError(f"{what} is larger than {max_bytes} bytes")
                body = read_body(response, end, max_bytes)
                return body, response.headers.get("Content-Type", "application/octet-stream")
        except requests.ConnectionError as exc:
            refused = refusal(exc)
            if refused:
                raise MediaError(refused) from None
            raise MediaError(f"fetching {what} failed: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise MediaError(f"fetching {what} failed: {type(exc).__name__}") from exc
        except ValueError as exc:  # read_body: too large
            raise MediaError(f"{what} {exc}") from None
    raise MediaError(f"{what}'s address redirected more than {MAX_REDIRECTS} times")


log = logging.getLogger(__name__)


def fetch(
    session: requests.Session, origins: Origins, url: str, end: float, max_bytes: int, what: str
) -> tuple[bytes, str]:
    """``fetch_once`` for media a webhook names: Chatwoot sends ``message_created`` before
    its storage has the upload, so a 404 or 403 is asked again, with backoff, until ``end``."""
    pause = NOT_READY_FIRST_PAUSE_SECONDS
    while True:
        try:
            return fetch_once(session, origins, url, end, max_bytes, what, NOT_READY_STATUSES)
        except NotReady as exc:
            if time.monotonic() + pause >= end:
                raise MediaError(f"fetching {what} answered {exc.status}") from None
            log.info("%s not ready yet status=%s: asking again in %.2f s", what, exc.status, pause)
            time.sleep(pause)
            pause *= 2
