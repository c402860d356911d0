"""The metrics server: ``/metrics`` for Prometheus and ``/healthz`` for a health check, on the
bot's own event loop (aiohttp's web server), at METRICS_HOST:METRICS_PORT.

It shares the bot's process, so whoever can reach the port must not be able to take what the bot
needs: its file descriptors (each connection holds one; the image calls need theirs) and memory.

- A connection is closed once idle for ``idle_seconds`` (10), before its first request or
  between two: aiohttp's own default keeps an idle connection an hour.
- At most ``max_connections`` (32) are open at once: a new connection beyond that closes the
  oldest idle one (Prometheus reconnects at its next scrape), or is closed itself while every
  one is busy answering. A flood of connections therefore holds 32 descriptors, and a health
  check still gets in.
- A request's line and headers are held to a few kilobytes (``MAX_FIELD_BYTES``,
  ``MAX_HEADERS``): Prometheus and a health check send a handful of short headers.
- A request that is not HTTP, or not well-formed, is one short DEBUG line: aiohttp's own log
  gives each an ERROR with a traceback (100 scanner requests wrote 46 KB of log).
- Health checks asked at once share one check, and its answer serves for
  ``HEALTH_REUSE_SECONDS``: a check writes to the database, which a flood of /healthz must not
  multiply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bot.observability.health import Health

log = logging.getLogger(__name__)

IDLE_SECONDS = 10.0
MAX_CONNECTIONS = 32
MAX_FIELD_BYTES = 4096  # a request line or one header
MAX_HEADERS = 32
HEALTH_REUSE_SECONDS = 1.0
REASON_CHARS = 80  # of what was wrong with a malformed request, in its DEBUG line


class _ClientMistakes:
    """aiohttp's server log for this port (it calls ``exception`` and ``debug``, with tracebacks).
    A request it could not read is the client's mistake, or a scanner's: one DEBUG line, no
    traceback; anything else, a failure of the bot's own handlers, stays an ERROR with one."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def exception(
        self, msg: str, *args: object, exc_info: BaseException | bool = True, **_: object
    ) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(exc_info)
        else:
            self._log.error(msg, *args, exc_info=exc_info)

    def debug(
        self, msg: str, *args: object, exc_info: BaseException | None = None, **_: object
    ) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(exc_info)
        else:
            self._log.debug(msg, *args)

    def warning(self, msg: str, *args: object, **_: object) -> None:
        self._log.warning(msg, *args)

    def _malformed(self, exc: HttpProcessingError) -> None:
        # The client's bytes are repr'd: they may hold anything, line breaks and escapes too.
        first = (exc.message or "").strip().splitlines()
        said = first[0][:REASON_CHARS] if first else ""
        self._log.debug(
            "a malformed request to the metrics port (%s: %r)", type(exc).__name__, said
        )


class _Turned(asyncio.Protocol):
    """A connection beyond the limit while every other one is busy: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class MetricsServer:
    idle_seconds = IDLE_SECONDS
    max_connections = MAX_CONNECTIONS
    health_reuse_seconds = HEALTH_REUSE_SECONDS

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], Awaitable[Health]],
        *,
        host: str,
        port: int,
    ) -> None:
        self._registry = registry
        self._health = health
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._busy: set[RequestHandler] = set()  # connections answering a request now
        # Open connections that have sent a request: aiohttp's keep-alive timer closes them once
        # idle. (A handler takes no weak reference: closed ones are dropped at each new one.)
        self._served: set[RequestHandler] = set()
        self.port: int | None = None  # the port listened on, once started (METRICS_PORT=0)
        self._failing = ""  # what the last health check found failing, to log it once
        self._checking: asyncio.Future[Health] | None = None  # the check under way
        self._checked: tuple[float, Health] | None = None  # the last answer and when it came

    async def start(self) -> None:
        app = web.Application(middlewares=[self._answering])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.idle_seconds,
            max_line_size=MAX_FIELD_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            logger=_ClientMistakes(log),
        )
        await runner.setup()
        server = runner.server
        assert server is not None  # made by setup
        try:
            # Listened on here, not by an aiohttp site: each connection passes the limit first.
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: self._accept(server), self._host, self._port
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(self._listener.sockets[0].getsockname()[1])
        log.info("metrics and health at http://%s:%d/metrics and /healthz", self._host, self.port)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # closes the connections still open

    def _accept(self, server: web.Server) -> asyncio.BaseProtocol:
        """The protocol for a new connection: aiohttp's, once there is room for it."""
        # A connection closed a moment ago stays listed until its handler has ended.
        open_ = [handler for handler in server.connections if handler.transport is not None]
        if len(open_) >= self.max_connections:
            idle = [handler for handler in open_ if handler not in self._busy]
            if not idle:
                return _Turned()
            idle[0].force_close()  # the oldest idle one
        self._served = {served for served in self._served if served.transport is not None}
        handler = server()
        # aiohttp's keep-alive timer starts only after a first request in the versions this bot
        # allows (before 3.14.5): one that never sends one is closed here.
        asyncio.get_running_loop().call_later(self.idle_seconds, self._close_if_never_used, handler)
        return handler

    def _close_if_never_used(self, handler: RequestHandler) -> None:
        if handler.transport is not None and handler not in self._served:
            handler.force_close()

    @web.middleware
    async def _answering(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self._busy.add(request.protocol)
        self._served.add(request.protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(request.protocol)

    async def _metrics(self, _request: web.Request) -> web.Response:
        # Reading the counters and the objects' state is quick and never awaits.
        body = generate_latest(self._registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def _healthz(self, _request: web.Request) -> web.Response:
        health = await self._shared_check()
        failing = ", ".join(
            f"{name} ({part.detail})" for name, part in health.parts.items() if not part.ok
        )
        if failing != self._failing:  # once per change, not at every probe
            if failing:
                log.warning("health check failing: %s", failing)
            else:
                log.info("health check passing again")
            self._failing = failing
        return web.json_response(health.as_json(), status=200 if health.ok else 503)

    async def _shared_check(self) -> Health:
        """The last answer if it is recent, else the check under way, else a new one."""
        loop = asyncio.get_running_loop()
        checked = self._checked
        if checked is not None and loop.time() - checked[0] < self.health_reuse_seconds:
            return checked[1]
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check())
        # Shielded: a client that hangs up does not cancel the others' answer.
        return await asyncio.shield(self._checking)

    async def _check(self) -> Health:
        try:
            health = await self._health()
            self._checked = (asyncio.get_running_loop().time(), health)
            return health
        finally:
            self._checking = None
