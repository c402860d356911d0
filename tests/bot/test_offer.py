"""Which models members are offered, given what the endpoint lists."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.requests.offer import narrow


def settings_with(**values: object) -> Settings:
    return Settings(_env_file=None, openai_api_key="sk-offer-test-0123", **values)  # type: ignore[arg-type]


def test_the_endpoint_narrows_the_configured_models(tmp_path: Path) -> None:
    offer = narrow(settings_with(), ("gpt-image-1.5", "gpt-image-2.5-flare", "whisper-1"))
    assert offer.models == ("gpt-image-2.5-flare", "gpt-image-1.5")
    assert offer.default == "gpt-image-2.5-flare"
    assert "gpt-image-1" in offer.lacking and offer.listed("whisper-1")


def test_a_default_the_endpoint_lacks_becomes_a_live_model_it_serves() -> None:
    settings = settings_with(offered_models="gpt-image-2.5-flare,gpt-image-1,gpt-image-1.5")
    offer = narrow(settings, ("gpt-image-1", "gpt-image-1.5"))
    assert offer.default == "gpt-image-1.5"  # not gpt-image-1, shut down on OpenAI
    assert offer.models == ("gpt-image-1.5", "gpt-image-1")


def test_an_endpoint_that_does_not_say_changes_nothing() -> None:
    settings = settings_with()
    offer = narrow(settings, None)
    assert offer.models == settings.offered() and offer.listed("gpt-image-1") is None


def test_an_endpoint_serving_none_of_them_leaves_the_configuration_as_it_is() -> None:
    settings = settings_with()
    offer = narrow(settings, ("whisper-1",))
    assert offer.models == settings.offered()
    assert offer.default == settings.default_model
