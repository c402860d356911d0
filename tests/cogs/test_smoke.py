from __future__ import annotations

from typing import Any

from tests.fakes.images_api import FakeImagesAPI


async def test_smoke(simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI) -> None:
    result = await alice.slash(channel, "imagine", prompt="a red fox", count=2)
    print(simcord_env.transcript())
    print(result.response.content, result.response.embeds, result.response.attachments)
    assert [await a.read() for a in result.response.attachments] == images_api.served
