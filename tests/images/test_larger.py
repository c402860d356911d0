"""What the Larger button asks for, model by model."""

from __future__ import annotations

import pytest

from bot.images import load_catalog
from bot.images.larger import larger_size


@pytest.mark.parametrize(
    ("model", "size", "larger"),
    [
        # Any WxH: each side doubled, as far as the model's rules allow, the shape kept.
        ("gpt-image-2.5-flare", "1024x1024", "2048x2048"),
        ("gpt-image-2", "1536x1024", "3072x2048"),
        ("gpt-image-2", "1536x864", "3072x1728"),
        ("gpt-image-2", "2048x2048", "2880x2880"),  # 8,294,400 pixels, the most it makes
        ("gpt-image-2", "3840x2160", None),  # already the largest
        ("gpt-image-2", "auto", None),
        # Listed sizes only: the next one of the same shape.
        ("dall-e-2", "256x256", "512x512"),
        ("dall-e-2", "1024x1024", None),
        ("dall-e-3", "1024x1024", None),
        ("gpt-image-1.5", "1536x1024", None),
        ("gpt-image-2.6-flare", "1024x1024", None),
    ],
)
def test_the_larger_size_keeps_the_shape_within_what_the_model_makes(
    model: str, size: str, larger: str | None
) -> None:
    spec = load_catalog()[model]
    assert larger_size(spec, size) == larger
    if larger is not None:
        assert spec.accepts_size(larger)
