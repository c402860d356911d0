"""Prices of image generations: what a request is expected to cost, and what it cost.

A placeholder with the agreed signatures, so that the usage ledger can be written against them:
the real module (prices from the model catalog) replaces this one at merge. Until then every
cost is unknown (None), which the ledger records as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .request import PreparedRequest


def estimate_cost(prepared: PreparedRequest) -> Decimal | None:
    """What ``prepared`` is expected to cost before it is sent, in US dollars; None: unknown."""
    return None


def settle_cost(
    prepared: PreparedRequest, usage: Mapping[str, Any] | None, images: int
) -> Decimal | None:
    """What ``prepared`` cost, from the answer's usage and the images that came back; None:
    unknown."""
    return None
