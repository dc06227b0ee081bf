"""gunicorn settings start.sh adds to its command line: gunicorn's own log lines
(a failed request, a worker timeout print the request URI, ?token= included)
go through the same credential mask as the app's (``app.logs.MaskSecrets``)."""

import logging

from app.logs import MaskSecrets

# gunicorn 25+ opens a control socket under $HOME/.gunicorn: every gunicorn of a host
# run as root would share /root/.gunicorn/gunicorn.ctl, and in the image (HOME=/root,
# the user not root) it logged "Control server error: Permission denied" at every
# start. The gateway does not use gunicornc.
control_socket_disable = True


def _mask_gunicorn_logs() -> None:
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, MaskSecrets) for f in handler.filters):
                handler.addFilter(MaskSecrets())


def when_ready(server) -> None:  # type: ignore[no-untyped-def]  # the master, once its logs are set up
    _mask_gunicorn_logs()


def post_fork(server, worker) -> None:  # type: ignore[no-untyped-def]  # every worker
    _mask_gunicorn_logs()
