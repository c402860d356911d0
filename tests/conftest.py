from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import Settings
from bot.images import ClientSettings, ImageClient, RetryPolicy, load_catalog
from tests.databases import POSTGRES_MISSING, PostgresServer, start_postgres
from tests.fakes.images_api import FakeImagesAPI
from tests.redis_server import REDIS_MISSING, RedisServer, start_redis

API_KEY = "sk-test-SENTINELKEY0123456789"
DISCORD_TOKEN = "discord-SENTINEL-token.abc.def"
SENTINELS = (API_KEY, DISCORD_TOKEN)

# Every variable the bot reads, derived from the settings so that a new one is covered too.
SETTING_VARIABLES = frozenset(field.upper() for field in Settings.model_fields)


@pytest.fixture(autouse=True)
def isolated_from_the_operator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads a setting from the shell it runs in, nor a ``.env`` where it was started."""
    for name in list(os.environ):
        if name.upper() in SETTING_VARIABLES:  # the settings match variable names in any case
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += "".join(traceback.format_exception(record.exc_info[1]))
    return text


def _discord_side_text(env: Any) -> str:
    """Everything the bot said to Discord (messages, embeds, file names) and every error it hit."""
    requests = [json.dumps(r.json, default=str) for r in env.http_requests]
    errors = ["".join(traceback.format_exception(error)) for error in env.errors]
    return "\n".join([env.transcript(), *requests, *errors])


@pytest.fixture(autouse=True)
def no_secret_leaks(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Every flow of the suite runs with sentinel secrets; none may surface anywhere."""
    caplog.set_level(logging.DEBUG)
    # Set up here, so the simulated Discord is torn down only after it has been read.
    env = request.getfixturevalue("simcord_env") if "simcord_env" in request.fixturenames else None
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    seen = [_record_text(record) for record in records]
    if env is not None:
        seen.append(_discord_side_text(env))
    for text in seen:
        for sentinel in SENTINELS:
            assert sentinel not in text, "a secret reached a log line, a message or an error"


@pytest.fixture
async def images_api() -> AsyncIterator[FakeImagesAPI]:
    fake = FakeImagesAPI(api_key=API_KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client_settings() -> ClientSettings:
    # The fake serves image URLs on loopback, as a gateway on the same host would.
    return ClientSettings(
        timeout=5.0, retry=RetryPolicy(backoff_base=0.01), allow_private_urls=True
    )


@pytest.fixture
def client(
    images_api: FakeImagesAPI, http: aiohttp.ClientSession, client_settings: ClientSettings
) -> ImageClient:
    return ImageClient(
        http,
        base_url=images_api.base_url,
        api_key=API_KEY,
        catalog=load_catalog(),
        settings=client_settings,
    )


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    yield from start_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer | None
) -> str:
    """The ledger's database, empty: a SQLite file, then a database on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    if postgres_server is None:
        pytest.skip(POSTGRES_MISSING)
    return postgres_server.create_database()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real Redis server of this test's own (a test may stop and start it), on loopback."""
    for server in start_redis():
        if server is None:
            pytest.skip(REDIS_MISSING)
        yield server


@pytest.fixture
def postgres_server_of_its_own() -> Iterator[PostgresServer]:
    """A real PostgreSQL server that this test alone uses, so that it may stop and start it."""
    for server in start_postgres():
        if server is None:
            pytest.skip(POSTGRES_MISSING)
        yield server


# The servers `.ci/run` installs: on CI, a test skipped for want of one fails the run.
_MISSING_ON_CI = {POSTGRES_MISSING: "postgresql", REDIS_MISSING: "redis-server"}
_skipped_for_want_of: dict[str, list[str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        for reason, package in _MISSING_ON_CI.items():
            if reason in str(report.longrepr):
                _skipped_for_want_of.setdefault(package, []).append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI the PostgreSQL and Redis tests must run: `.ci/run` installs the servers."""
    if os.environ.get("CI") and _skipped_for_want_of:
        for package, tests in _skipped_for_want_of.items():
            print(f"\nCI: {len(tests)} test(s) needing {package} were skipped; install {package}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
