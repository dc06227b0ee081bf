"""gunicorn settings start.sh adds to its command line: gunicorn's own log lines
(a failed request, a worker timeout print the request URI, ?token= included)
go through the same credential mask as the app's (``app.logs.MaskSecrets``)."""

import logging
import os

from app.logs import MaskSecrets

# Threads, not sync workers: a thread waits on Redis while another parses, and a
# connection is kept alive between requests, so the proxy in front reuses it instead of
# opening one per webhook (docs/performance.md, "The public port": 1.2-1.7x the sync
# workers' rate on the same two cores). The web's state is shared safely: Redis clients
# from a pool, the spool and the sampled logs under their locks. start.sh checks
# WEB_THREADS; the bench and the tests read this file as start.sh does.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
# Longer than the proxy usually keeps an idle connection to gunicorn (HAProxy closes
# half of its idle ones every 5 s, and drops one gunicorn has closed), so gunicorn
# is seldom the side that closes one.
keepalive = 75

# One line a request, to stdout: the path only (%(U)s), never a ?token= query, and the
# client HAProxy saw (it sets X-Forwarded-For to it).
accesslog = "-"
access_log_format = '%({x-forwarded-for}i)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'

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
