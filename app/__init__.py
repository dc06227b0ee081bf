"""Chatwoot → bot gateway: per-conversation Redis queues drained by Celery.

Two processes share the code below: the web process (``app.web``: ``gunicorn
wsgi:app``) and the worker (``app.worker``: ``celery -A app.worker``). This
package imports nothing, so the worker never loads Flask (docs/design.md).
"""
