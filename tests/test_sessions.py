import redis

from app import keys
from app.scripts import Scripts
from app.sessions import reset_session


def test_reset_clears_a_bot_handoff_and_turns_but_never_a_humans(rdb: redis.Redis) -> None:
    scripts = Scripts(rdb)
    rdb.set(keys.handoff("default", "1"), "bot")
    rdb.rpush(keys.bot_history("default", "1"), "turn")
    rdb.set(keys.handoff("default", "2"), "agent")
    reset_session(rdb, scripts, "default", "1")
    reset_session(rdb, scripts, "default", "2")
    assert not rdb.exists(keys.handoff("default", "1"), keys.bot_history("default", "1"))
    assert rdb.get(keys.handoff("default", "2")) == "agent"
