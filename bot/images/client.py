"""An asynchronous client for ``POST {base_url}/images/generations`` and ``/images/edits`` (a
multipart form) over one shared session: one path for both, from retries to parsing."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from .catalog import Catalog, ModelSpec, parse_size
from .edits import CHECK_OFF_LOOP_BYTES, EditRequest, check_edit, input_bytes, prepare_edit
from .errors import (
    AuthenticationFailed,
    GenerationTimeout,
    ImageError,
    ImageLinkBroken,
    InvalidRequest,
    MalformedResponse,
    ModelUnavailable,
    ModerationBlocked,
    OptionNotAvailable,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    UnsupportedOption,
    UpstreamUnavailable,
    clean_text,
    upstream_text,
)
from .processing import Lease, run_off_loop_if_large
from .request import ImageRequest, PreparedRequest, prepare_request
from .response import (
    ErrorBody,
    ErrorInBody,
    GeneratedImage,
    ImageLimits,
    ParsedBody,
    identify_image,
    parse_body,
    parse_error_body,
)
from .retry import RetryPolicy, retry_delay, server_wait, should_retry
from .streaming import OnPartial, is_event_stream, read_event_stream

log = logging.getLogger(__name__)

_MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_MODEL_GONE_CODES = frozenset(
    {"model_not_found", "model_shut_down", "model_deprecated", "model_retired"}
)
_ACCESS_WORDS = ("access", "permission", "not_available", "preview", "unavailable")
# Sending these again cannot help, whatever the status or headers say (a retry may bill again).
_NEVER_RETRIED = (
    ModerationBlocked,
    QuotaExhausted,
    AuthenticationFailed,
    ModelUnavailable,
    OptionNotAvailable,
)
# An image may have this many times the pixels asked for before it is refused as an answer to
# some other question (gateways round sizes; none returns several times the area).
PIXEL_MARGIN = 2.0
MAX_REDIRECTS = 5
REQUEST_ID_CHARS = 100
PROBE_SECONDS = 30.0  # the most a check of the endpoint waits
MODEL_ID_CHARS = 100
MAX_MODELS_LISTED = 2000  # OpenAI lists about a hundred; a gateway listing more is not believed


@dataclass(frozen=True, slots=True)
class ClientSettings:
    timeout: float = 180.0  # seconds for one attempt, connection to last byte; downloads too
    connect_timeout: float = 10.0  # seconds to open a connection
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_bytes: int = 96 * 1024 * 1024
    max_image_bytes: int = 32 * 1024 * 1024
    allow_private_urls: bool = False  # may image URLs point at loopback or private addresses?


@dataclass(frozen=True, slots=True)
class GenerationResult:
    request: PreparedRequest
    images: tuple[GeneratedImage, ...]
    elapsed: float  # seconds, first byte sent to last image decoded
    request_id: str | None = None
    usage: Mapping[str, Any] | None = None
    attempts: int = 1
    previews: int = 0  # partial images the stream carried (each is billed)

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def missing(self) -> int:
        """How many of the images asked for did not come back."""
        return max(self.request.count - len(self.images), 0)

    @property
    def revised_prompt(self) -> str | None:
        return next((img.revised_prompt for img in self.images if img.revised_prompt), None)


class UpstreamFeedback(Protocol):
    """Told the status and headers of every answer to a generation attempt (the bot's adaptive
    limit of requests in flight listens)."""

    def record(self, status: int, headers: Mapping[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    detail: str
    models: tuple[str, ...] | None = None  # what GET /models lists; None where it has no route


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, error: ImageError, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers: Mapping[str, str] = headers or {}


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


async def _without_deadline(deadline: asyncio.Timeout, waiting: Awaitable[None]) -> None:
    """Await ``waiting`` with ``deadline`` paused: the time it takes is not counted."""
    loop = asyncio.get_running_loop()
    when = deadline.when()
    left = None if when is None else when - loop.time()
    deadline.reschedule(None)
    try:
        await waiting
    finally:
        deadline.reschedule(None if left is None else loop.time() + left)


def join_url(base_url: str, path: str) -> str:
    """``base_url`` with ``path`` added to its path, its query string kept where it belongs
    (``https://gw/v1?api-version=x`` + ``images/generations`` ->
    ``https://gw/v1/images/generations?api-version=x``)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{path.lstrip('/')}"))


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a globally routable IP address (not loopback, private, link-local,
    multicast, reserved; an IPv4-mapped IPv6 address is judged by its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
        elif ip.is_site_local:
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible): it is
    what the connection reaches, so it is what is judged."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves names to public addresses only: image URLs come from the image service's
    answer, and must not make the bot fetch from its own host or network."""

    class Refused(OSError):
        """The name resolves to no public address."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [entry for entry in found if is_public_address(entry["host"])]
        if not public:
            raise self.Refused("the name resolves to no public address")
        return public

    async def close(self) -> None:
        await self._resolver.close()


def _os_reason(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno).lower()
    if isinstance(error, PublicOnlyResolver.Refused):
        return "it has no public address"
    return type(error).__name__


def connection_failure(exc: BaseException, host: str | None = None) -> str:
    """A short sentence for a failed connection: never aiohttp's 400-character repr, nor a
    Python tuple. ``host`` replaces the address when that came from outside (an image URL)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = host or (
            f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
        )
        return f"could not connect to {where} ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the service closed the connection before answering"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"the connection failed ({_os_reason(exc)})"
    return f"the connection failed ({type(exc).__name__})"


class ImageClient:
    """Generates images through an OpenAI-compatible Images API.

    The caller owns ``session`` (one for the whole process) and closes the client with
    :meth:`close`; the key is kept in a header only and never appears in a repr, a log line or
    an error.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        catalog: Catalog,
        settings: ClientSettings | None = None,
        feedback: UpstreamFeedback | None = None,
        on_request_id: Callable[[str], object] | None = None,
    ) -> None:
        self._session = session
        self.feedback = feedback
        # Told the service's request id as soon as an answer carries one (the bot puts it on the
        # task's log lines); the engine itself knows nothing of logging context.
        self._on_request_id = on_request_id
        self._base_url = base_url
        self._api_key = api_key
        self.catalog = catalog
        self.settings = settings or ClientSettings()
        self._download_session: aiohttp.ClientSession | None = None
        # By the error's class name, since start (read by the metrics at scrape time).
        self.retries: Counter[str] = Counter()  # attempts retried
        self.failures: Counter[str] = Counter()  # generations that ended in an error

    def __repr__(self) -> str:
        return f"ImageClient(base_url={self._base_url!r})"

    async def close(self) -> None:
        """Close what the client opened itself (the session for image downloads)."""
        if self._download_session is not None:
            await self._download_session.close()
            self._download_session = None

    @property
    def _headers(self) -> dict[str, str]:
        return {**self._form_headers, "Content-Type": "application/json"}

    @property
    def _form_headers(self) -> dict[str, str]:
        """For a multipart form: aiohttp sets the Content-Type, with its boundary."""
        return {
            "Authorization": f"Bearer {self._api_key}",
            # Several gateways refuse requests without it.
            "Accept": "application/json",
        }

    def _post_headers(self, prepared: PreparedRequest) -> dict[str, str]:
        headers = self._form_headers if prepared.is_edit else self._headers
        if not prepared.streams:
            return headers
        # JSON stays acceptable: a gateway that does not stream answers with it, and is read.
        return headers | {"Accept": "text/event-stream, application/json"}

    def _timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        """aiohttp's limits: ``total`` (None where an ``asyncio.timeout`` around the exchange
        keeps the time instead), and opening the connection, never longer than the whole."""
        connect = self.settings.connect_timeout
        return aiohttp.ClientTimeout(
            total=total, sock_connect=connect if total is None else min(connect, total)
        )

    def _upstream(self, text: str, limit: int = 500) -> str:
        return upstream_text(text, self._api_key, limit)

    def _request_id(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("x-request-id")
        return self._upstream(value, REQUEST_ID_CHARS) or None if value else None

    def prepare(self, request: ImageRequest) -> PreparedRequest:
        """Validate ``request`` against the catalog: the body that would be sent, and more."""
        return prepare_request(request, self._spec_for(request.model))

    def _spec_for(self, model: str) -> ModelSpec:
        spec = self.catalog.get(model)
        if spec is None:
            raise UnsupportedOption(
                "model", f"Unknown model {model!r}; known: {', '.join(self.catalog)}."
            )
        return spec

    def edit_spec(self, model: str) -> ModelSpec:
        """The spec of ``model`` if it edits images, else :class:`UnsupportedOption` naming the
        models that do (checked before any image is downloaded)."""
        spec = self._spec_for(model)
        if not spec.edits:
            able = [name for name, other in self.catalog.items() if other.edits and other.is_live]
            raise UnsupportedOption(
                "model", f"{spec.name} cannot edit images; these can: {', '.join(able)}."
            )
        return spec

    def check_edit(
        self,
        request: ImageRequest,
        *,
        images: int,
        has_mask: bool,
        input_fidelity: str | None = None,
    ) -> PreparedRequest:
        """Everything about an edit that needs no file (see :func:`~bot.images.edits.check_edit`):
        the request with its inputs declared only, or :class:`UnsupportedOption`."""
        return check_edit(
            request,
            self.edit_spec(request.model),
            images=images,
            has_mask=has_mask,
            input_fidelity=input_fidelity,
        )

    async def prepare_edit(self, edit: EditRequest) -> PreparedRequest:
        """Validate an edit against the catalog, its images read from their bytes (in a worker
        thread when they are large), or raise :class:`UnsupportedOption`. Nothing is sent."""
        spec = self.edit_spec(edit.model)
        if input_bytes(edit) >= CHECK_OFF_LOOP_BYTES:
            return await asyncio.to_thread(prepare_edit, edit, spec)
        return prepare_edit(edit, spec)

    def _image_limits(self, prepared: PreparedRequest) -> ImageLimits:
        dims = parse_size(prepared.size)
        if dims is not None:
            pixels = dims[0] * dims[1]
        else:  # "auto": the largest the model makes
            spec = prepared.spec
            sizes = [parse_size(size) for size in spec.sizes]
            pixels = max((w * h for w, h in filter(None, sizes)), default=1024 * 1024)
            if spec.free_size is not None:
                pixels = max(pixels, spec.free_size.max_pixels)
        return ImageLimits(
            max_bytes=self.settings.max_image_bytes, max_pixels=int(pixels * PIXEL_MARGIN)
        )

    async def generate(
        self,
        request: ImageRequest | PreparedRequest,
        *,
        lease: Lease | None = None,
        on_partial: OnPartial | None = None,
    ) -> GenerationResult:
        """Generate the images ``request`` asks for. Raises only :class:`ImageError` subclasses.

        Give it a :class:`PreparedRequest` (from :meth:`prepare`) and it is not validated again;
        one from :meth:`prepare_edit` is sent to the edits endpoint, everything else alike.
        With a ``lease``, the body is read only once it holds a processing slot (a stream: once
        its first image arrives; its previews meanwhile within the lease's room); the caller
        releases it (after posting the images), whatever happens. Where the request streams,
        ``on_partial`` is called with each preview as it arrives, on the event loop: it must
        return at once, and release the preview once done with it.
        """
        prepared = request if isinstance(request, PreparedRequest) else self.prepare(request)
        try:
            return await self._generate(prepared, lease, on_partial)
        except ImageError as error:
            self.failures[type(error).__name__] += 1
            raise

    async def _generate(
        self, prepared: PreparedRequest, lease: Lease | None, on_partial: OnPartial | None
    ) -> GenerationResult:
        payload = None if prepared.is_edit else json.dumps(prepared.body).encode()
        limits = self._image_limits(prepared)
        policy = self.settings.retry
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                parsed, request_id = await self._post_once(
                    payload, prepared, limits, lease, on_partial
                )
                break
            except _Retry as retry:
                if lease is not None:
                    lease.release()  # no slot is held through a back-off (unless pinned)
                if attempt > policy.max_retries:
                    raise retry.error from None
                self.retries[type(retry.error).__name__] += 1
                delay = retry_delay(attempt, retry.headers, policy, time.time())
                log.warning(
                    "image request attempt %d failed (%s); retrying in %.1fs",
                    attempt,
                    retry.error,
                    delay,
                )
                await asyncio.sleep(delay)

        images = await self._complete(parsed, request_id, limits)
        elapsed = time.perf_counter() - started
        if parsed.extra_items:
            log.warning(
                "the image service returned %d image(s) more than the %d asked for; "
                "they were dropped (request id %s)",
                parsed.extra_items,
                prepared.count,
                request_id or "-",
            )
        log.info(
            "%s %d of %d image(s) with %s in %.2fs (request id %s, %d attempt(s))",
            "edited" if prepared.is_edit else "generated",
            len(images),
            prepared.count,
            prepared.model,
            elapsed,
            request_id or "-",
            attempt,
        )
        return GenerationResult(
            request=prepared,
            images=images,
            elapsed=elapsed,
            request_id=request_id,
            usage=parsed.usage,
            attempts=attempt,
            previews=parsed.previews,
        )

    async def _post_once(
        self,
        payload: bytes | None,
        prepared: PreparedRequest,
        limits: ImageLimits,
        lease: Lease | None,
        on_partial: OnPartial | None = None,
    ) -> tuple[ParsedBody, str | None]:
        data: bytes | aiohttp.FormData
        if payload is None:  # an edit: a new form each attempt (aiohttp consumes one once sent)
            url = join_url(self._base_url, "images/edits")
            data = edit_form(prepared)
        else:
            url = join_url(self._base_url, "images/generations")
            data = payload
        request_id: str | None = None
        answered = False
        # The attempt's time limit is ours, not aiohttp's, so that it can stop while the answer
        # waits for a processing slot: the service has answered (and billed) by then.
        untimed_body = self._timeout(None)
        try:
            async with (
                asyncio.timeout(self.settings.timeout) as deadline,
                self._session.post(
                    url, data=data, headers=self._post_headers(prepared), timeout=untimed_body
                ) as response,
            ):
                answered = True
                request_id = self._request_id(response.headers)
                if request_id is not None and self._on_request_id is not None:
                    self._on_request_id(request_id)
                if self.feedback is not None:
                    self.feedback.record(response.status, response.headers)

                async def waiting(awaitable: Awaitable[None]) -> None:
                    # The body stays in the socket until a slot (or room) is free; the service
                    # has answered, and the wait is not counted against the attempt.
                    await _without_deadline(deadline, awaitable)

                succeeded = 200 <= response.status < 300
                if succeeded and is_event_stream(response):
                    try:
                        streamed = await read_event_stream(
                            response,
                            cap=self.settings.max_response_bytes,
                            limits=limits,
                            expected=prepared.count,
                            on_partial=on_partial,
                            lease=lease,
                            waiting=waiting,
                        )
                    except ErrorInBody as inside:
                        raise self._classify(
                            _status_of(inside.info), inside.info, {}, request_id, prepared
                        ) from None
                    return streamed, request_id
                if lease is not None:
                    await waiting(lease.hold())  # a body, error or not, is read in a slot only
                body = await _read_capped(response, self.settings.max_response_bytes)
                if succeeded:
                    try:
                        parsed = await run_off_loop_if_large(
                            len(body),
                            lambda: parse_body(body, limits=limits, expected=prepared.count),
                        )
                    except ErrorInBody as inside:
                        status = _status_of(inside.info)
                        raise self._classify(
                            status, inside.info, response.headers, request_id, prepared
                        ) from None
                    return parsed, request_id
                error = self._classify(
                    response.status,
                    parse_error_body(body[:65536]),
                    response.headers,
                    request_id,
                    prepared,
                )
                if isinstance(error, _NEVER_RETRIED):
                    raise error
                if should_retry(
                    response.status, response.headers, self.settings.retry, time.time()
                ):
                    raise _Retry(error, response.headers)
                raise error
        except ImageError as error:
            if error.request_id is None:
                error.request_id = request_id
            raise
        except TimeoutError:
            # Never retried: the service may have been generating (and billing) all along.
            raise GenerationTimeout(
                f"no complete answer within {self.settings.timeout:g}s", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            # A response error means a status line arrived: the service saw the request.
            if answered or isinstance(exc, aiohttp.ClientResponseError):
                # The answer arrived, perhaps billed: never sent again as if it had not.
                raise MalformedResponse(
                    f"the answer was cut off or malformed ({type(exc).__name__})",
                    request_id=request_id,
                ) from None
            # Refused, reset or dropped before an answer: the request may not have been seen.
            raise _Retry(UpstreamUnavailable(connection_failure(exc))) from None

    def _classify(
        self,
        status: int,
        info: ErrorBody,
        headers: Mapping[str, str],
        request_id: str | None,
        prepared: PreparedRequest | None,
    ) -> ImageError:
        """The typed error an error answer means. Every upstream text is redacted and cleaned."""
        message = self._upstream(info.message or "")
        kind = self._upstream(info.type or "", 80)
        code = self._upstream(info.code or "", 80)
        param = self._upstream(info.param or "", 80)
        described = f"HTTP {status}" + (f" {kind}" if kind else "") + (f" {code}" if code else "")
        described += f": {message}" if message else (": an HTML page" if info.is_html else "")

        def build(kind_: type[ImageError], user_message: str | None = None) -> ImageError:
            return kind_(described, status=status, request_id=request_id, user_message=user_message)

        lowered = f"{code} {kind}".lower()
        if code in _MODERATION_CODES or kind == "image_generation_user_error":
            return build(ModerationBlocked)
        if code == "insufficient_quota" or kind == "insufficient_quota":
            return build(QuotaExhausted)
        if prepared is not None and self._model_gone(status, code, param, message):
            spec = prepared.spec
            note = "" if spec.is_live else f" (it was {spec.describe_status()})"
            return ModelUnavailable(
                described, model=spec.name, note=note, status=status, request_id=request_id
            )
        no_access = status == 403 or any(word in lowered for word in _ACCESS_WORDS)
        if prepared is not None and status in (400, 403) and param and no_access:
            return build(OptionNotAvailable, self._no_access(param, prepared))
        if status in (401, 403):
            return build(AuthenticationFailed)
        if status == 429:
            limited = RateLimited(described, status=status, request_id=request_id)
            wait = server_wait(headers, time.time())
            limited.retry_after = wait if wait is not None and 0 < wait < math.inf else None
            return limited
        if status == 408:
            return build(GenerationTimeout)
        if status == 409 or status >= 500:
            return build(UpstreamUnavailable)
        if status == 404:
            return build(
                InvalidRequest,
                "The image service is misconfigured. A server admin needs to check it.",
            )
        if 200 <= status < 300:
            return build(MalformedResponse)
        refused = "The image service refused this request"
        refused += f": {clean_text(message, 300)}" if message else "."
        return build(InvalidRequest, refused if refused.endswith(".") else refused + ".")

    @staticmethod
    def _model_gone(status: int, code: str, param: str, message: str) -> bool:
        if code in _MODEL_GONE_CODES:
            return True
        if param == "model" and status in (400, 404):
            return True
        lowered = message.lower()
        return status == 404 and "model" in lowered and "exist" in lowered

    @staticmethod
    def _no_access(param: str, prepared: PreparedRequest) -> str:
        value = prepared.body.get(param)
        if param == "output_format" and isinstance(value, str):
            what = f"{value.upper()} output"
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            what = f"`{param}` {value}"
        else:
            what = f"`{param}`"
        return (
            f"The bot's image-service account has no access to {what} on {prepared.model}. "
            f"Please choose another {param.replace('_', ' ')}."
        )

    async def _complete(
        self, parsed: ParsedBody, request_id: str | None, limits: ImageLimits
    ) -> tuple[GeneratedImage, ...]:
        """Download the ``url`` items (concurrently) and return every image in order."""
        images = list(parsed.images)
        if parsed.urls:
            downloads = [
                self._download(url, parsed.revised_prompts[index], request_id, limits)
                for index, url in parsed.urls.items()
            ]
            fetched = await asyncio.gather(*downloads)
            for index, image in zip(parsed.urls, fetched, strict=True):
                images[index] = image
        return tuple(image for image in images if image is not None)

    def _downloads(self) -> aiohttp.ClientSession:
        if self.settings.allow_private_urls:
            return self._session
        if self._download_session is None:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), limit=20)
            self._download_session = aiohttp.ClientSession(connector=connector)
        return self._download_session

    def _check_image_url(self, url: str, request_id: str | None) -> yarl.URL:
        """The URL as aiohttp will fetch it, refused unless http(s) to an allowed address."""
        try:
            # Parsed as aiohttp parses it (yarl normalises full-width digits and ideographic
            # dots into an IP literal, which aiohttp then connects to without resolving).
            parsed = yarl.URL(url)
            scheme, host = parsed.scheme, parsed.raw_host
        except (ValueError, UnicodeError, TypeError):
            raise MalformedResponse(
                "an image URL in the response is not valid", request_id=request_id
            ) from None
        if scheme not in ("http", "https") or not host:
            raise MalformedResponse(
                "an image URL in the response is not http(s)", request_id=request_id
            )
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal.split("%", 1)[0])
        except ValueError:
            return parsed  # a name: the resolver keeps it to public addresses
        if not self.settings.allow_private_urls and not is_public_address(literal):
            raise MalformedResponse(
                "an image URL in the response points at a private or loopback address "
                "(set ALLOW_PRIVATE_IMAGE_URLS=true for a gateway on your own network)",
                request_id=request_id,
            )
        return parsed

    async def _download(
        self, url: str, revised_prompt: str | None, request_id: str | None, limits: ImageLimits
    ) -> GeneratedImage:
        session = self._downloads()
        try:
            async with asyncio.timeout(self.settings.timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    checked = self._check_image_url(url, request_id)
                    # No Authorization header: the URL's host is not the API and must not see
                    # the key. Redirects are followed here, so that each hop is checked.
                    async with session.get(
                        checked, timeout=self._timeout(None), allow_redirects=False
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status in (301, 302, 303, 307, 308) and location:
                            url = urljoin(str(checked), location)
                            continue
                        if response.status != 200:
                            raise ImageLinkBroken(
                                f"downloading an image answered HTTP {response.status}",
                                request_id=request_id,
                            )
                        data = await _read_capped(response, limits.max_bytes)
                        break
                else:
                    raise ImageLinkBroken(
                        f"an image URL redirected more than {MAX_REDIRECTS} times",
                        request_id=request_id,
                    )
        except ImageError as error:
            error.request_id = error.request_id or request_id
            raise
        except TimeoutError:
            raise GenerationTimeout(
                "downloading an image timed out", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            # The image host comes from the answer: it is not repeated (see connection_failure).
            raise UpstreamUnavailable(
                f"downloading an image failed: {connection_failure(exc, host='the image host')}",
                request_id=request_id,
            ) from None
        except (ValueError, UnicodeError):
            # A host name aiohttp or the resolver cannot encode (a label over 63 characters).
            raise MalformedResponse(
                "an image URL in the response is not valid", request_id=request_id
            ) from None
        return await run_off_loop_if_large(
            len(data), lambda: identify_image(data, limits=limits, revised_prompt=revised_prompt)
        )

    # -- what the endpoint serves --------------------------------------------------------------

    async def _probe(
        self, method: str, path: str, cap: int, data: bytes | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One short exchange with the endpoint (status, headers, body), or an ImageError."""
        try:
            async with self._session.request(
                method,
                join_url(self._base_url, path),
                data=data,
                headers=self._headers,
                timeout=self._timeout(min(self.settings.timeout, PROBE_SECONDS)),
            ) as response:
                return response.status, response.headers, await _read_capped(response, cap)
        except TimeoutError:
            raise GenerationTimeout("the endpoint did not answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"cannot reach the endpoint: {connection_failure(exc)}"
            ) from None

    async def list_models(self) -> tuple[str, ...] | None:
        """The model ids ``GET /models`` lists, or None where the endpoint has no such route.

        Raises :class:`ImageError` when the endpoint fails, refuses the key, or answers with
        something that is not a model list (an HTML page from a wrong base URL, say).
        """
        status, headers, body = await self._probe("GET", "models", 8 * 1024 * 1024)
        if status in (404, 405):
            return None
        request_id = self._request_id(headers)
        if status != 200:
            raise self._classify(status, parse_error_body(body[:65536]), headers, request_id, None)
        names = _model_ids(body, lambda name: self._upstream(name, MODEL_ID_CHARS))
        if names is None:
            kind = "an HTML page" if body.lstrip()[:1] == b"<" else "something else"
            raise MalformedResponse(
                f"GET /models answered with {kind}, not a model list: check OPENAI_BASE_URL",
                request_id=request_id,
            )
        return names

    async def check(self) -> CheckResult:
        """Whether the endpoint answers and accepts the key, without generating anything.

        Asks ``GET /models``; where a gateway has no such route, posts a generation request with
        no prompt, which a live endpoint refuses as invalid (400, or 422 from a validating
        gateway) before billing anything, or as unauthorised (401) when the key is wrong.
        """
        models = await self.list_models()
        if models is not None:
            return CheckResult("the endpoint answers and accepts the key", models)
        status, headers, body = await self._probe("POST", "images/generations", 1024 * 1024, b"{}")
        if status in (400, 422):
            return CheckResult("the endpoint answers and accepts the key (no /models route)")
        raise self._classify(
            status, parse_error_body(body[:65536]), headers, self._request_id(headers), None
        )


def form_value(value: Any) -> str:
    """A form field's text: aiohttp's FormData refuses numbers and booleans as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def edit_form(prepared: PreparedRequest) -> aiohttp.FormData:
    """The multipart body of ``POST /images/edits``: the fields of ``prepared.body``, the input
    images (``image`` for one, ``image[]`` for several, as the SDK sends them) and the mask."""
    form = aiohttp.FormData()
    for name, value in prepared.body.items():
        form.add_field(name, form_value(value))
    field_name = "image" if len(prepared.inputs) == 1 else "image[]"
    for image in prepared.inputs:
        form.add_field(
            field_name, image.data, filename=image.filename, content_type=image.content_type
        )
    if prepared.mask is not None:
        mask = prepared.mask
        form.add_field("mask", mask.data, filename=mask.filename, content_type=mask.content_type)
    return form


# What an error object inside a 2xx answer would have been sent as, by its type or code.
_STATUS_OF_KIND = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "server_error": 500,
    "api_error": 500,
}


def _status_of(info: ErrorBody) -> int:
    for kind in (info.code, info.type):
        if kind and kind in _STATUS_OF_KIND:
            return _STATUS_OF_KIND[kind]
    return 200  # classified by code alone (moderation, quota), or a malformed answer


def _model_ids(body: bytes, clean: Callable[[str], str]) -> tuple[str, ...] | None:
    """The ids of ``{"object": "list", "data": [{"id": ...}, ...]}``, each passed through
    ``clean`` (they are printed), or None if it is not one."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    listed = document.get("data") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        return None
    return tuple(
        clean(entry["id"])
        for entry in listed[:MAX_MODELS_LISTED]
        if isinstance(entry, dict) and isinstance(entry.get("id"), str)
    )
