import redis

from app.conversation.ownership import Event, Holder
from app.conversation.sessions import reset_session
from app.settings import CompanyConfig
from app.store import keys
from app.store.scripts import Scripts


def test_reset_clears_a_bot_handoff_and_turns_but_never_a_humans(rdb: redis.Redis) -> None:
    scripts, company = Scripts(rdb), CompanyConfig()
    rdb.set(keys.handoff("default", "1"), "bot")
    rdb.rpush(keys.bot_history("default", "1"), "turn")
    rdb.set(keys.handoff("default", "2"), "agent")
    assert reset_session(rdb, scripts, company, "1", Event.RESET_KEYWORD) is Holder.BOT
    assert reset_session(rdb, scripts, company, "2", Event.SESSION_EXPIRED) is Holder.HUMAN
    assert not rdb.exists(keys.handoff("default", "1"), keys.bot_history("default", "1"))
    assert rdb.get(keys.handoff("default", "2")) == "agent"
