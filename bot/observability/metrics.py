"""The bot's Prometheus metrics, in a registry of its own (several bots may share a process).

Events are counted as they happen by :class:`Metrics` (requests by outcome, latencies, images
and bytes delivered, spend, event-loop lag); state is read from the objects that hold it when
Prometheus scrapes (:class:`BotCollector`: the pipeline's stages, the adaptive limit, the image
client's retries and errors, the gateway's latency), so nothing has to keep a copy up to date.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Seconds; an image takes from a few seconds to a few minutes.
GENERATION_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
# Seconds a timer fired late: a healthy loop stays under a few milliseconds.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_INTERVAL = 0.5  # seconds between two measurements of the loop's lag


class Metrics:
    """The counters and histograms the bot moves as things happen, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imagine_requests",
            "Requests by command and how they ended (delivered, refused, failed, cancelled, "
            "or turned away before admission: invalid, rate_limited, over_budget, ...)",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.requests_by_place = Counter(
            "imagine_requests_received",
            "Requests received by command and place: server (a server that installed the bot), "
            "dm (the bot's DM), group_dm, user_install (a server that did not install it)",
            ["command", "place"],
            registry=self.registry,
        )
        self.generation_seconds = Histogram(
            "imagine_generation_seconds",
            "Seconds the image service took for a generation that succeeded, retries included",
            ["model"],
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "imagine_request_seconds",
            "Seconds from a member's command to its images posted",
            ["model"],
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.images_delivered = Counter(
            "imagine_images_delivered",
            "Images posted to Discord",
            registry=self.registry,
        )
        self.bytes_delivered = Counter(
            "imagine_delivered_bytes",
            "Bytes of image files uploaded to Discord",
            registry=self.registry,
        )
        self.spend = Counter(
            "imagine_spend_usd",
            "Cost of the generations settled in the usage ledger, in US dollars (where known)",
            ["model"],
            registry=self.registry,
        )
        self.unknown_cost = Counter(
            "imagine_unknown_cost_requests",
            "Settled generations whose cost could not be worked out",
            ["model"],
            registry=self.registry,
        )
        self.moderation_log_dropped = Counter(
            "imagine_moderation_log_dropped",
            "Entries of servers' moderation logs dropped because the log's queue was full",
            registry=self.registry,
        )
        self.previews_withheld = Counter(
            "imagine_previews_withheld",
            "Previews (partial images) not asked for because the shared budget of progress "
            "edits could not show them; each would have cost 100 image output tokens",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "imagine_event_loop_lag_seconds",
            "How long the event loop took to run a callback (it was busy that long)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

    def request(self, outcome: str, command: str = "imagine") -> None:
        self.requests.labels(command=command, outcome=outcome).inc()

    def received(self, place: str, command: str = "imagine") -> None:
        self.requests_by_place.labels(command=command, place=place).inc()

    def generated(self, model: str, seconds: float) -> None:
        self.generation_seconds.labels(model=model).observe(seconds)

    def delivered(self, model: str, images: int, size: int, seconds: float) -> None:
        self.images_delivered.inc(images)
        self.bytes_delivered.inc(size)
        self.request_seconds.labels(model=model).observe(seconds)

    def spent(self, model: str, cost: Decimal | None) -> None:
        if cost is None:
            self.unknown_cost.labels(model=model).inc()
        elif cost > 0:
            self.spend.labels(model=model).inc(float(cost))

    def watch(self, collector: Collector) -> None:
        """Read ``collector`` at every scrape, alongside the counters."""
        self.registry.register(collector)


# -- read at scrape time -----------------------------------------------------------------------


class QueueState(Protocol):
    capacity: int
    max_capacity: int
    in_flight: int
    waited: int

    @property
    def waiting(self) -> int: ...


class RoomState(Protocol):
    used: int
    total: int


class SlotState(Protocol):
    count: int
    busy: int
    waited: int

    @property
    def waiting(self) -> int: ...

    @property
    def room(self) -> RoomState: ...


class UpstreamCounts(Protocol):
    @property
    def retries(self) -> Mapping[str, int]: ...

    @property
    def failures(self) -> Mapping[str, int]: ...


class GatewayState(Protocol):
    @property
    def latencies(self) -> list[tuple[int, float]]: ...


class BotCollector(Collector):
    """The pipeline's state, read from the objects that hold it when Prometheus scrapes."""

    def __init__(
        self,
        queue: QueueState,
        processing: SlotState,
        upstream: UpstreamCounts,
        gateway: GatewayState,
    ) -> None:
        self._queue = queue
        self._processing = processing
        self._upstream = upstream
        self._gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return []  # the names are known only by collecting; the registry then skips the check

    def collect(self) -> Iterable[Metric]:
        queue, slots = self._queue, self._processing
        waiting = GaugeMetricFamily(
            "imagine_waiting", "Requests waiting their turn, by pipeline stage", labels=["stage"]
        )
        waiting.add_metric(["upstream"], queue.waiting)
        waiting.add_metric(["processing"], slots.waiting)
        yield waiting
        in_flight = GaugeMetricFamily(
            "imagine_in_flight", "Requests being worked on, by pipeline stage", labels=["stage"]
        )
        in_flight.add_metric(["upstream"], queue.in_flight)
        in_flight.add_metric(["processing"], slots.busy)
        yield in_flight
        waited = CounterMetricFamily(
            "imagine_waited", "Requests that had to wait, by pipeline stage", labels=["stage"]
        )
        waited.add_metric(["upstream"], queue.waited)
        waited.add_metric(["processing"], slots.waited)
        yield waited
        yield GaugeMetricFamily(
            "imagine_upstream_limit",
            "Requests allowed in flight to the image service now (lowered when it answers 429)",
            value=queue.capacity,
        )
        yield GaugeMetricFamily(
            "imagine_upstream_limit_max",
            "The most requests allowed in flight to the image service (MAX_CONCURRENT_GENERATIONS)",
            value=queue.max_capacity,
        )
        yield GaugeMetricFamily(
            "imagine_processing_slots",
            "Answers that may be read, decoded and posted at once (PROCESSING_SLOTS)",
            value=slots.count,
        )
        yield GaugeMetricFamily(
            "imagine_unslotted_bytes",
            "Bytes held outside the processing slots now (previews, edits' input images)",
            value=slots.room.used,
        )
        yield GaugeMetricFamily(
            "imagine_unslotted_bytes_max",
            "The most bytes that may be held outside the processing slots (8 MiB a slot)",
            value=slots.room.total,
        )
        retries = CounterMetricFamily(
            "imagine_upstream_retries",
            "Attempts at the image service that were retried, by the error's kind",
            labels=["kind"],
        )
        for kind, count in sorted(self._upstream.retries.items()):
            retries.add_metric([kind], count)
        yield retries
        failures = CounterMetricFamily(
            "imagine_upstream_errors",
            "Generations the image service failed or refused, by the error's kind",
            labels=["kind"],
        )
        for kind, count in sorted(self._upstream.failures.items()):
            failures.add_metric([kind], count)
        yield failures
        latency = GaugeMetricFamily(
            "imagine_gateway_latency_seconds",
            "Discord gateway heartbeat latency, by shard (absent before the first heartbeat)",
            labels=["shard"],
        )
        for shard, seconds in self._gateway.latencies:
            if math.isfinite(seconds):
                latency.add_metric([str(shard)], seconds)
        yield latency


# -- event-loop lag ----------------------------------------------------------------------------


class LoopLagMonitor:
    """How long the event loop takes to run a callback handed to it from another thread: the
    time it spent on work that did not yield. Measured from a thread, so that a loop that is
    stuck altogether is seen as such, and no timer of the loop's own is involved."""

    def __init__(self, metrics: Metrics, interval: float = LAG_INTERVAL) -> None:
        self._metrics = metrics
        self._interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.last = 0.0  # seconds, the latest measurement

    def start(self) -> None:
        if self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._measure, args=(loop,), name="event-loop-lag", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """The thread ends within one interval; nothing waits for it."""
        self._stopped.set()

    def _measure(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stopped.wait(self._interval):
            if not self._ping(loop):
                return

    def _ping(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One measurement; False once the loop or the monitor has stopped."""
        arrived = threading.Event()
        sent = time.perf_counter()

        def record() -> None:
            self.last = time.perf_counter() - sent
            self._metrics.loop_lag.observe(self.last)
            arrived.set()

        try:
            loop.call_soon_threadsafe(record)
        except RuntimeError:  # the loop is closed
            return False
        while not arrived.wait(self._interval):
            if self._stopped.is_set() or loop.is_closed():
                return False
        return True
