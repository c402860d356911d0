"""Bad days: the limit store or the database goes away mid-run and comes back. Requests meanwhile
get a sentence, nothing is lost or counted twice, and the bot recovers without a restart. The
servers are real (Redis, PostgreSQL) and really stopped and started again on the same port."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.requests.admission import LIMITS_UNAVAILABLE
from bot.requests.generation import LEDGER_UNAVAILABLE
from tests.cogs.support import Gate, finish
from tests.databases import PostgresServer, ledger_rows
from tests.fakes.images_api import FakeImagesAPI
from tests.redis_server import RedisServer


async def settled(env: Any, seconds: float = 30.0) -> None:
    """Drive simcord's clock and wait (on the real one) until the ledger has written every
    settlement it could not write before."""
    ledger = env.bot.services.ledger
    for _ in range(int(seconds / 0.05)):
        if not ledger.unsettled:
            return
        await env.advance_time(1.0)
        await asyncio.sleep(0.05)
    raise AssertionError(f"rows {sorted(ledger.unsettled)} still unsettled after {seconds}s")


class TestTheLimitStoreGoesAway:
    @pytest.fixture
    def bot_overrides(self, redis_server: RedisServer) -> dict[str, Any]:
        return {"rate_limit_storage_uri": redis_server.url, "user_rate_limit": "2/minute"}

    async def test_requests_meanwhile_are_told_and_the_store_is_used_again_when_back(
        self,
        simcord_env: Any,
        channel: Any,
        alice: Any,
        images_api: FakeImagesAPI,
        redis_server: RedisServer,
    ) -> None:
        first = await alice.slash(channel, "imagine", prompt="a cat")
        assert len(first.response.attachments) == 1

        redis_server.stop()
        refused = await alice.slash(channel, "imagine", prompt="a dog")

        assert refused.response.ephemeral
        assert refused.response.content == LIMITS_UNAVAILABLE
        assert len(images_api.generation_requests) == 1  # nothing was sent meanwhile

        redis_server.start()  # empty (the test's server keeps nothing on disk)
        again = await alice.slash(channel, "imagine", prompt="a fox")
        assert len(again.response.attachments) == 1
        more = await alice.slash(channel, "imagine", prompt="an owl")
        assert len(more.response.attachments) == 1
        limited = await alice.slash(channel, "imagine", prompt="a bee")
        assert "limit of 2 image requests per minute" in limited.response.content

    async def test_the_member_is_answered_within_discord_s_three_seconds_and_it_recovers(
        self,
        simcord_env: Any,
        channel: Any,
        alice: Any,
        images_api: FakeImagesAPI,
        redis_server: RedisServer,
    ) -> None:
        limiter = simcord_env.bot.admission.limiter
        asking = limiter.acquire

        async def declared(user_key: str) -> Any:  # simcord cannot see a wait on a socket
            return await simcord_env.external_wait(asking(user_key), reason="the limit store")

        limiter.acquire = declared
        redis_server.pause()  # connections stay open; nothing answers
        try:
            hung = await alice.slash(channel, "imagine", prompt="a dog")
            await simcord_env.advance_time(2.0)  # on the bot's clock: within Discord's 3 s
        finally:
            redis_server.resume()

        assert hung.response.ephemeral
        assert hung.response.content == LIMITS_UNAVAILABLE
        assert images_api.generation_requests == []
        # The abandoned count ran when the store woke (one of the two a minute): one more fits.
        again = await alice.slash(channel, "imagine", prompt="a fox")
        assert len(again.response.attachments) == 1


class TestTheDatabaseGoesAway:
    @pytest.fixture
    def bot_overrides(self, postgres_server_of_its_own: PostgresServer) -> dict[str, Any]:
        self.database_url = postgres_server_of_its_own.create_database()
        return {
            "database_url": self.database_url,
            "member_budget": "2 images/day",
            "user_rate_limit": "3/minute",
        }

    async def test_a_request_in_flight_is_settled_once_it_is_back_and_nothing_counts_twice(
        self,
        simcord_env: Any,
        channel: Any,
        alice: Any,
        images_api: FakeImagesAPI,
        postgres_server_of_its_own: PostgresServer,
    ) -> None:
        server = postgres_server_of_its_own
        registry = simcord_env.bot.metrics.registry
        model = "gpt-image-1"  # priced per token: the ledger settles a known cost

        def spend() -> float:
            return registry.get_sample_value("imagine_spend_usd_total", {"model": model}) or 0.0

        gate = Gate(simcord_env)
        # Reserved, then held.
        in_flight = await alice.slash(channel, "imagine", prompt="a cat", model=model)

        server.stop()
        refused = await alice.slash(channel, "imagine", prompt="a dog")
        assert refused.response.ephemeral
        assert refused.response.content == LEDGER_UNAVAILABLE

        gate.open(0)  # the held request ends while the database is away
        await finish(simcord_env)
        assert len(in_flight.response.attachments) == 1
        assert simcord_env.bot.services.ledger.unsettled  # kept, to be written later
        assert spend() == 0  # not in the ledger yet, so not in the metric either

        server.start()
        await settled(simcord_env)
        rows = await ledger_rows(self.database_url)
        assert [(row["outcome"], row["images_delivered"]) for row in rows] == [("delivered", 1)]
        assert rows[0]["cost"] > 0
        assert spend() == pytest.approx(float(rows[0]["cost"]))  # counted once it was written

        # Recovered without a restart; the budget counts the delivered image once and the
        # refused request not at all: one more image today, then no more. Nor did the refused
        # request count against the limit of three a minute: the fourth meets the budget.
        third = await alice.slash(channel, "imagine", prompt="a fox", model=model)
        gate.open(1)
        await finish(simcord_env)
        assert len(third.response.attachments) == 1
        over = await alice.slash(channel, "imagine", prompt="an owl")
        assert over.response.ephemeral
        assert "2 images are already used or reserved" in over.response.content
        rows = await ledger_rows(self.database_url)
        assert [row["outcome"] for row in rows] == ["delivered", "delivered"]
        assert spend() == pytest.approx(float(sum(row["cost"] for row in rows)))  # each once
