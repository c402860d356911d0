"""An asynchronous client for ``POST {base_url}/images/generations`` over one shared session."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from .catalog import Catalog
from .errors import (
    AuthenticationFailed,
    GenerationTimeout,
    ImageError,
    InvalidRequest,
    MalformedResponse,
    ModerationBlocked,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    UnsupportedOption,
    UpstreamUnavailable,
    redact,
)
from .request import ImageRequest, build_body
from .response import GeneratedImage, ParsedBody, identify_image, parse_body, parse_error_body

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bodies above this are parsed in a worker thread. Parsing costs about 0.26 ms a megabyte (the
# base64 is lifted out of the JSON and decoded with SIMD), so below it the hop to a thread, and
# the wait for a free one, cost more than the few milliseconds the loop is held.
OFF_LOOP_THRESHOLD = 8 * 1024 * 1024
_RETRY_STATUSES = frozenset({408, 409, 429})
_MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


@dataclass(frozen=True, slots=True)
class ClientSettings:
    timeout: float = 180.0  # seconds for one attempt, connection to last byte
    max_retries: int = 2
    max_retry_wait: float = 60.0  # a longer Retry-After is reported instead of waited out
    max_response_bytes: int = 96 * 1024 * 1024
    max_image_bytes: int = 32 * 1024 * 1024
    download_timeout: float = 60.0
    backoff_base: float = 0.5  # seconds before the first retry when the server names no delay


@dataclass(frozen=True, slots=True)
class GenerationResult:
    model: str
    images: tuple[GeneratedImage, ...]
    elapsed: float  # seconds, first byte sent to last image decoded
    request_id: str | None = None
    usage: Mapping[str, Any] | None = None
    created: int | None = None
    attempts: int = 1

    @property
    def revised_prompt(self) -> str | None:
        return next((img.revised_prompt for img in self.images if img.revised_prompt), None)


@dataclass(frozen=True, slots=True)
class CheckResult:
    detail: str
    models: tuple[str, ...] | None = None


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, error: ImageError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``retry-after``."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_delay(attempt: int, base: float = 0.5) -> float:
    """The SDK's schedule: 0.5 s doubling per attempt, capped at 8 s, minus up to 25% jitter."""
    return float(min(base * 2 ** (attempt - 1), base * 16) * (1 - 0.25 * random.random()))


