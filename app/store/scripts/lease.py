"""The lease: which run may drain a conversation (``app.schedule.lease``) — taken when a
task starts (START_RUN), renewed by the heartbeat (RENEW), handed from one holder to
another (HAND_OVER)."""

from __future__ import annotations

import redis

from app.store.scripts.core import Call, _flag, _register

__all__ = ["HAND_OVER", "RENEW", "START_RUN", "LeaseScripts"]


# Compare-and-set of the lease: hand it from one holder to another.
# KEYS[1] lease  ARGV[1] expected holder  ARGV[2] new holder  ARGV[3] TTL ms
# Returns 1 if the lease now names ARGV[2], else 0.
HAND_OVER = """
local lease = KEYS[1]
local expected, holder, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lease) == expected then
  redis.call('SET', lease, holder, 'PX', ttl_ms)
  return 1
end
return 0
"""

# A task starting: the lease names the published task (its id) until the task
# starts; starting turns it into the id of this one run (task id + '#' + a
# random token), so a second delivery of the same task id finds a run, not its
# id, and exits. A free lease (its holder died, it expired) is taken.
# KEYS[1] lease  ARGV[1] task id  ARGV[2] run id  ARGV[3] TTL ms
# Returns 1 if the run holds the lease, else 0.
START_RUN = """
local lease = KEYS[1]
local task_id, run_id, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', lease)
if holder == task_id or not holder then
  redis.call('SET', lease, run_id, 'PX', ttl_ms)
  return 1
end
return 0
"""

# The heartbeat: extend the lease of a run that still holds it.
# KEYS[1] lease  ARGV[1] run id  ARGV[2] TTL ms
# Returns 1 if renewed, 0 if the run no longer holds it.
RENEW = """
local lease = KEYS[1]
local run_id, ttl_ms = ARGV[1], ARGV[2]
if redis.call('GET', lease) == run_id then
  redis.call('PEXPIRE', lease, ttl_ms)
  return 1
end
return 0
"""


class LeaseScripts:
    """The lease scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._start_run = _register(client, START_RUN)
        self._renew = _register(client, RENEW)
        self._hand_over = _register(client, HAND_OVER)

    def start_run(self, lease: str, task_id: str, run_id: str, ttl_ms: int) -> Call[bool]:
        """True when the run holds the lease."""
        return Call(self._start_run, [lease], [task_id, run_id, ttl_ms], _flag)

    def renew(self, lease: str, run_id: str, ttl_ms: int) -> Call[bool]:
        """True when renewed (False: the run no longer holds the lease)."""
        return Call(self._renew, [lease], [run_id, ttl_ms], _flag)

    def hand_over(self, lease: str, holder: str, fresh: str, ttl_ms: int) -> Call[bool]:
        """True when the lease went from ``holder`` to ``fresh``."""
        return Call(self._hand_over, [lease], [holder, fresh, ttl_ms], _flag)
