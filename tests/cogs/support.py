"""Helpers for driving the bot in simcord: reading replies, and declaring intended waits.

simcord settles after every action: it waits until the bot is idle or parked in a wait it knows.
A request that talks to the loopback Images API, or waits in the bot's queue, waits on something
simcord cannot see; these helpers declare such waits as intended (`env.external_wait`).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import simcord.interactions

from bot.observability.logs import json_handler

CALLBACK_DEFER = 5  # the interaction callback type of a deferred reply


def callback_types(env: Any) -> list[int]:
    return [r.json["type"] for r in env.http_requests if r.path.endswith("/callback")]


def fields(embed: Any) -> dict[str, str]:
    return {field.name: field.value for field in embed.fields}


async def uploaded(message: Any) -> list[bytes]:
    return [await attachment.read() for attachment in message.attachments]


async def setting(manager: Any, channel: Any, name: str, **options: Any) -> str:
    """Run one /imagine-settings subcommand; its private answer."""
    result = await manager.slash(channel, f"imagine-settings {name}", **options)
    assert result.response.ephemeral
    return str(result.response.content)


def private_reply(result: Any) -> Any:
    """The one ephemeral message a failed request ends with; the public placeholder is gone."""
    assert result.response is None, "the public placeholder was not removed"
    (reply,) = [m for m in result.followups if m.ephemeral]
    return reply


@contextmanager
def upload_limit(limit: int) -> Iterator[None]:
    """simcord serves a fixed 25 MiB upload limit; give interactions a smaller one, as a server
    without boosts has."""
    real = simcord.interactions.base_payload

    def with_limit(*args: Any, **kwargs: Any) -> Any:
        record, payload = real(*args, **kwargs)
        payload["attachment_size_limit"] = limit
        return record, payload

    simcord.interactions.base_payload = with_limit
    try:
        yield
    finally:
        simcord.interactions.base_payload = real


class Gate:
    """Holds each generation at the door until the test opens it."""

    def __init__(self, env: Any) -> None:
        self.opened: list[asyncio.Event] = []
        client = env.bot.images
        real_generate = client.generate

        async def gated(request: Any, **options: Any) -> Any:
            event = asyncio.Event()
            self.opened.append(event)
            await env.external_wait(event.wait(), reason="generation held by the test")
            return await real_generate(request, **options)

        client.generate = gated

    def open(self, index: int) -> None:
        self.opened[index].set()


def declare_generation_waits(env: Any) -> None:
    """Requests talk to the loopback API in the background: tell simcord the wait is intended."""
    client = env.bot.images
    real_generate = client.generate

    async def declared(request: Any, **options: Any) -> Any:
        return await env.external_wait(real_generate(request, **options), reason="image API call")

    client.generate = declared


async def finish(env: Any, seconds: float = 20.0) -> None:
    """Drive simcord's clock and wait (on the real one) until every /imagine job has ended."""
    admission = env.bot.admission
    for _ in range(int(seconds / 0.01)):
        await env.advance_time(0.25)
        if not admission.jobs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(admission.jobs)} job(s) still running after {seconds}s")


@contextmanager
def json_log_lines(settings: Any) -> Iterator[io.StringIO]:
    """Every line logged meanwhile, as the bot writes them with LOG_FORMAT=json, in a stream."""
    stream = io.StringIO()
    handler = json_handler(settings, stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
