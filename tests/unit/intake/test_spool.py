"""The local spool: what the webhook accepts while Redis is unreachable reaches Redis
once it is back, in order, once (app/intake/spool.py)."""

from __future__ import annotations

import fcntl
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.chatwoot.messages import StoredMessage
from app.intake.spool import Spool, SpoolFull
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import RedisServer, Stand, Worker, wait_for


def queued_ids(client: redis.Redis, conversation: int) -> list[int]:
    return [
        StoredMessage.from_json(raw).id for raw in client.lrange(keys.queue("default", conversation), 0, -1)
    ]


def test_spool_appends_durably_and_moves_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(3):
        spool.append({"n": i})
    assert spool.backlog() == 3
    (path,) = spool.waiting_files()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 1, 2]
    seen: list[int] = []
    assert spool.move(lambda entry: seen.append(entry["n"])) == 3
    assert seen == [0, 1, 2] and spool.backlog() == 0 and spool.waiting_files() == []


def test_a_move_that_fails_half_way_keeps_the_file_and_resumes_after_the_last_delivered_line(
    tmp_path: Path,
) -> None:
    """Redis goes away again in the middle of a move: the file stays (a killed process
    would leave it whole), and the next move goes on from the first line not delivered:
    a status event already applied is not applied a second time."""
    spool = Spool(tmp_path, max_bytes=10_000)
    for i in range(3):
        spool.append({"n": i})
    seen: list[int] = []

    def redis_goes_away_at_the_second(entry: dict) -> None:
        if entry["n"] == 1:
            raise redis.ConnectionError("gone again")
        seen.append(entry["n"])

    with pytest.raises(redis.ConnectionError):
        spool.move(redis_goes_away_at_the_second)
    assert spool.backlog() == 2 and len(spool.waiting_files()) == 1
    spool.move(lambda entry: seen.append(entry["n"]))
    assert seen == [0, 1, 2] and spool.backlog() == 0 and spool.waiting_files() == []


def test_a_new_spool_file_is_never_seen_unlocked_by_another_processs_mover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 8: process A creates its spool file while B's mover passes by. Had the
    file been visible before A locked it, B would take it for an orphan, move it and
    unlink it, and A would append every later event to a file nothing ever moves."""
    a, b = Spool(tmp_path, 1 << 20), Spool(tmp_path, 1 << 20)
    delivered: list[tuple[str, int]] = []
    real_flock = fcntl.flock
    armed = [True]

    def b_passes_by_as_a_locks(fd: int, operation: int) -> None:
        if armed[0]:  # the first flock: A's new file
            armed[0] = False
            b.move(lambda entry: delivered.append(("B", entry["n"])))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", b_passes_by_as_a_locks)
    a.append({"n": 1})
    monkeypatch.setattr(fcntl, "flock", real_flock)
    a.append({"n": 2})
    assert len(a.waiting_files()) == 1
    assert a.move(lambda entry: delivered.append(("A", entry["n"]))) == 2
    assert delivered == [("A", 1), ("A", 2)] and a.backlog() == 0 and a.waiting_files() == []


def test_a_spool_file_is_deleted_before_its_lock_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 9: A has moved its own file; another process's mover passing by just
    before the file is deleted finds it still locked, so no event is applied twice (a stale
    "pending" after a newer takeover)."""
    a, b = Spool(tmp_path, 1 << 20), Spool(tmp_path, 1 << 20)
    a.append({"kind": "status", "n": 1})
    a.append({"kind": "agent_reply", "n": 2})
    delivered: list[tuple[str, int]] = []
    real_unlink = Path.unlink
    armed = [True]

    def b_passes_by_before_the_unlink(self: Path, missing_ok: bool = False) -> None:
        if armed[0]:
            armed[0] = False
            b.move(lambda entry: delivered.append(("B", entry["n"])))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", b_passes_by_before_the_unlink)
    a.move(lambda entry: delivered.append(("A", entry["n"])))
    assert delivered == [("A", 1), ("A", 2)]


