"""A member's limits checked and counted as one on Redis, for every process sharing the server.

``limits`` is atomic per limit: with several (per minute and per day), a request could count
against one window and be refused by the next, and two processes could interleave between the
check and the count. Its own API has no multi-limit acquire, so one Lua script does it: Redis runs
a script alone, so "check every window, then count in all or none" cannot interleave with another
process's request.

The script keeps ``limits``' own layout (one list of timestamps per limit and member, newest
first, trimmed to the limit, under the storage's key prefix), so ``limits`` reads the same windows
(``get_window_stats``) and a store written by an older bot keeps counting. Timestamps come from
the Redis server's clock, not each process's: processes whose clocks differ still share one window.

Both scripts may run twice for one call: the client sends a command again when the connection
drops or the reply is late (coredis' default retry policy), and Redis may have run the first one
before its reply was lost. Each call therefore names itself with a random key that the script
writes in the same atomic step, and a script that finds its key already written does nothing
again: a retried acquire counts once, a retried refund takes back one entry.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from limits import RateLimitItem
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.coredis import CoredisBridge

# Seconds to open a connection to the store: the command waits 1.5 s at most for the limiter, and
# a server that went away must be told apart from one slow to answer within that.
STORE_CONNECT_SECONDS = 1.0

# Seconds a call's key is kept: far longer than the client's retries of that call take.
ATTEMPT_KEY_SECONDS = 300

# KEYS: one moving-window list per limit, then the call's own key. ARGV: amount and expiry
# (seconds) of each limit, in order. Returns 0 when counted in every window (or when this call was
# counted already); else the 1-based number of the first limit that refuses and, as a string (a
# Lua number would be truncated to an integer), the timestamp of the entry that must leave its
# window before another request fits. A refusal counts nothing, so running it again is harmless.
ACQUIRE_ALL = """
local attempt = KEYS[#KEYS]
if redis.call('EXISTS', attempt) == 1 then
    return 0
end
local now = redis.call('TIME')
local timestamp = tonumber(now[1]) + tonumber(now[2]) / 1000000
for i = 1, #KEYS - 1 do
    local key = KEYS[i]
    local limit = tonumber(ARGV[2 * i - 1])
    local expiry = tonumber(ARGV[2 * i])
    local entry = redis.call('LINDEX', key, limit - 1)
    if limit < 1 or (entry and tonumber(entry) >= timestamp - expiry) then
        return {i, entry or tostring(timestamp)}
    end
end
local stamp = string.format('%.6f', timestamp)
for i = 1, #KEYS - 1 do
    local key = KEYS[i]
    redis.call('LPUSH', key, stamp)
    redis.call('LTRIM', key, 0, tonumber(ARGV[2 * i - 1]) - 1)
    redis.call('EXPIRE', key, tonumber(ARGV[2 * i]))
end
redis.call('SET', attempt, '1', 'EX', tonumber(ARGV[#ARGV]))
return 0
"""


# KEYS: the member's moving-window lists, then the call's own key. ARGV: how long that key is
# kept. Takes back the newest entry of each list (one member's entries differ only by
# milliseconds: which one goes does not change what the windows count), once per call.
REFUND_ONE = """
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', tonumber(ARGV[1])) then
    return 0
end
for i = 1, #KEYS - 1 do
    redis.call('LPOP', KEYS[i])
end
return 0
"""


class AtomicAcquire:
    """Counts a request against all of a member's limits on Redis, or against none."""

    def __init__(self, bridge: CoredisBridge, limits: Sequence[RateLimitItem]) -> None:
        self._bridge = bridge
        self._limits = tuple(limits)
        self._script = bridge.get_connection().register_script(ACQUIRE_ALL)
        self._refund = bridge.get_connection().register_script(REFUND_ONE)
        self._windows = tuple(
            str(part) for limit in limits for part in (limit.amount, limit.get_expiry())
        )

    @classmethod
    def for_storage(cls, storage: Storage, limits: Sequence[RateLimitItem]) -> AtomicAcquire | None:
        """The atomic path where the store is one Redis server (or a sentinel's primary): a
        cluster may keep one member's windows on different nodes, which a script cannot span."""
        if not isinstance(storage, RedisStorage) or isinstance(storage, RedisClusterStorage):
            return None
        if not isinstance(storage.bridge, CoredisBridge):  # the client bot/config.py installs
            return None
        return cls(storage.bridge, limits)

    async def acquire(self, ids: Sequence[str]) -> tuple[RateLimitItem, float] | None:
        """None when counted; else the limit that refuses and when it lets a request through.
        ``ids``: the identifiers of the member's windows (``limits``' ``key_for``)."""
        answer: Any = await self._script.execute(
            self._keys(ids), (*self._windows, str(ATTEMPT_KEY_SECONDS))
        )
        if answer == 0:
            return None
        index, oldest = answer
        limit = self._limits[int(index) - 1]
        return limit, float(oldest) + limit.get_expiry()

    async def refund(self, ids: Sequence[str]) -> None:
        """Take back one request counted by :meth:`acquire`, from every window."""
        await self._refund.execute(self._keys(ids), (str(ATTEMPT_KEY_SECONDS),))

    def _keys(self, ids: Sequence[str]) -> tuple[str, ...]:
        """The windows' keys, then a key naming this one call (see the module's docstring)."""
        windows = (self._bridge.prefixed_key(limit.key_for(*ids)) for limit in self._limits)
        attempt = self._bridge.prefixed_key(f"imagine-call/{secrets.token_hex(16)}")
        return (*windows, attempt)
