"""Metrics, health and JSON log lines of a bot driven through simcord against the fake API."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.__main__ import _health
from bot.app import ImagineBot
from bot.config import Settings
from tests.cogs.conftest import make_settings
from tests.cogs.support import declare_generation_waits, finish, json_log_lines, uploaded
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, api_error

pytestmark = pytest.mark.simcord(settle_timeout=3.0)

METRICS = {"metrics_port": 0, "max_retries": 1}  # 0: a free port, read back from the server


@pytest.fixture
async def scraper() -> AsyncIterator[aiohttp.ClientSession]:
    # No kept-alive connection: the server's handler for it would be the bot's work left waiting
    # on something simcord cannot see, when simcord next settles.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        yield session


def base_url(bot: ImagineBot) -> str:
    assert bot.metrics_server is not None and bot.metrics_server.port
    return f"http://127.0.0.1:{bot.metrics_server.port}"


async def scrape(session: aiohttp.ClientSession, bot: ImagineBot) -> dict[tuple[str, str], float]:
    """Every sample of /metrics, by name and its labels written as k=v,k=v."""
    async with session.get(f"{base_url(bot)}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name, labels] = sample.value
    return samples


async def healthz(session: aiohttp.ClientSession, bot: ImagineBot) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{base_url(bot)}/healthz") as response:
        return response.status, await response.json()


@pytest.mark.parametrize("bot_overrides", [METRICS])
async def test_a_delivered_request_moves_the_counters_and_histograms(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    scraper: aiohttp.ClientSession,
) -> None:
    bot = simcord_env.bot
    before = await scrape(scraper, bot)
    assert ("imagine_requests_total", "command=imagine,outcome=delivered") not in before
    assert before["imagine_upstream_limit", ""] == bot.settings.max_concurrent_generations
    assert before["imagine_in_flight", "stage=upstream"] == 0

    declare_generation_waits(simcord_env)
    model = "gpt-image-1"  # priced per token: the ledger settles a known cost
    result = await alice.slash(
        channel, "imagine", prompt="a cat", model=model, size="1024x1536", quality="low", count=2
    )
    await finish(simcord_env)
    images = await uploaded(result.response)
    assert len(images) == 2

    after = await scrape(scraper, bot)
    assert after["imagine_requests_total", "command=imagine,outcome=delivered"] == 1
    assert after["imagine_images_delivered_total", ""] == 2
    assert after["imagine_delivered_bytes_total", ""] == sum(len(image) for image in images)
    assert after["imagine_generation_seconds_count", f"model={model}"] == 1
    assert after["imagine_request_seconds_count", f"model={model}"] == 1
    async with bot.services.ledger.engine.connect() as connection:
        cost = await connection.scalar(text("SELECT cost FROM usage_ledger"))
    assert cost > 0
    assert after["imagine_spend_usd_total", f"model={model}"] == pytest.approx(float(cost))
    assert after["imagine_in_flight", "stage=processing"] == 0
    assert after["imagine_processing_slots", ""] == bot.settings.processing_slot_count
    assert after["imagine_unslotted_bytes", ""] == 0  # the previews' room given back
    slots = bot.settings.processing_slot_count
    assert after["imagine_unslotted_bytes_max", ""] == 8 * 1024 * 1024 * slots
    assert after["imagine_gateway_latency_seconds", "shard=0"] >= 0
    assert after["imagine_event_loop_lag_seconds_count", ""] >= 0


def by_kind(samples: dict[tuple[str, str], float], name: str) -> dict[str, float]:
    return {
        labels.removeprefix("kind="): value for (n, labels), value in samples.items() if n == name
    }


@pytest.mark.parametrize("bot_overrides", [METRICS])
@pytest.mark.parametrize(
    ("status", "times", "outcome", "retries", "errors"),
    [
        pytest.param(429, 1, "delivered", {"RateLimited": 1}, {}, id="429-then-served"),
        pytest.param(
            500,
            2,
            "failed",
            {"UpstreamUnavailable": 1},
            {"UpstreamUnavailable": 1},
            id="500-until-retries-run-out",
        ),
    ],
)
async def test_upstream_faults_count_retries_errors_and_the_outcome(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    scraper: aiohttp.ClientSession,
    status: int,
    times: int,
    outcome: str,
    retries: dict[str, float],
    errors: dict[str, float],
) -> None:
    declare_generation_waits(simcord_env)
    images_api.push(*[api_error(status, "requests", "rate_limit_exceeded")] * times)
    await alice.slash(channel, "imagine", prompt="a cat")
    await finish(simcord_env)

    samples = await scrape(scraper, simcord_env.bot)
    assert by_kind(samples, "imagine_upstream_retries_total") == retries
    assert by_kind(samples, "imagine_upstream_errors_total") == errors
    assert samples["imagine_requests_total", f"command=imagine,outcome={outcome}"] == 1
    lowered = (
        samples["imagine_upstream_limit", ""] < simcord_env.bot.settings.max_concurrent_generations
    )
    assert lowered == (status == 429)  # the adaptive limit halves on a 429 only


@pytest.mark.parametrize("bot_overrides", [METRICS | {"user_rate_limit": "1/hour"}])
async def test_a_request_over_the_limit_is_counted_as_rate_limited(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    scraper: aiohttp.ClientSession,
) -> None:
    declare_generation_waits(simcord_env)
    await alice.slash(channel, "imagine", prompt="a cat")
    await finish(simcord_env)
    await alice.slash(channel, "imagine", prompt="another cat")
    samples = await scrape(scraper, simcord_env.bot)
    assert samples["imagine_requests_total", "command=imagine,outcome=rate_limited"] == 1
    assert samples["imagine_requests_total", "command=imagine,outcome=delivered"] == 1


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"


@pytest.fixture
def settings(
    images_api: FakeImagesAPI, tmp_path: Path, bot_overrides: dict[str, Any], ledger_dir: Path
) -> Settings:
    database = f"sqlite:///{ledger_dir / 'imagine.db'}"
    return make_settings(
        images_api.base_url, tmp_path / "data", database_url=database, **bot_overrides
    )


@pytest.mark.parametrize("bot_overrides", [METRICS])
async def test_healthz_is_200_when_healthy_and_503_naming_the_database_when_it_is_gone(
    simcord_env: Any, scraper: aiohttp.ClientSession, ledger_dir: Path
) -> None:
    bot = simcord_env.bot
    assert bot.metrics_server is not None
    bot.metrics_server.health_reuse_seconds = 0  # each question gets a new check
    status, report = await healthz(scraper, bot)
    assert status == 200
    assert report["status"] == "ok"
    assert {name: part["ok"] for name, part in report.items() if name != "status"} == {
        "gateway": True,
        "database": True,
        "limit_store": True,
    }

    shutil.rmtree(ledger_dir)
    await bot.services.ledger.engine.dispose()  # its pooled connection kept the file open
    status, report = await healthz(scraper, bot)
    assert status == 503
    assert report["status"] == "unhealthy"
    assert report["database"]["ok"] is False
    assert "unable to open database file" in report["database"]["detail"]
    assert report["gateway"]["ok"] is True and report["limit_store"]["ok"] is True


@pytest.mark.parametrize("bot_overrides", [METRICS])
async def test_python_m_bot_health_asks_the_running_bot(
    simcord_env: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bot = simcord_env.bot
    assert bot.metrics_server is not None
    bot.metrics_server.health_reuse_seconds = 0  # each question gets a new check
    settings = make_settings(
        bot.settings.openai_base_url, tmp_path, metrics_port=bot.metrics_server.port
    )
    assert await _health(settings) == 0
    assert capsys.readouterr().out == (
        "healthy: gateway: connected, database: takes writes, limit_store: answers\n"
    )
    await bot.services.ledger.close()
    assert await _health(settings) == 1
    assert capsys.readouterr().err == "unhealthy (HTTP 503): database: the usage ledger is closed\n"


async def test_without_metrics_port_no_server_listens(simcord_env: Any) -> None:
    assert simcord_env.bot.metrics_server is None


@pytest.mark.parametrize("bot_overrides", [{"log_format": "json"}])
async def test_json_log_lines_of_a_request_carry_its_ids_and_no_key(
    simcord_env: Any, channel: Any, alice: Any, bob: Any, images_api: FakeImagesAPI
) -> None:
    with json_log_lines(simcord_env.bot.settings) as stream:
        declare_generation_waits(simcord_env)
        await alice.slash(channel, "imagine", prompt="a cat")
        await bob.slash(channel, "imagine", prompt="a dog")
        await finish(simcord_env)

    written = stream.getvalue()
    assert API_KEY not in written
    lines = [json.loads(line) for line in written.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    generated = [line for line in lines if line["message"].startswith("generated ")]
    assert len(generated) == 2
    # Each request's lines carry its own correlation id, and the service's request id.
    assert len({line["correlation_id"] for line in generated}) == 2
    for line in generated:
        assert line["request_id"] in line["message"]
        assert line["request_id"].startswith("req_")
        ours = [other for other in lines if other.get("correlation_id") == line["correlation_id"]]
        assert any(other["message"].startswith("/imagine from user") for other in ours)


@pytest.mark.parametrize("bot_overrides", [METRICS])
async def test_edits_are_counted_apart_from_generations(
    simcord_env: Any,
    channel: Any,
    alice: Any,
    images_api: FakeImagesAPI,
    scraper: aiohttp.ClientSession,
) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(picture, "PNG")
    await alice.slash(channel, "edit", image=("photo.png", picture.getvalue()), prompt="a hat")
    await alice.slash(channel, "imagine", prompt="a cat")

    samples = await scrape(scraper, simcord_env.bot)
    assert samples["imagine_requests_total", "command=edit,outcome=delivered"] == 1
    assert samples["imagine_requests_total", "command=imagine,outcome=delivered"] == 1
