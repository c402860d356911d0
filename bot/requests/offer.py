"""Which models members are offered: the configuration's, narrowed to what the endpoint serves.

Asked once at start (and by ``python -m bot check``) through ``GET {OPENAI_BASE_URL}/models``.
Where the endpoint has no such route, or cannot be asked, every configured model is offered, as
before; a model the endpoint does not list is left out, with one log line for the operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config import Settings
from bot.images import ImageClient, ImageError
from bot.images.text import TextModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelOffer:
    models: tuple[str, ...]  # what members may choose, the default first
    default: str
    endpoint: tuple[str, ...] | None  # what the endpoint lists; None where it does not say
    lacking: tuple[str, ...] = ()  # configured models the endpoint does not list

    def listed(self, name: str) -> bool | None:
        """Whether the endpoint lists ``name``; None where it does not say."""
        return None if self.endpoint is None else name in self.endpoint


def narrow(settings: Settings, endpoint: tuple[str, ...] | None) -> ModelOffer:
    """The offer for an endpoint that lists ``endpoint`` (None: it does not say)."""
    configured = settings.offered()
    if endpoint is None:
        return ModelOffer(configured, settings.default_model, None)
    listed = set(endpoint)
    served = tuple(name for name in configured if name in listed)
    lacking = tuple(name for name in configured if name not in listed)
    if not served:
        # Offering nothing would make the command useless; the operator is told in the log.
        return ModelOffer(configured, settings.default_model, endpoint, lacking)
    if settings.default_model in listed:
        default = settings.default_model
    else:  # a live model before one shut down on OpenAI, whatever the order configured
        catalog = settings.catalog
        default = next((name for name in served if catalog[name].is_live), served[0])
    served = (default, *(name for name in served if name != default))
    return ModelOffer(served, default, endpoint, lacking)


async def discover(client: ImageClient, settings: Settings) -> ModelOffer:
    """Ask the endpoint what it serves and narrow the configured models to it; log what differs."""
    try:
        endpoint = await client.list_models()
    except ImageError as error:
        log.warning(
            "could not list the endpoint's models (%s); offering every configured model", error
        )
        endpoint = None
    offer = narrow(settings, endpoint)
    if offer.endpoint is None:
        return offer
    for name in offer.lacking:
        spec = settings.catalog[name]
        status = "" if spec.is_live else f"; it was {spec.describe_status()}"
        log.warning("the endpoint does not list the model %s, so it is not offered%s", name, status)
    if offer.lacking == settings.offered():
        log.error(
            "the endpoint lists none of the configured models: check OPENAI_BASE_URL, "
            "OFFERED_MODELS and IMAGE_MODELS_FILE"
        )
    elif offer.default != settings.default_model:
        log.warning(
            "DEFAULT_MODEL %s is not served by the endpoint; %s is the default instead",
            settings.default_model,
            offer.default,
        )
    return offer


def text_model_offered(
    settings: Settings, endpoint: tuple[str, ...] | None
) -> tuple[TextModelSpec | None, str | None]:
    """The text model /describe and Enhance use (TEXT_MODEL), or None with the sentence saying
    why they are not offered: it is turned off, or the endpoint lists its models and lacks it.
    Where the endpoint does not list its models, it is offered (a call then says what failed)."""
    spec = settings.text_spec
    if spec is None:
        return None, "TEXT_MODEL is empty, so /describe and Enhance are not offered"
    if endpoint is not None and spec.name not in endpoint:
        return None, (
            f"the endpoint does not list the text model {spec.name} (TEXT_MODEL), so /describe "
            "and Enhance are not offered"
        )
    return spec, None