async def run_off_loop_if_large(size: int, func: Callable[[], T]) -> T:
    """Run ``func`` in a worker thread when its input is large enough to stall the loop."""
    if size >= OFF_LOOP_THRESHOLD:
        return await asyncio.to_thread(func)
    return func()


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, refused as soon as it passes ``cap`` bytes; copied once, at the end."""
    declared = response.content_length
    if declared is not None and declared > cap:
        raise ResponseTooLarge(f"the response declares {declared:,} bytes, over the {cap:,} cap")
    chunks: list[bytes] = []
    received = 0
    # iter_chunks hands over aiohttp's buffers as they are; iter_any would join them first.
    async for chunk, _ in response.content.iter_chunks():
        received += len(chunk)
        if received > cap:
            raise ResponseTooLarge(f"the response exceeded the {cap:,}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


class ImageClient:
    """Generates images through an OpenAI-compatible Images API.

    The caller owns ``session`` (one for the whole process); the key is kept in a header only and
    never appears in a repr, a log line or an error.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        catalog: Catalog,
        settings: ClientSettings | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.catalog = catalog
        self.settings = settings or ClientSettings()

    def __repr__(self) -> str:
        return f"ImageClient(base_url={self._base_url!r})"

    @property
    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            # Several gateways refuse requests without it.
            "Accept": "application/json",
        }

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def prepare(self, request: ImageRequest) -> dict[str, Any]:
        """Validate ``request`` against the catalog and return the body that would be sent."""
        spec = self.catalog.get(request.model)
        if spec is None:
            raise UnsupportedOption(
                "model", f"Unknown model {request.model!r}; known: {', '.join(self.catalog)}."
            )
        return build_body(request, spec)

    async def generate(self, request: ImageRequest) -> GenerationResult:
        """Generate the images ``request`` asks for. Raises only :class:`ImageError` subclasses."""
        body = self.prepare(request)
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                parsed, request_id = await self._post_once(payload)
                break
            except _Retry as retry:
                error = retry.error
                if attempt > self.settings.max_retries:
                    raise error from None
                wait = retry.retry_after
                if wait is not None and wait > self.settings.max_retry_wait:
                    raise error from None
                delay = (
                    wait if wait is not None else backoff_delay(attempt, self.settings.backoff_base)
                )
                log.warning(
                    "image request attempt %d failed (%s); retrying in %.1fs", attempt, error, delay
                )
                await asyncio.sleep(delay)

        images = await self._complete(parsed, request_id)
        elapsed = time.perf_counter() - started
        log.info(
            "generated %d image(s) with %s in %.2fs (request id %s, %d attempt(s))",
            len(images),
            body["model"],
            elapsed,
            request_id or "-",
            attempt,
        )
        return GenerationResult(
            model=body["model"],
            images=images,
            elapsed=elapsed,
            request_id=request_id,
            usage=parsed.usage,
            created=parsed.created,
            attempts=attempt,
        )

    async def _post_once(self, payload: bytes) -> tuple[ParsedBody, str | None]:
        url = f"{self._base_url}/images/generations"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        request_id: str | None = None
        try:
            async with self._session.post(
                url, data=payload, headers=self._headers, timeout=timeout
            ) as response:
                request_id = response.headers.get("x-request-id")
                body = await _read_capped(response, self.settings.max_response_bytes)
                if 200 <= response.status < 300:
                    max_image = self.settings.max_image_bytes
                    parsed = await run_off_loop_if_large(
                        len(body), lambda: parse_body(body, max_image_bytes=max_image)
                    )
                    return parsed, request_id
                raise self._status_error(response.status, response.headers, body, request_id)
        except ImageError as error:
            if error.request_id is None:
                error.request_id = request_id
            raise
        except TimeoutError:
            raise GenerationTimeout(
                f"no complete answer within {self.settings.timeout:g}s", request_id=request_id
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(
                f"the response was cut off ({type(exc).__name__})", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            # Refused, reset or dropped before an answer: the request may not have been seen.
            raise _Retry(
                UpstreamUnavailable(f"connection failed: {self._redact(repr(exc))}")
            ) from None

    def _status_error(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str | None,
    ) -> ImageError | _Retry:
        info = parse_error_body(body[:65536])
        message = self._redact(info.message or "")[:500]
        described = f"HTTP {status}" + (f" {info.type}" if info.type else "")
        described += f" {info.code}" if info.code else ""
        described += f": {message}" if message else (": an HTML page" if info.is_html else "")
        should_retry = headers.get("x-should-retry", "").lower()

        def build(kind: type[ImageError], user_message: str | None = None) -> ImageError:
            return kind(described, status=status, request_id=request_id, user_message=user_message)

        if info.code in _MODERATION_CODES or info.type == "image_generation_user_error":
            return build(ModerationBlocked)
        if info.code == "insufficient_quota" or info.type == "insufficient_quota":
            return build(QuotaExhausted)
        if status in (401, 403):
            return build(AuthenticationFailed)

        error: ImageError
        if status == 429:
            limited = RateLimited(described, status=status, request_id=request_id)
            limited.retry_after = _retry_after(headers)
            error = limited
        elif status == 408:
            error = build(GenerationTimeout)
        elif status in _RETRY_STATUSES or status >= 500:
            error = build(UpstreamUnavailable)
        elif status == 404:
            error = build(
                InvalidRequest,
                "The image service is misconfigured. A server admin needs to check it.",
            )
        else:
            refused = "The image service refused this request"
            refused += f": {message}" if message and len(message) < 300 else "."
            error = build(InvalidRequest, refused)

        retryable = status in _RETRY_STATUSES or status >= 500
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        if retryable:
            return _Retry(error, _retry_after(headers))
        return error

    async def _complete(
        self, parsed: ParsedBody, request_id: str | None
    ) -> tuple[GeneratedImage, ...]:
        """Download the ``url`` items (concurrently) and return every image in order."""
        images = list(parsed.images)
        if parsed.urls:
            downloads = [
                self._download(url, parsed.revised_prompts[index], request_id)
                for index, url in parsed.urls.items()
            ]
            fetched = await asyncio.gather(*downloads)
            for index, image in zip(parsed.urls, fetched, strict=True):
                images[index] = image
        return tuple(image for image in images if image is not None)

    async def _download(
        self, url: str, revised_prompt: str | None, request_id: str | None
    ) -> GeneratedImage:
        if urlsplit(url).scheme not in ("http", "https"):
            raise MalformedResponse(
                "an image URL in the response is not http(s)", request_id=request_id
            )
        cap = self.settings.max_image_bytes
        timeout = aiohttp.ClientTimeout(total=self.settings.download_timeout)
        try:
            # No Authorization header: the URL's host is not the API and must not see the key.
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise UpstreamUnavailable(
                        f"downloading an image answered HTTP {response.status}",
                        request_id=request_id,
                    )
                data = await _read_capped(response, cap)
        except ImageError as error:
            error.request_id = error.request_id or request_id
            raise
        except TimeoutError:
            raise GenerationTimeout(
                "downloading an image timed out", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"downloading an image failed ({type(exc).__name__})", request_id=request_id
            ) from None
        return await run_off_loop_if_large(
            len(data), lambda: identify_image(data, max_bytes=cap, revised_prompt=revised_prompt)
        )

    async def check(self) -> CheckResult:
        """Whether the endpoint answers and accepts the key, without generating anything.

        Asks ``GET /models``; where a gateway has no such route, posts a generation request with
        no prompt, which a live endpoint refuses as invalid (400) before billing anything, or as
        unauthorised (401) when the key is wrong.
        """
        timeout = aiohttp.ClientTimeout(total=min(self.settings.timeout, 30.0))
        try:
            async with self._session.get(
                f"{self._base_url}/models", headers=self._headers, timeout=timeout
            ) as response:
                body = await _read_capped(response, 8 * 1024 * 1024)
                status = response.status
                headers = response.headers
                request_id = headers.get("x-request-id")
            if status == 200:
                try:
                    listed = json.loads(body).get("data")
                    names = tuple(str(m.get("id")) for m in listed if isinstance(m, dict))
                except (ValueError, AttributeError, TypeError):
                    names = None
                return CheckResult("the endpoint answers and accepts the key", names)
            if status not in (404, 405):
                error = self._status_error(status, headers, body, request_id)
                raise error.error if isinstance(error, _Retry) else error
            async with self._session.post(
                f"{self._base_url}/images/generations",
                data=b"{}",
                headers=self._headers,
                timeout=timeout,
            ) as response:
                body = await _read_capped(response, 1024 * 1024)
                status = response.status
                headers = response.headers
                request_id = headers.get("x-request-id")
            if status == 400:
                return CheckResult("the endpoint answers and accepts the key (no /models route)")
            error = self._status_error(status, headers, body, request_id)
            raise error.error if isinstance(error, _Retry) else error
        except TimeoutError:
            raise GenerationTimeout("the endpoint did not answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"cannot reach the endpoint ({self._redact(str(exc))})"
            ) from None
