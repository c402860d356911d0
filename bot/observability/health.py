"""Whether the bot can serve: the gateway connected, the ledger taking requests, the limit store
answering. Each part says why in a few words, never with a secret.

The database part writes (see :meth:`bot.store.ledger.Ledger.check_writable`): a database on a full
disk, or read-only, answers a ``SELECT 1`` while it refuses every request. Settlements the
database did not take are not a part of their own: they wait for the database that this part
already tests (the ledger logs them while it keeps trying).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import make_url

PART_TIMEOUT = 3.0  # seconds each part may take: a Docker health check waits for all of them
REASON_CHARS = 200


class Ledger(Protocol):
    """What the database part asks of the usage ledger (``bot.store.ledger.Ledger`` has it):
    observability sits below every layer, so it names what it needs instead of importing it."""

    @property
    def is_open(self) -> bool: ...
    @property
    def url(self) -> str: ...
    async def check_writable(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Part:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    parts: dict[str, Part]

    @property
    def ok(self) -> bool:
        return all(part.ok for part in self.parts.values())

    def as_json(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "unhealthy",
            **{name: {"ok": part.ok, "detail": part.detail} for name, part in self.parts.items()},
        }


def _reason(exc: BaseException, secret: str | None = None) -> str:
    """The error's kind and the first line of its text, without ``secret``."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    said = lines[0] if lines else ""
    if secret:
        said = said.replace(secret, "***")
    if len(said) > REASON_CHARS:
        said = said[: REASON_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


def gateway_part(ready: bool, closed: bool) -> Part:
    if closed:
        return Part(False, "the bot is shutting down")
    if not ready:
        return Part(False, "not connected to the Discord gateway")
    return Part(True, "connected")


async def database_part(ledger: Ledger | None) -> Part:
    """Whether the ledger takes a write now."""
    if ledger is None or not ledger.is_open:
        return Part(False, "the usage ledger is closed")
    password = make_url(ledger.url).password
    try:
        async with asyncio.timeout(PART_TIMEOUT):
            await ledger.check_writable()
    except TimeoutError:
        return Part(False, f"no write within {PART_TIMEOUT:g} s")
    except Exception as exc:  # whatever the driver raises, the database did not take the write
        return Part(False, _reason(exc, str(password) if password else None))
    return Part(True, "takes writes")


async def store_part(probe: Callable[[float], Awaitable[str | None]]) -> Part:
    """The rate-limit store's probe (the one `python -m bot check` uses)."""
    silent = await probe(PART_TIMEOUT)
    return Part(True, "answers") if silent is None else Part(False, silent)


async def check(
    *,
    ready: bool,
    closed: bool,
    ledger: Ledger | None,
    probe: Callable[[float], Awaitable[str | None]],
) -> Health:
    database, store = await asyncio.gather(database_part(ledger), store_part(probe))
    return Health(
        {"gateway": gateway_part(ready, closed), "database": database, "limit_store": store}
    )
