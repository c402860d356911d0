"""The image engine: a request in, decoded images out. Knows nothing of Discord."""

from .catalog import Catalog, CatalogError, FreeSize, ModelSpec, Price, load_catalog, parse_size
from .client import ClientSettings, GenerationResult, ImageClient
from .edits import EditRequest
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
)
from .moderation import (
    CATEGORIES,
    ModerationResult,
    ModerationUnavailable,
    Policy,
    PolicyRefused,
    parse_policy,
)
from .pricing import describe_price, estimate_cost, settle_cost
from .probe import CheckResult
from .processing import Lease, ProcessingSlots
from .request import (
    MAX_FRAMES,
    MIN_FRAMES,
    ImageRequest,
    InputImage,
    PreparedRequest,
    build_body,
    prepare_request,
)
from .response import GeneratedImage
from .retry import RetryPolicy
from .upstream import join_url

__all__ = [
    "CATEGORIES",
    "MAX_FRAMES",
    "MIN_FRAMES",
    "AuthenticationFailed",
    "Catalog",
    "CatalogError",
    "CheckResult",
    "ClientSettings",
    "EditRequest",
    "FreeSize",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTimeout",
    "ImageClient",
    "ImageError",
    "ImageLinkBroken",
    "ImageRequest",
    "InputImage",
    "InvalidRequest",
    "Lease",
    "MalformedResponse",
    "ModelSpec",
    "ModelUnavailable",
    "ModerationBlocked",
    "ModerationResult",
    "ModerationUnavailable",
    "OptionNotAvailable",
    "Policy",
    "PolicyRefused",
    "PreparedRequest",
    "Price",
    "ProcessingSlots",
    "QuotaExhausted",
    "RateLimited",
    "ResponseTooLarge",
    "RetryPolicy",
    "UnsupportedOption",
    "UpstreamUnavailable",
    "build_body",
    "describe_price",
    "estimate_cost",
    "join_url",
    "load_catalog",
    "parse_policy",
    "parse_size",
    "prepare_request",
    "settle_cost",
]
