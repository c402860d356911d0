"""The retry policy, table-tested like openai-python's: what is retried, and how long it waits."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from bot.images.retry import RetryPolicy, retry_delay, server_wait, should_retry

NOW = 1_800_000_000.0
POLICY = RetryPolicy(max_retries=2, max_wait=60.0, backoff_base=0.5, backoff_cap=8.0)


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # milliseconds win
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": http_date(20)}, 20.0),
        ({"retry-after": http_date(-20)}, -20.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "NaN"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-Infinity"}, -math.inf),
        ({"retry-after": "1e999"}, math.inf),  # overflow: an excessive wait, not garbage
        ({"retry-after": "-5"}, -5.0),
        ({"retry-after": "tomorrow-ish"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_the_servers_wait_is_read_from_every_form(
    headers: dict[str, str], expected: float | None
) -> None:
    got = server_wait(headers, NOW)
    if expected is None or math.isinf(expected):
        assert got == expected
    else:
        assert got == pytest.approx(expected, abs=1.0)


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "-5", "0", "garbage", "1e999", "3600", http_date(-9)]
)
def test_a_wait_that_is_not_a_finite_number_within_the_cap_never_becomes_the_sleep(
    value: str,
) -> None:
    for attempt in (1, 2, 3):
        delay = retry_delay(attempt, {"retry-after": value}, POLICY, NOW, jitter=lambda: 0.0)
        assert math.isfinite(delay)
        assert delay == min(0.5 * 2 ** (attempt - 1), 8.0)  # the backoff instead


def test_a_finite_wait_within_the_cap_is_honoured() -> None:
    assert retry_delay(1, {"retry-after": "7"}, POLICY, NOW) == 7.0
    assert retry_delay(1, {"retry-after": http_date(30)}, POLICY, NOW) == pytest.approx(30, abs=1)


def test_backoff_doubles_to_its_cap_with_up_to_a_quarter_of_jitter() -> None:
    slowest = [retry_delay(n, {}, POLICY, NOW, jitter=lambda: 0.0) for n in range(1, 8)]
    assert slowest == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    fastest = retry_delay(3, {}, POLICY, NOW, jitter=lambda: 1.0)
    assert fastest == 1.5
    assert retry_delay(10_000, {}, POLICY, NOW, jitter=lambda: 0.0) == 8.0  # no overflow


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (422, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
        (429, {"retry-after": "30"}, True),
        (429, {"retry-after": "600"}, False),  # longer than a member should wait: report it
        (429, {"retry-after": "1e999"}, False),
        (429, {"retry-after": "nan"}, True),  # unreadable: retried on the backoff
        (429, {"retry-after": "-1"}, True),
    ],
)
def test_what_is_retried(status: int, headers: dict[str, str], expected: bool) -> None:
    assert should_retry(status, headers, POLICY, NOW) is expected
