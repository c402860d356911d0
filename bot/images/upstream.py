"""The image service as the engine's three roads share it (generations in ``client``, image
downloads in ``fetch``, probes in ``probe``): its URLs joined, its bodies read within a cap, and
what goes wrong turned into a typed :class:`ImageError` or a short sentence.

Decisions:

- One classifier for every error, wherever it came from: an error status, an error object inside
  a 2xx answer (given the status its ``type`` or ``code`` would have been sent with), or a probe's
  answer. Like openai-python's ``_make_status_error`` it maps a status to an error class, but the
  body's ``code`` and ``type`` come first: a moderation refusal or an empty quota is the same
  whatever status a gateway wraps it in, and neither is ever retried.
- Every text the service sent (message, type, code, param, request id) is cleaned and has the
  key redacted before it is kept: errors reach logs and, through ``user_message``, members.
- A failed connection becomes one short sentence, never aiohttp's 400-character repr; the
  download resolver's refusal (:class:`NoPublicAddress`) is defined here, below ``fetch``, so
  that this module names it without importing the module that raises it.
- Nothing here imports ``client``, ``fetch`` or ``probe``: they import it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bot.i18n import _

from .errors import (
    AuthenticationFailed,
    GenerationTimeout,
    ImageError,
    InvalidRequest,
    MalformedResponse,
    ModelUnavailable,
    ModerationBlocked,
    OptionNotAvailable,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    UpstreamUnavailable,
    clean_text,
    upstream_text,
)
from .request import PreparedRequest
from .response import ErrorBody
from .retry import server_wait

REQUEST_ID_CHARS = 100
ERROR_BODY_BYTES = 65536  # the most of an error answer that is parsed

_MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_MODEL_GONE_CODES = frozenset(
    {"model_not_found", "model_shut_down", "model_deprecated", "model_retired"}
)
_ACCESS_WORDS = ("access", "permission", "not_available", "preview", "unavailable")

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


def join_url(base_url: str, path: str) -> str:
    """``base_url`` with ``path`` added to its path, its query string kept where it belongs
    (``https://gw/v1?api-version=x`` + ``images/generations`` ->
    ``https://gw/v1/images/generations?api-version=x``)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{path.lstrip('/')}"))


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, refused as soon as it passes ``cap`` bytes; copied once, at the end."""
    declared = response.content_length
    if declared is not None and declared > cap:
        raise ResponseTooLarge(f"the response declares {declared:,} bytes, over the {cap:,} cap")
    chunks: list[bytes] = []
    received = 0
    # iter_chunks hands over aiohttp's buffers as they are; iter_any would join them first.
    async for chunk, _end_of_chunk in response.content.iter_chunks():
        received += len(chunk)
        if received > cap:
            raise ResponseTooLarge(f"the response exceeded the {cap:,}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def request_id_of(headers: Mapping[str, str], secret: str) -> str | None:
    """The service's request id (``x-request-id``), cleaned, or None."""
    value = headers.get("x-request-id")
    return upstream_text(value, secret, REQUEST_ID_CHARS) or None if value else None


class NoPublicAddress(OSError):
    """A name that resolves to no public address (raised by ``fetch.PublicOnlyResolver``)."""


def _os_reason(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno).lower()
    if isinstance(error, NoPublicAddress):
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


def status_of(info: ErrorBody) -> int:
    """The status an error object inside a 2xx answer would have been sent with."""
    for kind in (info.code, info.type):
        if kind and kind in _STATUS_OF_KIND:
            return _STATUS_OF_KIND[kind]
    return 200  # classified by code alone (moderation, quota), or a malformed answer


def classify(
    status: int,
    info: ErrorBody,
    headers: Mapping[str, str],
    *,
    request_id: str | None,
    prepared: PreparedRequest | None,
    secret: str,
) -> ImageError:
    """The typed error an error answer means. Every upstream text is redacted and cleaned.

    ``prepared`` is the request the answer is about (None for a probe, which asks for no model
    or option: then no answer is read as a model gone or an option refused)."""
    message = upstream_text(info.message or "", secret)
    kind = upstream_text(info.type or "", secret, 80)
    code = upstream_text(info.code or "", secret, 80)
    param = upstream_text(info.param or "", secret, 80)
    described = f"HTTP {status}" + (f" {kind}" if kind else "") + (f" {code}" if code else "")
    described += f": {message}" if message else (": an HTML page" if info.is_html else "")

    def build(kind_: type[ImageError], user_message: str | None = None) -> ImageError:
        return kind_(described, status=status, request_id=request_id, user_message=user_message)

    lowered = f"{code} {kind}".lower()
    if code in _MODERATION_CODES or kind == "image_generation_user_error":
        return build(ModerationBlocked)
    if code == "insufficient_quota" or kind == "insufficient_quota":
        return build(QuotaExhausted)
    if prepared is not None and _model_gone(status, code, param, message):
        spec = prepared.spec
        note = "" if spec.is_live else spec.describe_status()
        return ModelUnavailable(
            described, model=spec.name, note=note, status=status, request_id=request_id
        )
    no_access = status == 403 or any(word in lowered for word in _ACCESS_WORDS)
    if prepared is not None and status in (400, 403) and param and no_access:
        return build(OptionNotAvailable, _no_access(param, prepared))
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


def _model_gone(status: int, code: str, param: str, message: str) -> bool:
    if code in _MODEL_GONE_CODES:
        return True
    if param == "model" and status in (400, 404):
        return True
    lowered = message.lower()
    return status == 404 and "model" in lowered and "exist" in lowered


NO_ACCESS = _(
    "The bot's image-service account has no access to {what} on {model}. Please choose another "
    "{option}."
)


def _no_access(param: str, prepared: PreparedRequest) -> str:
    value = prepared.body.get(param)
    if param == "output_format" and isinstance(value, str):
        what = f"{value.upper()} output"
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        what = f"`{param}` {value}"
    else:
        what = f"`{param}`"
    return NO_ACCESS.format(what=what, model=prepared.model, option=param.replace("_", " "))
