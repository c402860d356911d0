"""A misbehaving image service: nothing leaked, nothing raw shown, nothing paid for twice."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.images import (
    ClientSettings,
    GenerationTimeout,
    ImageClient,
    ImageError,
    ImageRequest,
    MalformedResponse,
    RetryPolicy,
    UpstreamUnavailable,
    load_catalog,
)
from bot.images.fetch import PublicOnlyResolver, is_public_address
from bot.images.upstream import join_url
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, images_body, make_image, respond


def request(model: str = "gpt-image-1.5", **fields: object) -> ImageRequest:
    return ImageRequest(prompt="a lighthouse", model=model, user="u", **fields)  # type: ignore[arg-type]


def client_for(http: aiohttp.ClientSession, base_url: str, **settings: object) -> ImageClient:
    return ImageClient(
        http,
        base_url=base_url,
        api_key=API_KEY,
        catalog=load_catalog(),
        settings=ClientSettings(timeout=5.0, retry=RetryPolicy(backoff_base=0.01), **settings),  # type: ignore[arg-type]
    )


# -- secrets and upstream text -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["type", "code", "param", "message", "x-request-id"])
async def test_the_key_echoed_anywhere_upstream_never_surfaces(
    client: ImageClient,
    images_api: FakeImagesAPI,
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = {"message": "bad", "type": "invalid_request_error", "code": "x", "param": "size"}
    headers = {}
    if where == "x-request-id":
        headers["x-request-id"] = f"req_{API_KEY}"
    else:
        error[where] = f"echo {API_KEY} echo"
    images_api.push(respond(400, json.dumps({"error": error}), headers=headers))
    with pytest.raises(ImageError) as caught:
        await client.generate(request())
    shown = f"{caught.value} {caught.value.user_message} {caught.value.request_id} {caught.value!r}"
    assert API_KEY not in shown
    if where != "param":  # the parameter's name is not shown at all here
        assert "[redacted]" in shown
    # The autouse leak check also reads every log record of this test.


async def test_upstream_text_is_cleaned_and_bounded(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    message = "\x1b[31mred alert\x1b[0m\nline two \u202egnp.exe\u202c" + "x" * 5000
    headers = {"x-request-id": "req_" + "9" * 8000}
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "\x07bell"}}
    images_api.push(respond(400, json.dumps(body), headers=headers))
    with pytest.raises(ImageError) as caught:
        await client.generate(request())
    error = caught.value
    for text in (str(error), error.user_message, error.request_id or ""):
        assert not any(ch in text for ch in "\x1b\n\r\x07\u202e\u202c")
    assert "red alert line two gnp.exe" in str(error)
    assert len(error.request_id or "") <= 100
    assert len(str(error)) < 800
    assert len(error.user_message) < 400


async def test_a_connection_error_is_one_short_sentence(http: aiohttp.ClientSession) -> None:
    with socket_closed() as port:
        client = client_for(http, f"http://127.0.0.1:{port}/v1")
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.generate(request())
    text = str(caught.value)
    assert text == f"could not connect to 127.0.0.1:{port} (connection refused)"


class socket_closed:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


# -- answers that do not match the question ------------------------------------------------------


async def test_never_more_images_than_were_asked_for(
    client: ImageClient, images_api: FakeImagesAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    images_api.push(respond(200, images_body(*[make_image(32, 32)] * 60)))
    result = await client.generate(request(count=1, size="1024x1024"))
    assert len(result.images) == 1
    assert any("59 image(s) more than the 1 asked for" in r.getMessage() for r in caplog.records)


async def test_an_image_far_larger_than_the_size_asked_for_is_refused(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    images_api.push(respond(200, images_body(make_image(1024, 1024))))
    with pytest.raises(MalformedResponse, match="far larger than the size asked for"):
        await client.generate(request("dall-e-2", size="256x256"))
    images_api.push(respond(200, images_body(make_image(1536, 1024))))
    result = await client.generate(request(size="1024x1024"))  # rounding is fine
    assert result.images[0].width == 1536


@pytest.fixture
async def longer_than_declared() -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP server whose 200 declares a Content-Length shorter than the body it sends."""
    posts: list[int] = []
    body = images_body(make_image(16, 16))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        posts.append(1)
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body) // 2}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", posts
    server.close()
    await server.wait_closed()


