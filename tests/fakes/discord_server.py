"""Discord for a bot in another process (the container test): simcord's backend behind a real
HTTPS server and gateway.

The suite runs the bot in its own process against simcord, which replaces discord.py's HTTP
client and gateway in place; a bot in a container can be reached only over the network. This
serves simcord's route table where discord.py sends its requests (``https://discord.com/api``;
the container resolves discord.com here and trusts this server's certificate), answers
``/gateway/bot``, which simcord has no route for, and runs a gateway that says HELLO, answers
IDENTIFY with READY and acknowledges heartbeats: enough for the bot to log in, sync its
commands and be ready. Routes simcord lacks answer 501 and are kept in ``gaps``.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from typing import Any

import simcord.http.routes  # noqa: F401 - importing registers simcord's route handlers
from aiohttp import WSMsgType, web
from simcord.backend import Backend, serializers
from simcord.backend.errors import BackendError
from simcord.http import router

GATEWAY_HOST = "gateway.discord.gg"
HOSTS = ("discord.com", GATEWAY_HOST)  # the names the certificate must carry
HEARTBEAT_INTERVAL_MS = 41250  # Discord's
# Gateway opcodes (Discord's documentation, "Gateway Opcodes").
DISPATCH, HEARTBEAT, IDENTIFY, HELLO, HEARTBEAT_ACK = 0, 1, 2, 10, 11
JSON = {"Content-Type": "application/json"}


def _json(payload: Any, status: int = 200) -> web.Response:
    # Exactly Discord's content type: discord.py reads a body as JSON only under this one.
    return web.Response(body=json.dumps(payload).encode(), status=status, headers=JSON)


@dataclass
class NetworkDiscord:
    token: str
    backend: Backend = field(default_factory=Backend)
    identified: list[list[int]] = field(default_factory=list)  # [shard, count] of each IDENTIFY
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of each REST request
    gaps: list[str] = field(default_factory=list)  # requests simcord has no route or field for
    refused_tokens: int = 0
    _runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, certificate: ssl.SSLContext) -> None:
        app = web.Application()
        app.router.add_get("/api/v{version}/gateway/bot", self._gateway_bot)
        app.router.add_route("*", "/api/v{version}/{path:.*}", self._rest)
        app.router.add_get("/", self._gateway)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=certificate).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") == f"Bot {self.token}":
            return True
        self.refused_tokens += 1
        return False

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        self.requests.append(f"GET {request.path}")
        return _json(
            {
                "url": f"wss://{GATEWAY_HOST}",
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _rest(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        path = "/" + request.match_info["path"]
        self.requests.append(f"{request.method} {path}")
        body = await request.json() if request.can_read_body else None
        return self._answer(request.method, path, body, dict(request.query))

    def _answer(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str],
        files: list[Any] | None = None,
    ) -> web.Response:
        """simcord's answer to a request, or the error Discord would give (501 for a gap)."""
        try:
            answer = router.dispatch(
                self.backend, method, path, json=body, params=params, files=files
            )
        except (router.RouteNotImplemented, router.UnsupportedField) as gap:
            self.gaps.append(f"{method} {path}: {gap}")
            return _json({"message": str(gap), "code": 0}, status=501)
        except BackendError as error:
            return _json(error.to_json(), status=error.status)
        if answer is None:
            return web.Response(status=204)
        return _json(answer)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        sequence = 0
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            payload: dict[str, Any] = json.loads(message.data)
            if payload.get("op") == HEARTBEAT:
                await socket.send_json({"op": HEARTBEAT_ACK, "d": None})
            elif payload.get("op") == IDENTIFY:
                identify = payload["d"]
                if identify.get("token") != self.token:
                    self.refused_tokens += 1
                    await socket.close(code=4004, message=b"Authentication failed.")
                    break
                shard = identify.get("shard", [0, 1])
                self.identified.append(shard)
                sequence += 1
                await socket.send_json(
                    {"op": DISPATCH, "t": "READY", "s": sequence, "d": self._ready(shard)}
                )
        return socket

    def _ready(self, shard: list[int]) -> dict[str, Any]:
        """READY as simcord's own gateway sends it (simcord/gateway.py), with no server yet."""
        return {
            "v": 10,
            "user": dict(serializers.user_payload(self.backend.bot_user)),
            "guilds": [],
            "session_id": f"network-session-{shard[0]}",
            "resume_gateway_url": f"wss://{GATEWAY_HOST}",
            "shard": shard,
            "application": {"id": str(self.backend.application_id), "flags": 0},
        }
