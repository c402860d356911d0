"""No response body, however malformed, crashes the parser: images or a typed error."""

from __future__ import annotations

import base64
import functools
import io
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.images import MalformedResponse
from bot.images.response import ImageLimits, ParsedBody, parse_body, parse_error_body
from tests.fakes.images_api import make_image

PNG = make_image(8, 8)
CAP = 1024 * 1024
LIMITS = ImageLimits(max_bytes=CAP, max_pixels=4096 * 4096)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
image_items = st.fixed_dictionaries(
    {},
    optional={
        "b64_json": st.sampled_from([base64.b64encode(PNG).decode(), "", "@@", "aGVsbG8="])
        | st.text(max_size=30)
        | json_values,
        "url": st.sampled_from(["https://x.test/a.png", "ftp://x", ""]) | json_values,
        "revised_prompt": st.text(max_size=30) | json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "created": json_values,
        "data": st.lists(image_items | json_values, max_size=3) | json_values,
        "usage": json_values,
        "error": json_values,
        "choices": json_values,
    },
)


def outcome(raw: bytes) -> ParsedBody | MalformedResponse:
    try:
        return parse_body(raw, limits=LIMITS, expected=10)
    except MalformedResponse as error:
        assert error.user_message
        return error


@given(st.binary(max_size=512))
@settings(max_examples=500)
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    outcome(raw)
    parse_error_body(raw)


@given(json_values | bodies)
@settings(max_examples=1000)
def test_arbitrary_json_never_crashes_the_parser(document: object) -> None:
    raw = json.dumps(document).encode()
    result = outcome(raw)
    parse_error_body(raw)
    if not isinstance(result, MalformedResponse):
        assert result.images  # success always carries at least one image or url to fetch
        for image in result.images:
            assert image is None or image.data == PNG


@given(st.integers(1, 200))
def test_truncated_bodies_are_typed_errors(cut: int) -> None:
    raw = json.dumps(
        {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}
    ).encode()
    assert isinstance(outcome(raw[: len(raw) - cut]), MalformedResponse)


def test_deeply_nested_json_is_a_typed_error() -> None:
    assert isinstance(outcome(b"[" * 100_000 + b"]" * 100_000), MalformedResponse)


# -- the shortcut through large bodies gives what the plain parse gives ---------------------------


@functools.cache
def _large_png() -> bytes:
    """An incompressible PNG whose base64 is past the shortcut's threshold."""
    pixels = random.Random(7).randbytes(160 * 160 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (160, 160), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _plain(raw: bytes) -> object:
    from bot.images.response import _parse

    try:
        return _parse(raw, None, LIMITS, 10)
    except MalformedResponse as error:
        return (type(error), str(error))


def _shortcut(raw: bytes) -> object:
    try:
        return parse_body(raw, limits=LIMITS, expected=10)
    except MalformedResponse as error:
        return (type(error), str(error))


large_values = st.sampled_from(["good", "bad-alphabet", "truncated", "escaped"])


@st.composite
def large_bodies(draw: st.DrawFn) -> bytes:
    encoded = base64.b64encode(_large_png()).decode()
    variants = {
        "good": encoded,
        "bad-alphabet": encoded[:1000] + "*" + encoded[1001:],
        "truncated": encoded[:-3],
        "escaped": encoded[:500] + "\\/" + encoded[502:],
    }
    items = []
    for _ in range(draw(st.integers(1, 3))):
        item: dict[str, object] = {}
        where = draw(st.sampled_from(["b64_json", "revised_prompt", "nested", "url+b64"]))
        value = variants[draw(large_values)]
        if where == "nested":
            item = {"b64_json": encoded, "extra": {"b64_json": value}}
        elif where == "url+b64":
            item = {"url": "https://x.test/a.png", "b64_json": value}
        else:
            item = {where: value}
            if where == "revised_prompt":
                item["b64_json"] = encoded
        items.append(item)
    document = {"created": 1, "data": items}
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " :  ")]))
    text = json.dumps(document, separators=separators)
    return text.replace("\\\\/", "\\/").encode()


@given(large_bodies())
@settings(max_examples=60, deadline=None)
def test_the_large_body_shortcut_agrees_with_the_plain_parse(raw: bytes) -> None:
    assert _shortcut(raw) == _plain(raw)


def test_a_large_body_goes_through_the_shortcut() -> None:
    from bot.images.response import _lift_encoded_images

    encoded = base64.b64encode(_large_png()).decode()
    raw = json.dumps({"created": 1, "data": [{"b64_json": encoded}] * 2}).encode()
    lifted = _lift_encoded_images(raw)
    assert lifted is not None
    assert len(lifted.values) == 2
    assert len(lifted.body) < 200
    images = parse_body(raw, limits=LIMITS, expected=10).images
    assert [image.data if image else None for image in images] == [_large_png()] * 2
