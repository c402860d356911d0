"""The floor for bench_scale: the least a discord.py bot can do for /imagine.

It defers, asks the Images API for one image, decodes its base64 and uploads the bytes as a
follow-up: no ledger, limits, previews, retries or re-encoding. What the real bot costs above
this is its own. It notes every loop stall over 2 ms (``monotonic lateness`` lines in
FLOOR_STALL_FILE) with a 5 ms ticker, so the harness can take the worst one of a run.
Run by bench_scale through its launcher (which points discord.py at the fake Discord).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from typing import TextIO

import aiohttp
import discord
from discord import app_commands


class Floor(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents(guilds=True))
        self.tree = app_commands.CommandTree(self)
        self.session: aiohttp.ClientSession | None = None
        self.ticker: asyncio.Task[None] | None = None
        # Opened here, off the loop: a line-buffered append costs the ticker a write per stall.
        self.stall_file = open(  # noqa: SIM115 - open for the process's life
            os.environ.get("FLOOR_STALL_FILE", os.devnull), "a", buffering=1
        )

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600)
        )
        self.ticker = asyncio.create_task(stalls(self.stall_file))
        self.tree.command(name="imagine", description="Make an image")(imagine)
        await self.tree.sync()


async def stalls(out: TextIO) -> None:
    interval = 0.005
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval)
        late = time.monotonic() - started - interval
        if late > 0.002:
            out.write(f"{time.monotonic()} {late}\n")


async def imagine(interaction: discord.Interaction, prompt: str) -> None:
    await interaction.response.defer()
    client = interaction.client
    assert isinstance(client, Floor) and client.session is not None
    async with client.session.post(
        os.environ["OPENAI_BASE_URL"].rstrip("/") + "/images/generations",
        json={"model": os.environ.get("FLOOR_MODEL", "gpt-image-2.5-flare"), "prompt": prompt},
        headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
    ) as response:
        answer = await response.json()
    image = base64.b64decode(answer["data"][0]["b64_json"])
    await interaction.followup.send(file=discord.File(io.BytesIO(image), filename="image.png"))


def main() -> None:
    Floor().run(os.environ["DISCORD_TOKEN"], log_handler=None)


if __name__ == "__main__":
    main()
