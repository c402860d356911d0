"""An asynchronous client for ``POST {base_url}/images/generations`` and ``/images/edits`` (a
multipart form) over one shared session: one path for both, from retries to parsing.

Decisions:

- This module is the transport and the retry loop (after openai-python's ``_base_client.py``);
  the rest of the engine's talk with the service is split by job: downloads of ``url`` items
  guarded against private addresses in :mod:`.fetch`, status and body turned into a typed error
  in :mod:`.upstream`, probes of the endpoint in :mod:`.probe`. The client owns the
  :class:`~.fetch.ImageFetcher` (and closes it); it builds a probe for each check.
- An attempt is retried only where another try cannot bill twice for nothing: a connection that
  failed before any answer, or an error answer the retry policy calls retryable and that is not
  one of ``_NEVER_RETRIED``. A timeout, a cut-off answer or a malformed one is never retried.
- The attempt's time limit is an ``asyncio.timeout``, not aiohttp's, so that it pauses while an
  answer waits for a processing slot; no slot is held through a back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp

from bot.i18n import _

from .catalog import Catalog, ModelSpec
from .edits import (
    CHECK_OFF_LOOP_BYTES,
    EditRequest,
    check_edit,
    edit_form,
    input_bytes,
    prepare_edit,
)
from .errors import (
    AuthenticationFailed,
    GenerationTimeout,
    ImageError,
    MalformedResponse,
    ModelUnavailable,
    ModerationBlocked,
    OptionNotAvailable,
    QuotaExhausted,
    UnsupportedOption,
    UpstreamUnavailable,
)
from .fetch import ImageFetcher
from .moderation import (
    ANSWER_BYTES,
    MODERATION_SECONDS,
    ModerationResult,
    ModerationUnavailable,
    checked_image,
    moderation_body,
    parse_moderation,
)
from .probe import PROBE_SECONDS, CheckResult, EndpointProbe
from .processing import Lease, run_off_loop_if_large
from .request import ImageRequest, PreparedRequest, prepare_request
from .response import (
    ErrorBody,
    ErrorInBody,
    GeneratedImage,
    ImageLimits,
    ParsedBody,
    parse_body,
    parse_error_body,
)
from .retry import RetryPolicy, retry_delay, should_retry
from .streaming import OnPartial, is_event_stream, read_event_stream
from .text import PreparedText, TextResult, post_chat
from .upstream import (
    ERROR_BODY_BYTES,
    classify,
    connection_failure,
    join_url,
    read_capped,
    request_id_of,
    status_of,
)

UNKNOWN_MODEL = _("Unknown model {model}; known: {known}.")
OTHERS_EDIT = _("{model} cannot edit images; these can: {able}.")
log = logging.getLogger(__name__)

# Sending these again cannot help, whatever the status or headers say (a retry may bill again).
_NEVER_RETRIED = (
    ModerationBlocked,
    QuotaExhausted,
    AuthenticationFailed,
    ModelUnavailable,
    OptionNotAvailable,
)


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

    def without_bytes(self) -> GenerationResult:
        """This result with its images' bytes let go (their formats, sizes and count kept):
        what a request keeps once its images are posted."""
        images = tuple(replace(image, data=b"") for image in self.images)
        return replace(self, images=images)


class UpstreamFeedback(Protocol):
    """Told the status and headers of every answer to a generation attempt (the bot's adaptive
    limit of requests in flight listens)."""

    def record(self, status: int, headers: Mapping[str, str]) -> None: ...


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, error: ImageError, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers: Mapping[str, str] = headers or {}


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
        self._fetcher = ImageFetcher(
            session,
            allow_private_urls=self.settings.allow_private_urls,
            timeout=self.settings.timeout,
            connect_timeout=self.settings.connect_timeout,
        )
        # By the error's class name, since start (read by the metrics at scrape time).
        self.retries: Counter[str] = Counter()  # attempts retried
        self.failures: Counter[str] = Counter()  # generations that ended in an error
        self.moderation_seconds = MODERATION_SECONDS  # the most a moderation check waits

    def __repr__(self) -> str:
        return f"ImageClient(base_url={self._base_url!r})"

    async def close(self) -> None:
        """Close what the client opened itself (the session for image downloads)."""
        await self._fetcher.close()

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

    def _classify(
        self,
        status: int,
        info: ErrorBody,
        headers: Mapping[str, str],
        request_id: str | None,
        prepared: PreparedRequest,
    ) -> ImageError:
        return classify(
            status, info, headers, request_id=request_id, prepared=prepared, secret=self._api_key
        )

    def prepare(self, request: ImageRequest) -> PreparedRequest:
        """Validate ``request`` against the catalog: the body that would be sent, and more."""
        return prepare_request(request, self._spec_for(request.model))

    def _spec_for(self, model: str) -> ModelSpec:
        spec = self.catalog.get(model)
        if spec is None:
            raise UnsupportedOption(
                "model", UNKNOWN_MODEL.format(model=repr(model), known=", ".join(self.catalog))
            )
        return spec

    def edit_spec(self, model: str) -> ModelSpec:
        """The spec of ``model`` if it edits images, else :class:`UnsupportedOption` naming the
        models that do (checked before any image is downloaded)."""
        spec = self._spec_for(model)
        if not spec.edits:
            able = [name for name, other in self.catalog.items() if other.edits and other.is_live]
            raise UnsupportedOption(
                "model", OTHERS_EDIT.format(model=spec.name, able=", ".join(able))
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

    async def generate(
        self,
        request: ImageRequest | PreparedRequest,
        *,
        lease: Lease | None = None,
        on_partial: OnPartial | None = None,
        on_images: Callable[[], None] | None = None,
    ) -> GenerationResult:
        """Generate the images ``request`` asks for. Raises only :class:`ImageError` subclasses.

        Give it a :class:`PreparedRequest` (from :meth:`prepare`) and it is not validated again;
        one from :meth:`prepare_edit` is sent to the edits endpoint, everything else alike.
        With a ``lease``, the body is read only once it holds a processing slot (a stream: once
        its first image arrives; its previews meanwhile within the lease's room); the caller
        releases it (after posting the images), whatever happens. Where the request streams,
        ``on_partial`` is called with each preview as it arrives, on the event loop: it must
        return at once, and release the preview once done with it; ``on_images`` once the first
        image has arrived, before it waits for a slot (no preview is worth showing after it).
        """
        prepared = request if isinstance(request, PreparedRequest) else self.prepare(request)
        try:
            return await self._generate(prepared, lease, on_partial, on_images)
        except ImageError as error:
            self.failures[type(error).__name__] += 1
            raise

    async def _generate(
        self,
        prepared: PreparedRequest,
        lease: Lease | None,
        on_partial: OnPartial | None,
        on_images: Callable[[], None] | None = None,
    ) -> GenerationResult:
        payload = None if prepared.is_edit else json.dumps(prepared.body).encode()
        limits = ImageLimits(
            max_bytes=self.settings.max_image_bytes, max_pixels=prepared.max_pixels
        )
        policy = self.settings.retry
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                parsed, request_id = await self._post_once(
                    payload, prepared, limits, lease, on_partial, on_images
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

        images = await self._fetcher.complete(parsed, request_id, limits)
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
        on_images: Callable[[], None] | None = None,
    ) -> tuple[ParsedBody, str | None]:
        """One attempt: the answer read (with a ``lease``, once it holds a processing slot),
        and its request id; or an :class:`ImageError`, or :class:`_Retry` to try again."""
        url, data = self._target(payload, prepared)
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
                request_id = request_id_of(response.headers, self._api_key)
                self._heard(response, request_id)

                async def waiting(awaitable: Awaitable[None]) -> None:
                    # The body stays in the socket until a slot (or room) is free; the service
                    # has answered, and the wait is not counted against the attempt.
                    with _reading_paused(response):
                        await _without_deadline(deadline, awaitable)

                parsed = await self._read_answer(
                    response, prepared, limits, request_id, waiting, lease, on_partial, on_images
                )
                return parsed, request_id
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

    def _target(
        self, payload: bytes | None, prepared: PreparedRequest
    ) -> tuple[str, bytes | aiohttp.FormData]:
        """Where an attempt posts, and what."""
        if payload is None:  # an edit: a new form each attempt (aiohttp consumes one once sent)
            return join_url(self._base_url, "images/edits"), edit_form(prepared)
        return join_url(self._base_url, "images/generations"), payload

    def _heard(self, response: aiohttp.ClientResponse, request_id: str | None) -> None:
        """Tell the listeners an answer arrived: its request id, its status and headers."""
        if request_id is not None and self._on_request_id is not None:
            self._on_request_id(request_id)
        if self.feedback is not None:
            self.feedback.record(response.status, response.headers)

    async def _read_answer(
        self,
        response: aiohttp.ClientResponse,
        prepared: PreparedRequest,
        limits: ImageLimits,
        request_id: str | None,
        waiting: Callable[[Awaitable[None]], Awaitable[None]],
        lease: Lease | None,
        on_partial: OnPartial | None,
        on_images: Callable[[], None] | None = None,
    ) -> ParsedBody:
        """The answer's images (``url`` items still to download), or the error it means raised
        (as :class:`_Retry` where another try may help). An error object inside a 2xx answer
        is classified as the status it would have been sent with."""
        succeeded = 200 <= response.status < 300
        if succeeded and is_event_stream(response):
            try:
                return await read_event_stream(
                    response,
                    cap=self.settings.max_response_bytes,
                    limits=limits,
                    expected=prepared.count,
                    on_partial=on_partial,
                    on_images=on_images,
                    lease=lease,
                    waiting=waiting,
                )
            except ErrorInBody as inside:
                status = status_of(inside.info)
                raise self._classify(status, inside.info, {}, request_id, prepared) from None
        if lease is not None:
            await waiting(lease.hold())  # a body, error or not, is read in a slot only
        body = await read_capped(response, self.settings.max_response_bytes)
        if succeeded:
            try:
                return await run_off_loop_if_large(
                    len(body), lambda: parse_body(body, limits=limits, expected=prepared.count)
                )
            except ErrorInBody as inside:
                status = status_of(inside.info)
                raise self._classify(
                    status, inside.info, response.headers, request_id, prepared
                ) from None
        info = parse_error_body(body[:ERROR_BODY_BYTES])
        error = self._classify(response.status, info, response.headers, request_id, prepared)
        if isinstance(error, _NEVER_RETRIED):
            raise error
        if should_retry(response.status, response.headers, self.settings.retry, time.time()):
            raise _Retry(error, response.headers)
        raise error

    # -- the moderation check (see moderation.py) ----------------------------------------------

    async def moderate(
        self, prompt: str, images: Sequence[tuple[str, bytes]] = ()
    ) -> ModerationResult:
        """What ``POST /moderations`` says of ``prompt`` and ``images`` (format and bytes); raises
        :class:`ModerationUnavailable` for anything but a moderation answer in time (fail
        closed: the caller refuses the request)."""
        if images:  # scaled down, encoded and put in JSON: milliseconds, off the event loop
            body = await asyncio.to_thread(
                lambda: moderation_body(prompt, [checked_image(*image) for image in images])
            )
        else:
            body = moderation_body(prompt)
        try:
            async with asyncio.timeout(self.moderation_seconds):
                async with self._session.post(
                    join_url(self._base_url, "moderations"),
                    data=body,
                    headers=self._headers,
                    timeout=self._timeout(None),
                ) as response:
                    status = response.status
                    answer = await read_capped(response, ANSWER_BYTES)
        except TimeoutError:
            raise ModerationUnavailable(
                f"the moderation check did not answer within {self.moderation_seconds:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ModerationUnavailable(
                f"cannot reach the moderation check: {connection_failure(exc)}"
            ) from None
        except ImageError as exc:  # too large
            raise ModerationUnavailable(f"the moderation check's answer: {exc}") from None
        if status != 200:
            raise ModerationUnavailable(f"the moderation check answered with status {status}")
        return parse_moderation(answer)

    async def has_moderations(self) -> bool | None:
        """Whether the endpoint has ``POST /moderations`` (None: it could not be told)."""
        return await self._probe().has_moderations()

    async def complete(self, prepared: PreparedText) -> TextResult:
        """The text model's answer to ``prepared`` (``POST /chat/completions``, see
        :mod:`.text`), or an :class:`ImageError` carrying the member's sentence."""
        try:
            return await post_chat(
                self._session,
                join_url(self._base_url, "chat/completions"),
                self._headers,
                prepared,
                seconds=self.settings.timeout,
                connect_timeout=self.settings.connect_timeout,
                secret=self._api_key,
            )
        except ImageError as error:
            self.failures[type(error).__name__] += 1
            raise

    # -- what the endpoint serves (see probe.py) -----------------------------------------------

    def _probe(self) -> EndpointProbe:
        # Built for each probe, from the base URL and settings as they are now.
        return EndpointProbe(
            self._session,
            base_url=self._base_url,
            api_key=self._api_key,
            headers=self._headers,
            timeout=self._timeout(min(self.settings.timeout, PROBE_SECONDS)),
        )

    async def list_models(self) -> tuple[str, ...] | None:
        """The model ids ``GET /models`` lists, or None where the endpoint has no such route
        (see :meth:`EndpointProbe.list_models`)."""
        return await self._probe().list_models()

    async def check(self) -> CheckResult:
        """Whether the endpoint answers and accepts the key, without generating anything
        (see :meth:`EndpointProbe.check`)."""
        return await self._probe().check()


@contextmanager
def _reading_paused(response: aiohttp.ClientResponse) -> Iterator[None]:
    """Read nothing more from ``response``'s connection meanwhile: the rest of the answer stays
    in the kernel's socket buffer. Left to itself, aiohttp reads on until its buffer passes
    twice ``read_bufsize`` (128 KiB), and the read that passes it may take 256 KiB more: about
    0.4 MiB per request waiting for a slot, so memory grew with the requests in flight. Paused
    at once, a waiting request holds what it had received and not yet read (usually little:
    the reader keeps up).

    The transport is paused, not aiohttp's protocol: the protocol's pause also pauses its
    parser, which then keeps the next data it is given for a resume that only aiohttp's own
    buffer would call (a connection stalled for good). Where aiohttp has paused the transport
    itself (its buffer full), it is left to aiohttp, which resumes it once its buffer is read."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None or protocol._reading_paused:
        yield
        return
    transport.pause_reading()
    try:
        yield
    finally:
        if not transport.is_closing() and not protocol._reading_paused:
            transport.resume_reading()
