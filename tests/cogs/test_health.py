"""/healthz says whether a request could be admitted now: a database that answers a read but
takes no write (its disk full, or read-only) makes the bot unhealthy with the reason, and
`python -m bot health` exit 1. Then /healthz under a flood of questions."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.app import ImagineBot
from bot.observability.health import Health, Part
from bot.observability.metrics import Metrics
from bot.observability.server import MetricsServer
from bot.requests.generation import LEDGER_UNAVAILABLE
from bot.store.ledger import Ledger
from tests.bot.test_cli import run_cli
from tests.bot.test_ledger import prepared
from tests.cogs.support import private_reply
from tests.conftest import API_KEY

pytestmark = pytest.mark.simcord(settle_timeout=3.0)


@pytest.fixture
def bot_overrides(database_url: str) -> dict[str, Any]:
    return {"metrics_port": 0, "database_url": database_url}


async def healthz(bot: ImagineBot) -> tuple[int, dict[str, Any]]:
    assert bot.metrics_server is not None
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"http://127.0.0.1:{bot.metrics_server.port}/healthz") as response,
    ):
        return response.status, await response.json()


async def fill_the_disk(ledger: Ledger) -> None:
    """SQLite: no page more than the file has now (SQLite's own "database or disk is full", as on
    a full disk), then requests admitted until one no longer fits."""

    def no_more_pages(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        (pages,) = cursor.fetchone()
        cursor.execute(f"PRAGMA max_page_count = {int(pages)}")
        cursor.close()

    event.listen(ledger.engine.sync_engine, "connect", no_more_pages)
    await ledger.engine.dispose()  # every connection from now on has the limit
    for _ in range(10_000):
        try:
            await ledger.admitted(prepared(), member_id=1, guild_id=2, channel_id=3)
        except DBAPIError as exc:
            assert "database or disk is full" in str(exc.orig)
            return
    raise AssertionError("the database never filled up")


async def make_read_only(url: str, ledger: Ledger) -> None:
    """PostgreSQL: the database read-only from the next connection on (as a failover to a standby,
    or an operator's `default_transaction_read_only`)."""
    name = make_url(url).database
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        )
    await ledger.engine.dispose()


async def test_a_database_that_takes_no_write_makes_the_bot_unhealthy_with_the_reason(
    simcord_env: Any, channel: Any, alice: Any, database_url: str, tmp_path: Any
) -> None:
    bot = simcord_env.bot
    assert bot.metrics_server is not None
    bot.metrics_server.health_reuse_seconds = 0  # each question gets a new check
    status, report = await healthz(bot)
    assert status == 200 and report["database"]["ok"] is True

    ledger = bot.services.ledger
    if make_url(database_url).get_backend_name() == "sqlite":
        await fill_the_disk(ledger)
        reason = "OperationalError: database or disk is full"
    else:
        await make_read_only(database_url, ledger)
        reason = "cannot execute INSERT in a read-only transaction"
    # A read still works, which is all the health check asked before.
    async with ledger.engine.connect() as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    refused = await alice.slash(channel, "imagine", prompt="a cat")
    assert private_reply(refused).content == LEDGER_UNAVAILABLE  # acknowledged at once

    status, report = await healthz(bot)
    assert status == 503 and report["status"] == "unhealthy"
    assert report["database"]["ok"] is False
    assert reason in report["database"]["detail"]
    assert report["gateway"]["ok"] is True and report["limit_store"]["ok"] is True

    env = {"OPENAI_API_KEY": API_KEY, "METRICS_PORT": str(bot.metrics_server.port)}
    code, out, err = await run_cli("health", env=env, cwd=tmp_path)
    assert code == 1, out
    assert err.startswith("unhealthy (HTTP 503): database: ")
    assert reason in err


async def test_a_flood_of_health_questions_makes_one_check_a_second() -> None:
    checks = 0

    async def slow_check() -> Health:
        nonlocal checks
        checks += 1
        await asyncio.sleep(0.2)
        return Health({"database": Part(True, "takes writes")})

    server = MetricsServer(Metrics().registry, slow_check, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def ask() -> int:
                async with session.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                    return response.status

            assert await asyncio.gather(*(ask() for _ in range(30))) == [200] * 30
            assert checks == 1  # the thirty asked at once share one check
            assert await asyncio.gather(*(ask() for _ in range(30))) == [200] * 30
            assert checks == 1  # and its answer serves for a second
    finally:
        await server.stop()
