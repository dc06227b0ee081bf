"""Baseline: a bare Flask endpoint that only parses the JSON and answers 202."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/webhook/chatwoot/<company>")
def webhook(company: str):  # type: ignore[no-untyped-def]
    request.get_json()
    return jsonify(status="queued"), 202
