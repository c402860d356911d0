"""Discord for bench_scale, in a process of its own: tests/fakes/discord_server.py on plain HTTP
on loopback, with one server, its members and a control door for the harness.

The bot under test is a separate process, as against Discord: it logs in over the gateway, gets
the server in GUILD_CREATE and is sent INTERACTION_CREATE over the gateway when the harness
asks (``POST /_bench/fire?n=N``). The fake notes the time each interaction is sent, its
callback (the acknowledgement) arrives, and its first message with a non-preview attachment
(the delivery) arrives; ``GET /_bench/results`` returns them. Times are ``time.monotonic()``,
the system's clock, so the harness can compare them with its own.

Decisions: plain HTTP and WebSocket, not TLS: the bot is pointed here by discord.py's base URL
(bench_scale's launcher), and TLS would cost both bots alike. The backend's clock is the real
one: interactions' snowflakes carry their creation time, and the bot measures its 15-minute
token against it. Uploads are kept as a fingerprint (length and ends), as bench_imagine does,
so the fake's memory is not an archive of every image.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import time
from typing import Any

import discord
from aiohttp import BodyPartReader, WSMsgType, web
from simcord._clock import Clock
from simcord.backend import Backend, serializers
from simcord.backend.cdn import CdnStore
from simcord.interactions import base_payload

from tests.fakes.discord_server import (
    DISPATCH,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HEARTBEAT_INTERVAL_MS,
    HELLO,
    IDENTIFY,
    JSON,
    NetworkDiscord,
    _json,
)

CHAT_INPUT = 1
APPLICATION_COMMAND = 2
STRING = 3


class RealClock(Clock):
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)


def _fingerprint_uploads() -> None:
    real = CdnStore.store_attachment

    def store(
        self: Any, attachment_id: int, channel_id: int, filename: str, data: bytes, *rest: Any
    ) -> Any:
        fingerprint = b"%d:" % len(data) + data[:32] + data[-32:]
        return real(self, attachment_id, channel_id, filename, fingerprint, *rest)

    CdnStore.store_attachment = store  # type: ignore[method-assign,assignment]


class BenchDiscord(NetworkDiscord):
    def __init__(self, token: str, port: int) -> None:
        super().__init__(token=token, backend=Backend(clock=RealClock()))
        self.port = port
        self.guild = self.backend.create_guild("bench")
        self.channel = self.backend.create_channel(self.guild.id, "imagine")
        self.socket: web.WebSocketResponse | None = None
        self.sequence = 1000
        self.dispatched: dict[str, float] = {}  # by interaction token
        self.acknowledged: dict[str, float] = {}
        self.delivered: dict[str, float] = {}
        self.previews = 0
        self.tokens: dict[str, str] = {}  # interaction id -> token
        self.fired = 0

    async def serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_bench/fire", self._fire)
        app.router.add_get("/_bench/results", self._results)
        app.router.add_get("/api/v{version}/gateway/bot", self._gateway_bot)
        app.router.add_route("*", "/api/v{version}/{path:.*}", self._bench_rest)
        app.router.add_get("/", self._bench_gateway)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        answer = await super()._gateway_bot(request)
        if answer.status != 200:
            return answer
        assert isinstance(answer.body, bytes)
        payload = json.loads(answer.body) | {"url": f"ws://127.0.0.1:{self.port}"}
        return web.Response(body=json.dumps(payload).encode(), headers=JSON)

    async def _bench_gateway(self, request: web.Request) -> web.WebSocketResponse:
        """The fake's gateway (HELLO, READY, heartbeats) with the server announced after READY,
        and the socket kept for the interactions fired later."""
        socket = web.WebSocketResponse(max_msg_size=0)
        await socket.prepare(request)
        self.socket = socket
        await socket.send_json({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            payload: dict[str, Any] = json.loads(message.data)
            if payload.get("op") == HEARTBEAT:
                await socket.send_json({"op": HEARTBEAT_ACK, "d": None})
            elif payload.get("op") == IDENTIFY:
                if payload["d"].get("token") != self.token:
                    await socket.close(code=4004, message=b"Authentication failed.")
                    break
                shard = payload["d"].get("shard", [0, 1])
                self.identified.append(shard)
                await socket.send_json(
                    {"op": DISPATCH, "t": "READY", "s": 1, "d": self._ready(shard)}
                )
                guild = dict(serializers.guild_create_payload(self.backend, self.guild))
                await socket.send_json({"op": DISPATCH, "t": "GUILD_CREATE", "s": 2, "d": guild})
        return socket

    async def _bench_rest(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        path = "/" + request.match_info["path"]
        # Interaction callbacks and webhooks are authorised by their token in the path, as on
        # Discord: discord.py sends them without the bot's token.
        by_token = path.startswith(("/interactions/", "/webhooks/"))
        if not by_token and not self._authorised(request):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        self.requests.append(f"{request.method} {path}")
        body: Any = None
        files: list[discord.File] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                data = await part.read()
                if part.name == "payload_json":
                    body = json.loads(data)
                else:
                    name = part.filename or "file"
                    files.append(discord.File(io.BytesIO(bytes(data)), filename=name))
        elif request.can_read_body:
            body = await request.json()
        self._note(request.method, path, files, arrived)
        return self._answer(request.method, path, body, dict(request.query), files)

    def _note(self, method: str, path: str, files: list[discord.File], at: float) -> None:
        parts = path.strip("/").split("/")
        if parts[0] == "interactions" and parts[-1] == "callback":
            token = parts[2]
            self.acknowledged.setdefault(token, at)
        elif parts[0] == "webhooks" and len(parts) >= 3 and files:
            token = parts[2]
            if all(file.filename.startswith("preview") for file in files):
                self.previews += 1
            else:
                self.delivered.setdefault(token, at)

    def _command_id(self) -> int:
        for command in self.backend.commands.get(None, {}).values():
            if command.get("name") == "imagine":
                return int(command["id"])
        return self.backend.snowflake()

    async def _fire(self, request: web.Request) -> web.Response:
        n = int(request.query["n"])
        socket = self.socket
        if socket is None:
            return _json({"message": "no gateway connection"}, status=409)
        command = self._command_id()
        payloads = []
        for _ in range(n):
            self.fired += 1
            user = self.backend.make_user(f"member{self.fired}")
            self.backend.add_member(self.guild.id, user.id)
            data = {
                "id": str(command),
                "name": "imagine",
                "type": CHAT_INPUT,
                "options": [{"name": "prompt", "type": STRING, "value": f"a cat {self.fired}"}],
            }
            record, payload = base_payload(
                self.backend,
                type=APPLICATION_COMMAND,
                channel_id=self.channel.id,
                guild_id=self.guild.id,
                user_id=user.id,
                data=data,
            )
            payloads.append((record.token, payload))
        for token, payload in payloads:
            self.sequence += 1
            self.dispatched[token] = time.monotonic()
            await socket.send_str(
                json.dumps(
                    {"op": DISPATCH, "t": "INTERACTION_CREATE", "s": self.sequence, "d": payload}
                )
            )
        return _json({"fired": n})

    async def _results(self, request: web.Request) -> web.Response:
        return _json(
            {
                "identified": len(self.identified),
                "commands": sum(1 for r in self.requests if "/commands" in r and "PUT" in r),
                "dispatched": self.dispatched,
                "acknowledged": self.acknowledged,
                "delivered": self.delivered,
                "previews": self.previews,
                "gaps": self.gaps[:20],
            }
        )


async def _main(port: int, token: str) -> None:
    _fingerprint_uploads()
    discord_ = BenchDiscord(token, port)
    await discord_.serve()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="bench_scale's Discord, on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.token))


if __name__ == "__main__":
    main()
