"""Open batching windows: what 100,000 conversations waiting for their window cost.

    .venv/bin/python bench/open_windows.py [--conversations 100000]

A real redis-server and one solo Celery worker with ``-B`` (as start.sh runs
it). The worker's RSS (``/proc/<pid>/status`` VmRSS) is read at rest, then
``conversations`` messages, one per conversation, are accepted through the
gateway's own enqueue path (``app.intake.accept.accept``, the webhook's only Redis
work) with a 10-minute window, so every window stays open, and the worker's RSS
is read again after it has looked at them for 5 s. Redis's ``used_memory``
growth per waiting conversation is printed with it. With countdown tasks (the
core before v2) every open window was an unacknowledged message held in the
worker's memory; here a window is one entry of ``<company>:webhook_due``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.chatwoot.messages import StoredMessage  # noqa: E402
from app.intake.accept import accept  # noqa: E402
from app.settings import load_settings  # noqa: E402
from app.store import keys  # noqa: E402
from app.store.client import connect  # noqa: E402
from app.store.scripts import Scripts  # noqa: E402
from bench.footprint import rss_mb  # noqa: E402
from bench.stack import local_stack  # noqa: E402
from tests.support import Worker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    with local_stack(BATCH_WINDOW_SECONDS="600", BATCH_MAX_WAIT_SECONDS="1200") as stack:
        client = connect(stack.env["REDIS_URL"])
        worker = Worker(stack.env, "windows", housekeeping=True).start(stack.client)
        try:
            time.sleep(3)
            at_rest = rss_mb(worker.proc.pid)
            settings = load_settings(stack.env)
            company, scripts = settings.companies["default"], Scripts(client)
            before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            for conv in range(1, args.conversations + 1):
                message = StoredMessage(
                    conv * 10,
                    str(conv),
                    1,
                    "hi, I would like to book an appointment for Tuesday",
                    0.0,
                    contact={"id": conv, "name": "Maria Souza", "phone_number": "+5511999990000"},
                    conversation_status="pending",
                )
                accept(client, scripts, settings, company, message, f"delivery-{conv}")
            accepted_in = time.perf_counter() - started
            grown = client.info("memory")["used_memory"] - before
            time.sleep(5)  # the dispatcher looks at the schedule every 10 ms meanwhile
            with_windows = rss_mb(worker.proc.pid)
            waiting = client.zcard(keys.due("default"))
        finally:
            worker.stop()
    print(f"{args.conversations} conversations accepted in {accepted_in:.1f} s, {waiting} windows open")
    print(f"worker (solo) RSS: {at_rest:.1f} MB at rest, {with_windows:.1f} MB with the windows open")
    print(
        f"Redis used_memory grew {grown / args.conversations:.0f} B per waiting conversation"
        " (its one message, de-duplication markers, session, index and due entries)"
    )


if __name__ == "__main__":
    main()
