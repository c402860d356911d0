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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from limits import RateLimitItem
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.coredis import CoredisBridge

# Seconds to open a connection to the store: the command waits 1.5 s at most for the limiter, and
# a server that went away must be told apart from one slow to answer within that.
STORE_CONNECT_SECONDS = 1.0

# KEYS: one moving-window list per limit. ARGV: amount and expiry (seconds) of each limit, in
# order. Returns 0 when counted in every window; else the 1-based number of the first limit that
# refuses and, as a string (a Lua number would be truncated to an integer), the timestamp of the
# entry that must leave its window before another request fits.
ACQUIRE_ALL = """
local now = redis.call('TIME')
local timestamp = tonumber(now[1]) + tonumber(now[2]) / 1000000
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i - 1])
    local expiry = tonumber(ARGV[2 * i])
    local entry = redis.call('LINDEX', key, limit - 1)
    if limit < 1 or (entry and tonumber(entry) >= timestamp - expiry) then
        return {i, entry or tostring(timestamp)}
    end
end
local stamp = string.format('%.6f', timestamp)
for i, key in ipairs(KEYS) do
    redis.call('LPUSH', key, stamp)
    redis.call('LTRIM', key, 0, tonumber(ARGV[2 * i - 1]) - 1)
    redis.call('EXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""


# KEYS: the member's moving-window lists. Takes back the newest entry of each (one member's
# entries differ only by milliseconds: which one goes does not change what the windows count).
REFUND_ONE = """
for _, key in ipairs(KEYS) do
    redis.call('LPOP', key)
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
        answer: Any = await self._script.execute(self._keys(ids), self._windows)
        if answer == 0:
            return None
        index, oldest = answer
        limit = self._limits[int(index) - 1]
        return limit, float(oldest) + limit.get_expiry()

    async def refund(self, ids: Sequence[str]) -> None:
        """Take back one request counted by :meth:`acquire`, from every window."""
        await self._refund.execute(self._keys(ids), ())

    def _keys(self, ids: Sequence[str]) -> tuple[str, ...]:
        return tuple(self._bridge.prefixed_key(limit.key_for(*ids)) for limit in self._limits)