async def test_an_answer_that_arrived_is_never_retried(
    http: aiohttp.ClientSession, longer_than_declared: tuple[str, list[int]]
) -> None:
    base_url, posts = longer_than_declared
    client = client_for(http, base_url)
    with pytest.raises(MalformedResponse):
        await client.generate(request())
    assert len(posts) == 1  # a second POST could be billed a second time


# -- image URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),  # noqa: S104
        ("224.0.0.1", False),
        ("not-an-ip", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("fec0::1", False),  # site-local
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_image_urls_on_loopback_are_refused_unless_allowed(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    png = make_image(256, 256)
    for url in (
        images_api.file_url(png),
        images_api.file_url(png).replace("127.0.0.1", "localhost"),
    ):
        images_api.push(respond(200, json.dumps({"created": 1, "data": [{"url": url}]})))
        closed = client_for(http, images_api.base_url)
        try:
            with pytest.raises(ImageError) as caught:
                await closed.generate(request("dall-e-2", size="256x256"))
        finally:
            await closed.close()
        assert "private or loopback" in str(caught.value) or "no public address" in str(
            caught.value
        )
    images_api.push(
        respond(200, json.dumps({"created": 1, "data": [{"url": images_api.file_url(png)}]}))
    )
    allowed = client_for(http, images_api.base_url, allow_private_urls=True)
    result = await allowed.generate(request("dall-e-2", size="256x256"))
    assert result.images[0].data == png


async def test_the_public_only_resolver_refuses_names_of_private_addresses() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="no public address"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_redirects_are_followed_and_each_hop_checked(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = make_image(256, 256)
    target = images_api.file_url(png)
    app = web.Application()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(target)

    async def to_metadata(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    app.router.add_get("/hop", redirect)
    app.router.add_get("/metadata", to_metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = client_for(http, images_api.base_url, allow_private_urls=True)
    try:
        body = {"created": 1, "data": [{"url": f"http://127.0.0.1:{port}/hop"}]}
        images_api.push(respond(200, json.dumps(body)))
        result = await client.generate(request("dall-e-2", size="256x256"))
        assert result.images[0].data == png

        # Now with private addresses refused, this loopback server standing in for a public
        # host: its redirect to the cloud metadata address is caught at the hop.
        import bot.images.fetch as client_module

        monkeypatch.setattr(client_module, "is_public_address", lambda a: a == "127.0.0.1")
        strict = client_for(http, images_api.base_url)
        body = {"created": 1, "data": [{"url": f"http://127.0.0.1:{port}/metadata"}]}
        images_api.push(respond(200, json.dumps(body)))
        with pytest.raises(MalformedResponse, match="private or loopback"):
            await strict.generate(request("dall-e-2", size="256x256"))
        await strict.close()
    finally:
        await runner.cleanup()


async def test_a_download_that_hangs_is_bounded_by_the_request_timeout(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    app = web.Application()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=b"")

    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ImageClient(
        http, base_url=images_api.base_url, api_key=API_KEY, catalog=load_catalog(),
        settings=ClientSettings(timeout=0.5, allow_private_urls=True),
    )  # fmt: skip
    body = {"created": 1, "data": [{"url": f"http://127.0.0.1:{port}/slow"}]}
    images_api.push(respond(200, json.dumps(body)))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(GenerationTimeout):
            await client.generate(request("dall-e-2", size="256x256"))
        assert loop.time() - started < 5
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("base", "path", "joined"),
    [
        ("https://gw.example/v1", "images/generations", "https://gw.example/v1/images/generations"),
        (
            "https://gw.example/openai/v1?api-version=2025-01-01",
            "images/generations",
            "https://gw.example/openai/v1/images/generations?api-version=2025-01-01",
        ),
        ("http://127.0.0.1:8080", "models", "http://127.0.0.1:8080/models"),
    ],
)
def test_paths_join_before_the_query_string(base: str, path: str, joined: str) -> None:
    assert join_url(base, path) == joined


async def test_a_base_url_with_a_query_string_reaches_the_right_path(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    client = client_for(http, images_api.base_url + "?api-version=2025-01-01")
    result = await client.generate(request())
    assert len(result.images) == 1
    assert (await client.check()).models is not None


async def test_an_echoed_key_split_by_an_escape_sequence_is_still_redacted(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    half = len(API_KEY) // 2
    for splitter in ("\x1b[0m", "\x1b]8;;\x07", "\u200b", "\u202e"):
        echoed = f"Bad key {API_KEY[:half]}{splitter}{API_KEY[half:]} for this org."
        body = {"error": {"message": echoed, "type": "invalid_request_error", "code": None}}
        images_api.push(respond(400, json.dumps(body)))
        with pytest.raises(ImageError) as caught:
            await client.generate(request())
        assert API_KEY not in f"{caught.value} {caught.value.user_message}"


async def test_an_image_url_in_full_width_digits_cannot_reach_loopback(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    loopback = images_api.file_url(make_image(256, 256))
    full_width = "\uff11\uff12\uff17.0.0.1"  # "127" in full-width digits
    ideographic_dots = "127\u30020\u30020\u30021"
    for disguise in (full_width, ideographic_dots):
        url = loopback.replace("127.0.0.1", disguise)
        images_api.push(respond(200, json.dumps({"created": 1, "data": [{"url": url}]})))
        strict = client_for(http, images_api.base_url)
        with pytest.raises(MalformedResponse, match="private or loopback"):
            await strict.generate(request("dall-e-2", size="256x256"))
        await strict.close()


@pytest.mark.parametrize("url", ["http://[::1/x", "http://[zz]/x", f"http://{'a' * 70}.example/x"])
async def test_an_image_url_that_cannot_be_parsed_is_a_malformed_answer(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI, url: str
) -> None:
    images_api.push(respond(200, json.dumps({"created": 1, "data": [{"url": url}]})))
    strict = client_for(http, images_api.base_url)
    try:
        with pytest.raises(MalformedResponse, match="not valid"):
            await strict.generate(request("dall-e-2", size="256x256"))
    finally:
        await strict.close()


async def test_an_animated_image_with_more_frames_than_the_api_makes_is_refused(
    client: ImageClient, images_api: FakeImagesAPI
) -> None:
    from tests.fakes.images_api import make_gif

    images_api.push(respond(200, images_body(make_gif(32, 32, 40))))
    with pytest.raises(MalformedResponse, match="40 frames, over 16"):
        await client.generate(request("gpt-image-2.5-flare", output_format="gif", size="1024x1024"))


@pytest.mark.parametrize(
    ("type_", "code", "kind"),
    [
        ("invalid_request_error", "invalid_value", "InvalidRequest"),
        ("server_error", None, "UpstreamUnavailable"),
        ("", "rate_limit_exceeded", "RateLimited"),
    ],
)
async def test_any_error_object_in_a_200_keeps_its_kind(
    client: ImageClient, images_api: FakeImagesAPI, type_: str, code: str | None, kind: str
) -> None:
    body = {"created": 1, "error": {"message": "no", "type": type_, "code": code}}
    images_api.push(respond(200, json.dumps(body)))
    with pytest.raises(ImageError) as caught:
        await client.generate(request())
    assert type(caught.value).__name__ == kind
    assert len(images_api.generation_requests) == 1


async def test_model_ids_from_the_endpoint_are_cleaned_and_bounded(
    http: aiohttp.ClientSession,
) -> None:
    evil = [f"evil-image-\x1b[2J\x1b[31mPWNED\nwarning: fake {API_KEY}", "x" * 5000]
    app = web.Application()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": name} for name in evil]})

    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        names = await client_for(http, f"http://127.0.0.1:{port}/v1").list_models()
    finally:
        await runner.cleanup()
    assert names is not None
    first, second = names
    assert "\x1b" not in first and "\n" not in first and API_KEY not in first
    assert len(second) <= 100


async def test_a_query_ending_in_a_slash_is_kept_whole(
    http: aiohttp.ClientSession, images_api: FakeImagesAPI
) -> None:
    client = client_for(http, images_api.base_url + "?next=/")
    assert len((await client.generate(request())).images) == 1
    assert join_url("https://gw.example/v1?next=/", "models") == (
        "https://gw.example/v1/models?next=/"
    )
