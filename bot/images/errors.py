"""Typed errors of the image engine.

Every error carries two texts: ``str(error)`` is the operator's detail (status, upstream message,
request id), and ``user_message`` is one sentence fit for the person who asked for the image.
Neither ever holds a secret: upstream messages pass through :func:`redact` before they are kept.
"""

from __future__ import annotations

import re

# Upstream 401 bodies echo a masked key ("Incorrect API key provided: sk-abc***xyz"); any
# key-shaped token is removed from texts we keep, not just the exact key we hold.
_KEY_SHAPED = re.compile(r"\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_*\-]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(?i)bearer\s+\S+")


def redact(text: str, *secrets: str) -> str:
    """Remove the given secrets, bearer credentials and key-shaped tokens from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _BEARER.sub("Bearer [redacted]", text)
    return _KEY_SHAPED.sub("[redacted]", text)


class ImageError(Exception):
    """Base of every failure the engine reports."""

    user_message = "The image could not be generated."

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.request_id = request_id
        if user_message is not None:
            self.user_message = user_message

    def __str__(self) -> str:
        parts = [self.detail]
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return "; ".join(parts)


class InvalidRequest(ImageError):
    """The request was refused as malformed, by our validation or by the API."""

    user_message = "The image service refused this request as invalid."


class UnsupportedOption(InvalidRequest):
    """A value the chosen model does not take; raised before any paid call."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, user_message=message)
        self.field = field


class ModerationBlocked(ImageError):
    user_message = (
        "The image service's safety system blocked this prompt or its result. Try rephrasing it."
    )


class QuotaExhausted(ImageError):
    user_message = (
        "The bot has used up its image-generation quota. A server admin needs to top it up."
    )


class AuthenticationFailed(ImageError):
    user_message = "The image service rejected the bot's API key. A server admin needs to check it."


class RateLimited(ImageError):
    user_message = "The image service is busy right now. Please try again in a minute."
    retry_after: float | None = None  # seconds, when the service said how long to wait


class UpstreamUnavailable(ImageError):
    user_message = "The image service is unavailable right now. Please try again later."


class GenerationTimeout(ImageError):
    user_message = "The image service took too long to answer. Please try again."


class MalformedResponse(ImageError):
    user_message = "The image service sent back something that is not a valid image."


class ResponseTooLarge(MalformedResponse):
    user_message = "The image service sent back more data than the bot accepts."
