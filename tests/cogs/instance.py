"""One bot process for the tests of several processes sharing Redis and PostgreSQL.

Run as ``python -m tests.cogs.instance '<json>'`` by tests/cogs/test_shared_state.py: it starts an
ImagineBot in its own simcord, with the member and server ids and the application id the test gives
(so that every process sees the same member of the same bot), prints ``ready``, waits for a line on
its standard input, sends its share of /imagine requests (with ``hold``, prints ``sent`` and waits
for another line), waits for them to end, stops as an operator's restart stops it, and prints one
JSON line: what each request got.
With ``lease_seconds``, its ledger's lease lasts that long (bot.store.ledger.LEASE_SECONDS).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from simcord.backend.models.user import User
from simcord.builders import UserHandle
from simcord.env import Env

from bot.app import ImagineBot
from bot.images import ProcessingSlots
from bot.requests.queue import GenerationQueue
from bot.store import ledger
from tests.cogs.conftest import RECOMMENDED_SHARDS, DeclaredQueueWaits, make_settings
from tests.cogs.support import declare_generation_waits, finish


def member_with_id(env: Env, guild: Any, name: str, member_id: int) -> Any:
    """A member whose id the test chose: simcord draws ids from the clock, and every process must
    see the same member."""
    user = User(id=env.backend.reserve_id(member_id), name=name)
    env.backend.users[user.id] = user
    return guild.add_member(UserHandle(env, user))


def outcome(result: Any) -> str:
    """``delivered``, or the sentence the member was told privately."""
    response = result.response
    if response is not None and response.attachments:
        return "delivered"
    private = [m.content for m in [response, *result.followups] if m is not None and m.ephemeral]
    return private[-1] if private else "no answer"


async def main(plan: dict[str, Any]) -> None:
    settings = make_settings(plan["base_url"], Path(plan["data_dir"]), **plan["settings"])
    if "lease_seconds" in plan:
        ledger.LEASE_SECONDS = plan["lease_seconds"]
    waits = DeclaredQueueWaits()
    queue = GenerationQueue(settings.max_concurrent_generations, wait=waits)
    processing = ProcessingSlots(settings.processing_slot_count, wait=waits)
    bot = ImagineBot(settings, queue=queue, processing=processing)
    if bot.shard_count is None:
        bot.shard_count = RECOMMENDED_SHARDS
    env = Env(bot)
    # One bot in every process: simcord draws the application id from the clock.
    env.backend.application_id = env.backend.reserve_id(plan["application_id"])
    waits.env = env
    await env.start()
    try:
        with env.time_context():
            guild = env.create_guild("Art Club", id=plan["guild_id"])
            channel = guild.create_text_channel("imagine")
            alice = member_with_id(env, guild, "alice", plan["member_id"])
            declare_generation_waits(env)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            results = [
                await alice.slash(channel, "imagine", prompt=f"a cat {n}", model="dall-e-2")
                for n in range(plan["requests"])
            ]
            if plan.get("hold"):  # the test says when this process's requests may end
                print("sent", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await finish(env, seconds=60.0)
            print(json.dumps([outcome(result) for result in results]), flush=True)
    finally:
        await env.shutdown()
        await bot.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
