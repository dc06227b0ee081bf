"""The web process's composition root: the Flask app (``create_app``) and what its
requests share (``Gateway``). ``wsgi.py`` builds it for gunicorn; the worker's root
is ``app.worker``, which never imports this module (nor Flask)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.intake.spool import Spool
from app.logs import configure_logging
from app.settings import Settings, load_settings
from app.store.client import connect
from app.store.scripts import Scripts

__all__ = ["Gateway", "create_app"]


class Gateway:
    """What the web process shares between requests: settings and clients."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock  # the web's clock: only for the signature's replay window
        self.redis = connect(settings.redis_url)
        self.scripts = Scripts(self.redis)
        self.spool = Spool(settings.data_dir, settings.spool_max_bytes)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app; ``test_config`` may hold a ready ``settings`` object (and a
    ``clock``, to test a web clock that is wrong)."""
    app = Flask(__name__)
    config = dict(test_config or {})
    settings = config.pop("settings", None) or load_settings()
    clock = config.pop("clock", None) or time.time
    app.config.update(config)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["gateway"] = Gateway(settings, clock)
    if not logging.getLogger().handlers:  # under gunicorn nothing else configures it
        configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("app").setLevel(settings.log_level)

    from app.intake import backlog, webhook
    from app.ops import health, status

    app.register_blueprint(webhook.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(status.bp)
    if app.extensions["gateway"].spool.waiting_files():  # left by a process that was stopped
        backlog.start_moving(app.extensions["gateway"])

    @app.errorhandler(HTTPException)
    def json_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        reason = exc.description if exc.code != 413 else f"body larger than {settings.max_body_bytes} bytes"
        return jsonify(error=exc.name.lower(), reason=reason), exc.code

    return app
