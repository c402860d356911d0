"""The metrics server: ``/metrics`` for Prometheus and ``/healthz`` for a health check, on the
bot's own event loop (aiohttp's web server), at METRICS_HOST:METRICS_PORT."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bot.observability.health import Health

log = logging.getLogger(__name__)


class MetricsServer:
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
        self.port: int | None = None  # the port listened on, once started (METRICS_PORT=0)
        self._failing = ""  # what the last health check found failing, to log it once

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        log.info("metrics and health at http://%s:%d/metrics and /healthz", self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        # Reading the counters and the objects' state is quick and never awaits.
        body = generate_latest(self._registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def _healthz(self, _request: web.Request) -> web.Response:
        health = await self._health()
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
