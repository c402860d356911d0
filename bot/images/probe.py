"""Probing the endpoint: which models it lists, and whether it answers and accepts the key,
without generating anything (after openai-python's ``resources/models.py``).

Decisions:

- ``GET /models`` first. A gateway without that route (404 or 405) is not an error: the check
  then posts a generation request with no prompt, which a live endpoint refuses as invalid
  (400, or 422 from a validating gateway) before billing anything, or as unauthorised (401) when
  the key is wrong.
- A probe is short: it waits at most ``PROBE_SECONDS`` (or the client's timeout, if shorter) and
  reads at most a few megabytes. An answer that is not a model list (an HTML page from a wrong
  base URL, say) is an error naming ``OPENAI_BASE_URL``; a list of more than
  ``MAX_MODELS_LISTED`` ids is cut there, and each id is cleaned and bounded (they are printed).
- :class:`EndpointProbe` is built by the client for each probe, from what the client holds at
  that moment; the key is in its headers only and never in its repr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from .errors import (
    GenerationTimeout,
    ImageError,
    MalformedResponse,
    UpstreamUnavailable,
    upstream_text,
)
from .response import parse_error_body
from .upstream import (
    ERROR_BODY_BYTES,
    classify,
    connection_failure,
    join_url,
    read_capped,
    request_id_of,
)

PROBE_SECONDS = 30.0  # the most a check of the endpoint waits
MODEL_ID_CHARS = 100
MAX_MODELS_LISTED = 2000  # OpenAI lists about a hundred; a gateway listing more is not believed


@dataclass(frozen=True, slots=True)
class CheckResult:
    detail: str
    models: tuple[str, ...] | None = None  # what GET /models lists; None where it has no route


class EndpointProbe:
    """Short exchanges with the endpoint, over the caller's session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._api_key = api_key  # redacted from every text the endpoint sends back
        self._headers = headers
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"EndpointProbe(base_url={self._base_url!r})"

    async def _exchange(
        self, method: str, path: str, cap: int, data: bytes | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One short exchange with the endpoint (status, headers, body), or an ImageError."""
        try:
            async with self._session.request(
                method,
                join_url(self._base_url, path),
                data=data,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                return response.status, response.headers, await read_capped(response, cap)
        except TimeoutError:
            raise GenerationTimeout("the endpoint did not answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"cannot reach the endpoint: {connection_failure(exc)}"
            ) from None

    def _refusal(self, status: int, headers: Mapping[str, str], body: bytes) -> ImageError:
        return classify(
            status,
            parse_error_body(body[:ERROR_BODY_BYTES]),
            headers,
            request_id=request_id_of(headers, self._api_key),
            prepared=None,
            secret=self._api_key,
        )

    async def list_models(self) -> tuple[str, ...] | None:
        """The model ids ``GET /models`` lists, or None where the endpoint has no such route.

        Raises :class:`ImageError` when the endpoint fails, refuses the key, or answers with
        something that is not a model list (an HTML page from a wrong base URL, say).
        """
        status, headers, body = await self._exchange("GET", "models", 8 * 1024 * 1024)
        if status in (404, 405):
            return None
        if status != 200:
            raise self._refusal(status, headers, body)
        names = _model_ids(body, lambda name: upstream_text(name, self._api_key, MODEL_ID_CHARS))
        if names is None:
            kind = "an HTML page" if body.lstrip()[:1] == b"<" else "something else"
            raise MalformedResponse(
                f"GET /models answered with {kind}, not a model list: check OPENAI_BASE_URL",
                request_id=request_id_of(headers, self._api_key),
            )
        return names

    async def check(self) -> CheckResult:
        """Whether the endpoint answers and accepts the key, without generating anything."""
        models = await self.list_models()
        if models is not None:
            return CheckResult("the endpoint answers and accepts the key", models)
        status, headers, body = await self._exchange(
            "POST", "images/generations", 1024 * 1024, b"{}"
        )
        if status in (400, 422):
            return CheckResult("the endpoint answers and accepts the key (no /models route)")
        raise self._refusal(status, headers, body)

    async def has_moderations(self) -> bool | None:
        """Whether ``POST /moderations`` exists: an empty body is refused as invalid (400, 422)
        where it does, and 404 or 405 where it does not; None where the answer tells neither
        (the endpoint failing, say), and requests are then checked, failing closed."""
        try:
            status, _, _ = await self._exchange("POST", "moderations", 64 * 1024, b"{}")
        except ImageError:
            return None
        if status in (404, 405):
            return False
        if status in (200, 400, 422):
            return True
        return None


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
