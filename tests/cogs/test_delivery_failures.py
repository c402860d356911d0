"""Discord refusing part of a reply: the member is told privately, once, and what can still be
posted is posted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cogs.support import declare_generation_waits, finish, upload_limit
from tests.fakes.images_api import FakeImagesAPI, api_error, incompressible_png

pytestmark = pytest.mark.simcord(settle_timeout=3.0)
ORIGINAL = "/webhooks/*/messages/@original"


async def test_a_failed_delete_keeps_the_private_sentence_private(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    declare_generation_waits(simcord_env)
    images_api.push(api_error(400, "invalid_request_error", "content_policy_violation", "blocked"))
    simcord_env.inject_error("DELETE", ORIGINAL, status=403, code=50013, times=1)
    result = await alice.slash(channel, "imagine", prompt="a cat")
    await finish(simcord_env)
    private = [m.content for m in result.followups if m.ephemeral]
    assert len(private) == 1 and "safety system" in private[0]
    assert result.response.content == "⚠️ This request could not be completed."


@pytest.mark.parametrize("bot_overrides", [{"max_images_per_request": 2}])
async def test_a_follow_up_refused_as_too_large_is_retried_smaller(
    simcord_env: Any, channel: Any, alice: Any, images_api: FakeImagesAPI
) -> None:
    image = incompressible_png(300, 300)
    images_api.image_bytes = image
    simcord_env.inject_error("POST", "/webhooks/*", status=413, code=40005, times=1)
    with upload_limit(len(image) + 1000):
        result = await alice.slash(channel, "imagine", prompt="two", count=2)
    assert [m.content for m in result.followups if m.ephemeral] == []
    (follow_up,) = [m for m in result.followups if not m.ephemeral]
    (attachment,) = follow_up.attachments
    assert attachment.filename == "imagine-2.jpg"  # re-encoded within half the limit
    assert attachment.size <= (len(image) + 1000) // 2
