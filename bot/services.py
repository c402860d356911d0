"""Builds the bot's collaborators from the configuration; the image client is shared with the
command line. (The image engine itself is `bot/images`.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from bot.config import Settings
from bot.images import ClientSettings, ImageClient, ProcessingSlots, RetryPolicy
from bot.images.client import UpstreamFeedback
from bot.observability import context
from bot.observability.metrics import Metrics

if TYPE_CHECKING:  # only the command line imports this module without Discord: keep it light
    from bot.discord_out.progress import EditBudget
    from bot.requests.offer import ModelOffer
    from bot.requests.queue import GenerationQueue
    from bot.store.ledger import Ledger
    from bot.store.pseudonym import Pseudonymizer
    from bot.store.ratelimit import UserRateLimiter
    from bot.store.server_settings import Rules, SettingsStore

_MEGABYTE = 1024 * 1024


def make_client(
    session: aiohttp.ClientSession,
    settings: Settings,
    feedback: UpstreamFeedback | None = None,
) -> ImageClient:
    return ImageClient(
        session,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        catalog=settings.catalog,
        settings=ClientSettings(
            timeout=settings.request_timeout,
            connect_timeout=min(settings.connect_timeout, settings.request_timeout),
            retry=RetryPolicy(max_retries=settings.max_retries),
            max_image_bytes=int(settings.max_image_mb * _MEGABYTE),
            max_response_bytes=int(settings.max_response_mb * _MEGABYTE),
            allow_private_urls=settings.allow_private_image_urls,
        ),
        feedback=feedback,
        on_request_id=context.request_id.set,  # on the task's log lines from then on
    )


@dataclass(frozen=True, slots=True)
class Services:
    """What the /imagine feature works with, made once by the bot at start and handed in."""

    settings: Settings
    images: ImageClient
    offer: ModelOffer  # the models members may choose, as the endpoint answered at start
    limiter: UserRateLimiter
    queue: GenerationQueue  # requests waiting on the image service
    processing: ProcessingSlots  # answers being read, decoded and posted
    pseudonyms: Pseudonymizer
    ledger: Ledger  # one row per request admitted, written before anything is spent
    server_settings: SettingsStore  # each server's /imagine-settings, cached a few seconds
    server_rules: Rules  # what the configuration lets a server choose
    edits: EditBudget  # progress edits (previews, time elapsed), across all requests
    metrics: Metrics = field(default_factory=Metrics)  # what /metrics reports (METRICS_PORT)
