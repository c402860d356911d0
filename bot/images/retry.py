"""The retry policy, as pure functions (after openai-python's ``_base_client.py``).

Deciding whether to retry and computing how long to wait take the status, the headers, the
attempt number and the clock as arguments, so they are table-tested without a server. A wait the
server names is honoured only when it is a finite number of seconds within the cap: ``nan``,
``inf``, a negative number or garbage never becomes a sleep (``asyncio.sleep(nan)`` sleeps until
some unrelated timer fires, and puts a NaN in the event loop's timer heap).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz

RETRY_STATUSES = frozenset({408, 409, 429})
_INFINITY_LITERALS = frozenset({"inf", "+inf", "infinity", "+infinity"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    max_wait: float = 60.0  # a server-named wait above this is reported instead of waited out
    backoff_base: float = 0.5  # seconds before the first retry when the server names no wait
    backoff_cap: float = 8.0


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, then ``retry-after`` as seconds
    or an HTTP date), or None when it named none that can be read.

    May return ``inf`` (an overflowing number: an excessive wait) or a negative number: the
    callers decide what those mean.
    """
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isnan(seconds):
            return None
        if math.isinf(seconds) and value.strip().lower() in _INFINITY_LITERALS:
            return None  # a literal "inf" is garbage, not a wait
        return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        parsed = parsedate_tz(value)
        if parsed is None:
            return None
        return float(mktime_tz(parsed)) - now
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def should_retry(status: int, headers: Mapping[str, str], policy: RetryPolicy, now: float) -> bool:
    """Whether an answer with ``status`` is worth another attempt (before counting attempts)."""
    wait = server_wait(headers, now)
    if wait is not None and wait > policy.max_wait:
        return False  # the service asks for longer than a member should wait
    explicit = headers.get("x-should-retry", "").strip().lower()
    if explicit in ("true", "false"):
        return explicit == "true"
    return status in RETRY_STATUSES or status >= 500


def retry_delay(
    attempt: int,
    headers: Mapping[str, str],
    policy: RetryPolicy,
    now: float,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1): the server's
    wait when it is finite, positive and within the cap, otherwise jittered exponential backoff
    (0.5 s doubling, capped at 8 s, minus up to 25%)."""
    wait = server_wait(headers, now)
    if wait is not None and math.isfinite(wait) and 0 < wait <= policy.max_wait:
        return wait
    exponent = min(max(attempt - 1, 0), 60)
    backoff = min(policy.backoff_base * 2.0**exponent, policy.backoff_cap)
    return max(backoff * (1 - 0.25 * jitter()), 0.0)
