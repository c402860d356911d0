"""Per-user rate limits with the `limits` library (moving window, in memory or a shared store).

A request counts when it is accepted, before it is queued or sent, whatever its outcome: the
image may be billed even when the answer is lost, and counting up front is what keeps twenty
simultaneous requests from one user from all passing the check before any of them is recorded.
Requests refused by validation never count. A member's limits are checked and counted as one:
a request counts against all of them or, refused by one, against none. In memory the member's
checks run one at a time in this process; on Redis (shared by several processes) one Lua script
checks every window and counts all or none, atomically in the server (see
:mod:`bot.store.ratelimit_redis`). Other shared stores (MongoDB, a Redis cluster, whose keys for one
member may live on different nodes) are atomic per limit only.

A member's windows are kept under the bot's Discord application id as well as the member's id:
bots sharing one store (two bots on one Redis) count each member apart, as each bot's limits say.
A limit is per member across every server the bot is in, and its refusal says so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from bot.i18n import ngettext
from bot.store.ratelimit_redis import STORE_CONNECT_SECONDS, AtomicAcquire

# Long enough for a store across a network, short enough that a start-up does not seem to hang.
STORE_PROBE_SECONDS = 5.0


_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])[^=&;]*(?:pass|secret|token|key)[^=&;]*=)[^&;#]*")


def masked_storage_uri(uri: str) -> str:
    """The storage URI with any credentials replaced: fit for a log line or the console.

    Read as plain text, not parsed: a URI that does not parse (a "#" or "/" in the password)
    must be masked all the same. Everything between "://" and the last "@" is credentials,
    and so is any query value whose name speaks of a password, secret, token or key.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return "(a storage URI that cannot be read)"
    userinfo, at, hosts = rest.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        rest = f"{user}:***@{hosts}" if user else f":***@{hosts}"
    return f"{scheme}://{_SECRET_QUERY.sub(lambda m: m.group(1) + '***', rest)}"


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: RateLimitItem
    reset_at: float  # unix seconds when the user may try again

    def describe(self) -> str:
        amount, per = self.limit.amount, self.limit.GRANULARITY.name
        multiples = self.limit.multiples
        window = WINDOWS[per].format(n=multiples) if per in WINDOWS else f"{multiples} {per}s"
        return LIMIT.format(n=amount, window=window)


LIMIT = ngettext("{n} image request per {window}", "{n} image requests per {window}")
# The windows a limit may have, as the sentence above says them.
WINDOWS = {
    "second": ngettext("second", "{n} seconds"),
    "minute": ngettext("minute", "{n} minutes"),
    "hour": ngettext("hour", "{n} hours"),
    "day": ngettext("day", "{n} days"),
    "month": ngettext("month", "{n} months"),
    "year": ngettext("year", "{n} years"),
}


@dataclass(slots=True)
class _UserLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # requests holding or waiting for the lock


class UserRateLimiter:
    def __init__(
        self,
        limits: Sequence[RateLimitItem],
        storage_uri: str = "memory://",
        *,
        storage: Storage | None = None,  # a store made elsewhere; storage_uri then only names it
        namespace: str | None = None,  # the bot's application id: whose windows these are
    ) -> None:
        self._storage_uri = storage_uri
        self.namespace = namespace
        if storage is None:
            if not storage_uri.startswith("async+"):
                storage_uri = f"async+{storage_uri}"  # the asyncio flavour of the same store
            options = {}
            if storage_uri.startswith(("async+redis", "async+valkey")):
                # A server that went away must fail fast (the member gets a sentence), not hang.
                options = {"connect_timeout": STORE_CONNECT_SECONDS}
            made = storage_from_string(storage_uri, **options)
            assert isinstance(made, Storage)
            storage = made
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._limits = tuple(limits)
        self._locks: dict[str, _UserLock] = {}
        self._atomic = AtomicAcquire.for_storage(storage, self._limits)

    def _ids(self, user_key: str) -> tuple[str, ...]:
        """The identifiers of ``user_key``'s windows: the bot's, then the member's."""
        return (user_key,) if self.namespace is None else (self.namespace, user_key)

    @property
    def store(self) -> str:
        """Where the limits are kept, without credentials."""
        if self._storage_uri.removeprefix("async+").startswith("memory://"):
            return "memory:// (in this process)"
        return masked_storage_uri(self._storage_uri)

    async def probe(self, seconds: float = STORE_PROBE_SECONDS) -> str | None:
        """None when the store answers; otherwise one sentence that names it (no password)."""
        try:
            answers = await asyncio.wait_for(self._storage.check(), seconds)
        except Exception:  # whatever the client library raises, the store did not answer
            answers = False
        if answers:
            return None
        return f"the rate-limit store at {self.store} (RATE_LIMIT_STORAGE_URI) does not answer"

    async def acquire(self, user_key: str) -> Refusal | None:
        """Count one request for ``user_key``, or say which limit refuses it and until when."""
        if self._atomic is not None:
            refused = await self._atomic.acquire(self._ids(user_key))
            return None if refused is None else Refusal(*refused)
        # One check at a time per member: with a networked store every call yields, and two
        # requests interleaving test-then-hit could use up one limit that the other refuses.
        entry = self._locks.setdefault(user_key, _UserLock())
        entry.users += 1
        try:
            async with entry.lock:
                return await self._acquire(user_key)
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[user_key]  # members who are not asking hold no memory

    async def refund(self, user_key: str) -> None:
        """Take back one request :meth:`acquire` counted, which the bot then could not take (its
        database did not answer): a member is not held back by the bot's own bad day. In memory
        and on Redis; other shared stores keep the count."""
        if self._atomic is not None:
            await self._atomic.refund(self._ids(user_key))
        elif isinstance(self._storage, MemoryStorage):
            storage = self._storage
            for limit in self._limits:
                key = limit.key_for(*self._ids(user_key))
                # limits keeps a window's entries newest first and has no call to take one back.
                async with storage.locks[key]:
                    if entries := storage.events.get(key):
                        del entries[0]

    async def _acquire(self, user_key: str) -> Refusal | None:
        ids = self._ids(user_key)
        for limit in self._limits:
            if not await self._limiter.test(limit, *ids):
                return await self._refusal(limit, ids)
        for limit in self._limits:
            # `hit` is atomic per limit: a concurrent request that slipped past `test` fails here.
            if not await self._limiter.hit(limit, *ids):
                return await self._refusal(limit, ids)
        return None

    async def _refusal(self, limit: RateLimitItem, ids: tuple[str, ...]) -> Refusal:
        stats = await self._limiter.get_window_stats(limit, *ids)
        return Refusal(limit, stats.reset_time)
