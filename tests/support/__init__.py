"""Real processes for the tests: redis-server, a Celery worker, start.sh, and a
local HTTP server standing in for Chatwoot's REST API and for an HTTP bot."""

from tests.support.common import BIN, ROOT, Listener, free_port, wait_for
from tests.support.processes import Worker, boot_start_sh
from tests.support.proxy import Proxy
from tests.support.redis_server import RedisServer, ensure_redis_server
from tests.support.stand import Stand

__all__ = [
    "BIN",
    "ROOT",
    "Listener",
    "Proxy",
    "RedisServer",
    "Stand",
    "Worker",
    "boot_start_sh",
    "ensure_redis_server",
    "free_port",
    "wait_for",
]
