"""Logging set-up: discord.py's text lines (LOG_FORMAT=text) or one JSON object a line
(LOG_FORMAT=json, with python-json-logger), secrets removed from either.

- Text lines are coloured only for a terminal: not when stderr is a pipe or a file (discord.py
  colours under Docker whatever stderr is, which fills `docker logs` and log files with escape
  codes), and never with NO_COLOR set (https://no-color.org).
- Libraries that would log members' prompts and ids at DEBUG (the database drivers log every
  statement with its values, discord.py every gateway event and HTTP body) are held at INFO
  whatever LOG_LEVEL says, and SQLAlchemy at WARNING (at INFO it echoes statements and values).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import Protocol, TextIO

import discord
from pythonjsonlogger.json import JsonFormatter

from bot.observability import context

REDACTED = "[redacted]"
# Loggers kept quieter than LOG_LEVEL=DEBUG: the least severe level each may log at.
QUIET_LIBRARIES = {
    "aiosqlite": logging.INFO,
    "asyncpg": logging.INFO,
    "coredis": logging.INFO,
    "discord.gateway": logging.INFO,
    "discord.http": logging.INFO,
    "sqlalchemy": logging.WARNING,
}
# discord.py's text line, without its colours.
TEXT_FORMAT = "[{asctime}] [{levelname:<8}] {name}: {message}"
TEXT_DATES = "%Y-%m-%d %H:%M:%S"


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class Settings(Protocol):
    """What logging reads of the bot's settings (``bot.config.Settings`` has it): observability
    sits below every layer, so it names the fields it needs instead of importing the root's."""

    @property
    def openai_api_key(self) -> _Secret: ...
    @property
    def discord_token(self) -> _Secret | None: ...
    @property
    def user_id_secret(self) -> _Secret | None: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_format(self) -> str: ...


class RequestIds(logging.Filter):
    """Adds the current request's ids to a record (as ``correlation_id`` and ``request_id``)
    where the task logging it works for one."""

    def filter(self, record: logging.LogRecord) -> bool:
        correlation = context.correlation_id.get()
        if correlation is not None:
            record.correlation_id = correlation
        upstream = context.request_id.get()
        if upstream is not None:
            record.request_id = upstream
        place = context.place.get()
        if place is not None:
            record.place = place
        return True


class _Redacting(logging.Formatter):
    """Removes the secrets from the finished line, tracebacks and extra fields included: a
    library's message or an exception's text may repeat a header or a URL."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        # Also as a JSON string would spell them (a key with a backslash or a quote in it).
        spelled = {spelling for s in secrets if s for spelling in (s, json.dumps(s)[1:-1])}
        self._secrets = tuple(sorted(spelled, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


class _WithRequestIds(logging.Formatter):
    """A text line followed by the request's ids, where it has them: ``[correlation_id=…
    request_id=…]`` at the end of the line's first row, before any traceback."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        ids = " ".join(
            f"{name}={value}"
            for name in ("correlation_id", "request_id", "place")
            if (value := getattr(record, name, None)) is not None
        )
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{ids}]{newline}{rest}"


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the request's ids
    when there are, and the traceback as ``exc_info``."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def secrets_of(settings: Settings) -> list[str]:
    values = [settings.openai_api_key.get_secret_value()]
    for secret in (settings.discord_token, settings.user_id_secret):
        if secret is not None:
            values.append(secret.get_secret_value())
    return values


def _dress(handler: logging.Handler, inner: logging.Formatter, settings: Settings) -> None:
    handler.setFormatter(_Redacting(inner, secrets_of(settings)))
    handler.addFilter(RequestIds())


def json_handler(settings: Settings, stream: TextIO) -> logging.Handler:
    """A handler writing JSON lines to ``stream``, with the request ids, secrets removed."""
    handler = logging.StreamHandler(stream)
    _dress(handler, json_formatter(), settings)
    return handler


def colours(stream: TextIO) -> bool:
    """Whether text lines to ``stream`` are coloured: a terminal's, unless NO_COLOR is set."""
    if os.environ.get("NO_COLOR"):  # set and not empty, as no-color.org says
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def quiet_libraries(level: int) -> None:
    """Hold the libraries of QUIET_LIBRARIES at their floor where ``level`` is below it (never
    louder than ``level``: a library's logger level is checked before the root's)."""
    for name, floor in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(level, floor))


def configure_logging(settings: Settings) -> None:
    """Set up the root logger as LOG_FORMAT says."""
    level = logging.getLevelName(settings.log_level)
    quiet_libraries(level)
    if settings.log_format == "json":
        root = logging.getLogger()
        root.setLevel(level)
        root.addHandler(json_handler(settings, sys.stderr))
        return
    if colours(sys.stderr):
        discord.utils.setup_logging(level=level, root=True)  # its own colours
    else:  # discord.py would colour under Docker whatever stderr is: its line, plain
        plain = logging.Formatter(TEXT_FORMAT, TEXT_DATES, style="{")
        discord.utils.setup_logging(level=level, root=True, formatter=plain)
    handler = logging.getLogger().handlers[-1]
    _dress(handler, _WithRequestIds(handler.formatter or logging.Formatter()), settings)
