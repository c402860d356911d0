"""The size a "Larger" press asks for: the same picture's shape with more pixels, where the
model's catalog has such a size."""

from __future__ import annotations

import math

from .catalog import ModelSpec, parse_size

MAX_SCALE = 2.0  # each side at most doubles: four times the pixels is already four times the cost
SAME_SHAPE = 0.01  # aspect ratios within 1% are the same shape


def larger_size(spec: ModelSpec, size: str) -> str | None:
    """A larger size of the same shape that ``spec`` makes, or None when it makes none.

    A model that takes any ``WxH`` (the gpt-image-2 family) gets each side scaled by up to
    :data:`MAX_SCALE`, as far as its rules allow, rounded down to the multiple it needs; any
    other model gets the next listed size of the same shape. ``auto`` has no larger size.
    """
    dims = parse_size(size)
    if dims is None:
        return None
    width, height = dims
    rules = spec.free_size
    if rules is not None:
        scale = min(
            MAX_SCALE,
            rules.max_edge / max(width, height),
            math.sqrt(rules.max_pixels / (width * height)),
        )
        step = rules.multiple_of
        wider = math.floor(width * scale / step) * step
        taller = math.floor(height * scale / step) * step
        if wider * taller > width * height and rules.problem(wider, taller) is None:
            return f"{wider}x{taller}"
    shape = width / height
    listed = [
        found
        for found in map(parse_size, spec.sizes)
        if found is not None
        and found[0] * found[1] > width * height
        and abs(found[0] / found[1] - shape) <= SAME_SHAPE * shape
    ]
    if not listed:
        return None
    wider, taller = min(listed, key=lambda found: found[0] * found[1])
    return f"{wider}x{taller}"
