"""Baseline: the seed's naive design, as the project began — Flask, and per message an
RPUSH of the body to the conversation's list, an EXPIRE and a Celery publish of a drain
task (no signature, no de-duplication, no batching window).

Its worker (``celery -A bench.seed_app:celery worker``) runs ``seed.drain`` as cheaply as a
drain can be: take the conversation's list and push one echo answer to the dry-run
outbox, no bot call, no Chatwoot post — so the baseline's consumer never costs more
than the real one would."""

import json
import os

import redis
from celery import Celery
from flask import Flask, jsonify, request

app = Flask(__name__)
client = redis.Redis.from_url(os.environ["REDIS_URL"])
celery = Celery("seed", broker=os.environ["REDIS_URL"])


@app.post("/webhook/chatwoot/<company>")
def webhook(company: str):  # type: ignore[no-untyped-def]
    body = request.get_json()
    conversation = body["conversation"]["id"]
    key = f"{company}:webhook_queue:{conversation}"
    client.rpush(key, json.dumps(body))
    client.expire(key, 86400)
    celery.send_task("seed.drain", args=[company, conversation])
    return jsonify(status="queued"), 202


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


@celery.task(name="seed.drain")
def drain(company: str, conversation: int) -> None:
    key = f"{company}:webhook_queue:{conversation}"
    pipe = client.pipeline()
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    messages = pipe.execute()[0]
    if messages:
        client.rpush(
            f"{company}:webhook_outbox", json.dumps({"conversation": conversation, "echo": len(messages)})
        )
