"""The ids of the request a task is working on, for its log lines.

Context variables: each asyncio task gets a copy of its creator's context, so an id set while a
member's request is admitted is seen by every line its job logs, and by no other request's.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar

# One per interaction: ties together every line of one member's request.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# The image service's x-request-id, once it has answered: what its support asks for.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Where the request was made: server, dm, group_dm or user_install (bot/requests/where.py); it
# tells the lines of server, DM and user-install use apart without a raw Discord id.
place: ContextVar[str | None] = ContextVar("place", default=None)


def new_correlation_id() -> str:
    """A fresh correlation id, bound to the current context (and the tasks it creates)."""
    value = uuid.uuid4().hex[:16]
    correlation_id.set(value)
    request_id.set(None)  # a new request has no answer yet
    place.set(None)
    return value


def set_place(value: str) -> None:
    """Where the current request was made, for its log lines."""
    place.set(value)
