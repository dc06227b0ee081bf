"""gunicorn entry point: ``gunicorn wsgi:app``."""

from app.web import create_app

app = create_app()
