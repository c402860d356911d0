"""No response body, however malformed, crashes the parser: images or a typed error."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.images import MalformedResponse
from bot.images.response import ParsedBody, parse_body, parse_error_body
from tests.fakes.images_api import make_image

PNG = make_image(8, 8)
CAP = 1024 * 1024

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
        return parse_body(raw, max_image_bytes=CAP)
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
