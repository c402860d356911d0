"""Typed errors of the image engine.

Every error carries two texts: ``str(error)`` is the operator's detail (status, upstream message,
request id), and ``user_message`` is one sentence fit for the person who asked for the image.
Neither ever holds a secret: upstream messages pass through :func:`redact` before they are kept.
"""

from __future__ import annotations

import re
import unicodedata

from bot.i18n import _

# Upstream 401 bodies echo a masked key ("Incorrect API key provided: sk-abc***xyz"); any
# key-shaped token is removed from texts we keep, not just the exact key we hold.
_KEY_SHAPED = re.compile(r"\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_*\-]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(?i)bearer\s+\S+")


_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_SPACES = re.compile(r"\s+")


def redact(text: str, *secrets: str) -> str:
    """Remove the given secrets, bearer credentials and key-shaped tokens from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _BEARER.sub("Bearer [redacted]", text)
    return _KEY_SHAPED.sub("[redacted]", text)


def _printable(text: str) -> str:
    """No terminal escapes, no format characters (bidi overrides, zero-width), and controls and
    line breaks as spaces: one log record stays one line, and a terminal shows what it says."""
    text = _ANSI_ESCAPE.sub("", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        kept.append(" " if category in ("Cc", "Zl", "Zp") else char)
    return _SPACES.sub(" ", "".join(kept)).strip()


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clean_text(text: str, limit: int) -> str:
    """Text from outside made safe to print, at most ``limit`` characters."""
    return _bounded(_printable(text), limit)


def upstream_text(text: str, secret: str, limit: int = 500) -> str:
    """Any text the image service sent (messages, codes, types, ids, hosts), fit to keep and
    show. Cleaned before it is redacted: an escape sequence inside an echoed key would otherwise
    hide it from redaction, and cleaning would then join it back together."""
    return _bounded(redact(_printable(text), secret), limit)


class ImageError(Exception):
    """Base of every failure the engine reports."""

    user_message: str = _("The image could not be generated.")

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
        parts = [self.detail]  # an HTTP status, where there is one, is already in the detail
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return "; ".join(parts)


class InvalidRequest(ImageError):
    """The request was refused as malformed, by our validation or by the API."""

    user_message: str = _("The image service refused this request as invalid.")


class UnsupportedOption(InvalidRequest):
    """A value the chosen model does not take; raised before any paid call."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, user_message=message)
        self.field = field


MODEL_UNAVAILABLE = _(
    "The model {model} is not available on this image service. Please choose another model."
)
MODEL_UNAVAILABLE_NOTE = _(
    "The model {model} is not available on this image service (it was {note}). Please choose "
    "another model."
)


class ModelUnavailable(InvalidRequest):
    """The service does not serve the model: not found, or shut down."""

    def __init__(self, detail: str, *, model: str, note: str = "", **kwargs: object) -> None:
        sentence = (MODEL_UNAVAILABLE_NOTE if note else MODEL_UNAVAILABLE).format(
            model=model, note=note
        )
        super().__init__(detail, user_message=sentence, **kwargs)  # type: ignore[arg-type]
        self.model = model


class OptionNotAvailable(InvalidRequest):
    """The bot's account has no access to a feature it asked for (GIF or SVG output, say)."""


class ModerationBlocked(ImageError):
    user_message: str = _(
        "The image service's safety system blocked this prompt or its result. Try rephrasing it."
    )


class QuotaExhausted(ImageError):
    user_message: str = _(
        "The bot has used up its image-generation quota. A server admin needs to top it up."
    )


class AuthenticationFailed(ImageError):
    user_message: str = _(
        "The image service rejected the bot's API key. A server admin needs to check it."
    )


class RateLimited(ImageError):
    user_message: str = _("The image service is busy right now. Please try again in a minute.")
    retry_after: float | None = None  # seconds, when the service said how long to wait


class UpstreamUnavailable(ImageError):
    user_message: str = _("The image service is unavailable right now. Please try again later.")


class GenerationTimeout(ImageError):
    user_message: str = _("The image service took too long to answer. Please try again.")


class MalformedResponse(ImageError):
    user_message: str = _("The image service sent back something that is not a valid image.")


class ImageLinkBroken(MalformedResponse):
    """An image URL in the answer does not serve the image; fetching it again would not help."""

    user_message: str = _(
        "The image service answered with a link to the image that does not work. Please try again."
    )


class ResponseTooLarge(MalformedResponse):
    user_message: str = _("The image service sent back more data than the bot accepts.")
