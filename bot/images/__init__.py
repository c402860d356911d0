"""The image engine: a request in, decoded images out. Knows nothing of Discord."""

from .catalog import Catalog, CatalogError, FreeSize, ModelSpec, load_catalog, parse_size
from .client import CheckResult, ClientSettings, GenerationResult, ImageClient
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
)
from .request import ImageRequest, build_body
from .response import GeneratedImage

__all__ = [
    "AuthenticationFailed",
    "Catalog",
    "CatalogError",
    "CheckResult",
    "ClientSettings",
    "FreeSize",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTimeout",
    "ImageClient",
    "ImageError",
    "ImageRequest",
    "InvalidRequest",
    "MalformedResponse",
    "ModelSpec",
    "ModerationBlocked",
    "QuotaExhausted",
    "RateLimited",
    "ResponseTooLarge",
    "UnsupportedOption",
    "UpstreamUnavailable",
    "build_body",
    "load_catalog",
    "parse_size",
]