def test_moving_a_large_spool_never_holds_up_a_new_webhook(tmp_path: Path) -> None:
    """Review finding 10: while a web process moves its own spool, a webhook reaching that
    process appends at once (into a new file, behind the one being moved) instead of
    waiting for the whole move; its event is moved after the others."""
    spool = Spool(tmp_path, 1 << 20)
    for i in range(3):
        spool.append({"n": i})
    in_move, go_on = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow_redis(entry: dict) -> None:
        in_move.set()
        go_on.wait(10)
        seen.append(entry["n"])

    mover = threading.Thread(target=spool.move, args=(slow_redis,))
    mover.start()
    assert in_move.wait(5)
    started = time.monotonic()
    spool.append({"n": 3})  # a webhook arriving during the move
    waited = time.monotonic() - started
    assert spool.backlog() == 4  # still spooled behind the move: order kept
    go_on.set()
    mover.join(10)
    assert waited < 1.0, f"the append waited {waited:.1f} s for the move"
    spool.move(lambda entry: seen.append(entry["n"]))
    assert seen == [0, 1, 2, 3] and spool.backlog() == 0 and spool.waiting_files() == []


def test_an_event_spooled_as_the_mover_finishes_is_moved_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding 13: the mover thread decides to stop (nothing left) just as a webhook
    spools a new event and sees the thread still alive. The decision is taken under the
    append lock, so the new event starts a mover of its own instead of waiting for the
    next webhook of that process (hours, at night)."""
    spool = Spool(tmp_path, 1 << 20)
    delivered: list[int] = []
    real_waiting = Spool.waiting_files
    armed = [False]

    def deliver(entry: dict) -> None:
        delivered.append(entry["n"])
        armed[0] = True  # the first entry is in: the mover's next look is its last

    def webhook() -> None:
        spool.append({"n": 2})
        spool.start_mover(lambda: True, deliver)

    def looking_as_a_webhook_arrives(self: Spool) -> list[Path]:
        deciding = sys._getframe(1).f_code.co_name == "_run"  # the mover's "anything left?"
        if armed[0] and deciding:
            armed[0] = False
            threading.Thread(target=webhook).start()
            time.sleep(0.3)  # the webhook spools while the mover decides
            return []
        return real_waiting(self)

    monkeypatch.setattr(Spool, "waiting_files", looking_as_a_webhook_arrives)
    spool.append({"n": 1})
    spool.start_mover(lambda: True, deliver)
    wait_for(lambda: delivered == [1, 2], timeout=5)


def test_the_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=40)
    spool.append({"n": "x" * 10})
    with pytest.raises(SpoolFull, match="SPOOL_MAX_BYTES=40"):
        spool.append({"n": "x" * 30})


def test_a_file_left_by_a_stopped_process_is_taken_over_and_a_live_ones_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    orphan = folder / "spool-1-dead.jsonl"
    orphan.write_text('{"n": 1}\n{"n": 2}\n{"torn": \n')  # a torn last write: skipped
    live = folder / "spool-2-live.jsonl"
    live.write_text('{"n": 9}\n')
    with open(live, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # its writer is alive
        seen: list[int] = []
        Spool(tmp_path, max_bytes=10_000).move(lambda entry: seen.append(entry["n"]))
        assert seen == [1, 2] and not orphan.exists() and live.exists()


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-data", persistent=True)
    (tmp_path / "redis-data").mkdir()
    server.start()
    server.stop()  # the webhooks arrive while it is down
    yield server
    server.stop()


def test_two_containers_spooling_one_conversation_at_once_come_out_in_message_id_order(
    stopped_redis: RedisServer, tmp_path: Path
) -> None:
    """A deploy overlap: the old and the new container each take some fragments of one
    conversation while Redis is down, each into its own spool. Once Redis is back, the
    moves place messages by Chatwoot id, also before one queued directly meanwhile."""
    old = make_client(base_env(stopped_redis.url, "http://127.0.0.1:9", DATA_DIR=str(tmp_path / "old")))
    new = make_client(base_env(stopped_redis.url, "http://127.0.0.1:9", DATA_DIR=str(tmp_path / "new")))
    for message_id in range(1, 11):
        container = old if message_id % 2 else new
        answer = post_webhook(container, cw.message(f"fragment {message_id}", 400, message_id=message_id))
        assert answer.status_code == 202 and answer.json["spooled"] is True
    stopped_redis.start()
    third = make_client(base_env(stopped_redis.url, "http://127.0.0.1:9", DATA_DIR=str(tmp_path / "third")))
    assert post_webhook(third, cw.message("fragment 11", 400, message_id=11)).status_code == 202
    client = redis.Redis.from_url(stopped_redis.url, decode_responses=True)
    wait_for(lambda: len(queued_ids(client, 400)) == 11, timeout=10)
    assert queued_ids(client, 400) == list(range(1, 12))
    for folder in ("old", "new"):
        wait_for(lambda f=folder: not list((tmp_path / f / "spool").glob("*.jsonl")), timeout=5)


def test_spooled_messages_beyond_the_queue_cap_are_queued_not_dropped(
    stopped_redis: RedisServer, tmp_path: Path
) -> None:
    """Review finding 5: five fragments answered 202 while Redis was down, with a queue cap of
    three. The 202 was a promise (Chatwoot will not send them again): once Redis is back all
    five are queued, in order, and counted as over the cap; none is dropped."""
    web = make_client(
        base_env(
            stopped_redis.url, "http://127.0.0.1:9", DATA_DIR=str(tmp_path), MAX_QUEUE_PER_CONVERSATION="3"
        )
    )
    for message_id in range(1, 6):
        answer = post_webhook(web, cw.message(f"fragment {message_id}", 420, message_id=message_id))
        assert answer.status_code == 202 and answer.json["spooled"] is True
    stopped_redis.start()
    client = redis.Redis.from_url(stopped_redis.url, decode_responses=True)
    wait_for(lambda: not list((tmp_path / "spool").glob("*.jsonl")), timeout=10)
    assert queued_ids(client, 420) == [1, 2, 3, 4, 5]
    assert client.hget(keys.stats("default"), "spooled_over_cap") == "2"
    assert post_webhook(web, cw.message("a live one", 420)).status_code == 429  # the cap holds for live ones


def test_a_spool_left_by_a_killed_process_is_moved_once(stopped_redis: RedisServer, tmp_path: Path) -> None:
    """The container was killed while moving its spool: the first message had reached
    Redis. The next web process moves the whole file again: nothing lost, nothing doubled."""
    folder = tmp_path / "data" / "spool"
    folder.mkdir(parents=True)
    entries = [
        {
            "company": "default",
            "delivery": f"delivery-{i}",
            "kind": "message",
            "message": StoredMessage(i, "410", 1, f"m{i}", 0.0, conversation_status="pending").to_json(),
        }
        for i in (21, 22, 23)
    ]
    left = folder / "spool-999999-killed.jsonl"  # its writer is gone: nobody holds its lock
    left.write_text("".join(json.dumps(e) + "\n" for e in entries))
    stopped_redis.start()
    client = redis.Redis.from_url(stopped_redis.url, decode_responses=True)
    client.rpush(keys.queue("default", 410), entries[0]["message"])  # moved before the kill,
    client.set(keys.seen_message("default", 21), "1")  # marker and all
    make_client(base_env(stopped_redis.url, "http://127.0.0.1:9", DATA_DIR=str(tmp_path / "data")))
    wait_for(lambda: not left.exists(), timeout=10)
    assert queued_ids(client, 410) == [21, 22, 23]
    assert client.hget(keys.stats("default"), "webhooks_duplicate") == "1"


@pytest.mark.slow
def test_redis_stopped_under_traffic_loses_doubles_and_reorders_nothing(stand: Stand, tmp_path: Path) -> None:
    """The real redis-server is stopped while webhooks arrive from several conversations and
    started again 3 s later. Every webhook is answered 202; every message is answered once,
    in order."""
    stand.reset()
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    env = base_env(
        server.url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path),
        DATA_DIR=str(tmp_path / "data"),
        BATCH_WINDOW_SECONDS="0.3",
        BATCH_MAX_WAIT_SECONDS="1",
        LEASE_TTL_SECONDS="2",
        SWEEP_INTERVAL_SECONDS="0.5",
    )
    worker = Worker(env, "outage", housekeeping=True).start(client)
    web = make_client(env)
    conversations = list(range(420, 424))
    sent: dict[int, list[str]] = {c: [] for c in conversations}
    statuses: list[int] = []
    spooled = [0]
    done = threading.Event()

    def traffic() -> None:
        message_id = 42_000
        for round_ in range(30):
            for conv in conversations:
                message_id += 1
                text = f"c{conv} m{round_:02d} " + "w" * 420  # long: answered one by one, order visible
                sent[conv].append(text)
                answer = post_webhook(web, cw.message(text, conv, message_id=message_id))
                statuses.append(answer.status_code)
                spooled[0] += bool(answer.json.get("spooled"))
            time.sleep(0.15)
        done.set()

    try:
        sender = threading.Thread(target=traffic)
        sender.start()
        time.sleep(1.0)
        server.stop()
        time.sleep(3.0)
        readiness = web.get("/readyz")
        assert readiness.status_code == 503 and "spooling" in readiness.json["reason"]
        server.start()
        sender.join(timeout=60)
        assert done.is_set() and set(statuses) == {202}, statuses
        assert spooled[0] > 0
        wait_for(lambda: all(len(stand.replies(c)) >= len(sent[c]) for c in conversations), timeout=60)
        time.sleep(1.5)
        for conv in conversations:
            assert stand.replies(conv) == sent[conv]  # none lost, none doubled, in order
        assert worker.proc is not None and worker.proc.poll() is None
        wait_for(lambda: web.get("/readyz").json.get("status") == "ready", timeout=10)
        assert not list((tmp_path / "data" / "spool").glob("*.jsonl"))
    finally:
        worker.stop()
        server.stop()


def test_every_kind_of_event_survives_the_spool_as_it_was() -> None:
    """While Redis is down every event is spooled, not only messages: what a status event,
    an agent's reply, an ignored message or a message_updated says of the conversation is
    applied once Redis is back (who holds it must come out right from whatever arrived)."""
    from app.chatwoot.messages import MessageUpdate
    from app.chatwoot.payload import parse_webhook
    from app.intake.backlog import from_entry as _from_spool
    from app.intake.backlog import to_entry as _spool_entry

    for payload in (
        cw.message("hi", 42),
        cw.status_changed(42, "pending"),
        cw.agent_reply("Ana here", 42),
        cw.private_note("call her", 42),
        cw.message_deleted(cw.message("oops", 42)),
    ):
        parsed = parse_webhook(payload, 1.5)
        entry = json.loads(json.dumps(_spool_entry("default", parsed, "delivery-1")))
        back = _from_spool(entry)
        assert back == parsed and back.seen == parsed.seen, payload["event"]
    message = parse_webhook(cw.message("hi", 42), 1.5)  # its channel: the window is noted as it moves in
    back = _from_spool(json.loads(json.dumps(_spool_entry("default", message, None))))
    assert back.channel == "Channel::Whatsapp"  # type: ignore[union-attr]
    update = parse_webhook(cw.message_deleted(cw.message("oops", 42)), 1.5)
    assert isinstance(update, MessageUpdate) and update.deleted
