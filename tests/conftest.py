from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.images import ClientSettings, ImageClient, load_catalog
from tests.fakes.images_api import FakeImagesAPI

API_KEY = "sk-test-SENTINELKEY0123456789"


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
    return ClientSettings(timeout=5.0, backoff_base=0.01, download_timeout=5.0)


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
