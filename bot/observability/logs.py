"""Logging set-up: discord.py's text lines (LOG_FORMAT=text) or one JSON object a line
(LOG_FORMAT=json, with python-json-logger), secrets removed from either."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import discord
from pythonjsonlogger.json import JsonFormatter

from bot.config import Settings
from bot.observability import context

REDACTED = "[redacted]"


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
        return True


class _Redacting(logging.Formatter):
    """Removes the secrets from the finished line, tracebacks and extra fields included: a
    library's message or an exception's text may repeat a header or a URL."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = tuple(secret for secret in secrets if secret)

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


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


def configure_logging(settings: Settings) -> logging.Handler:
    """Set up the root logger as LOG_FORMAT says; returns the handler installed."""
    level = logging.getLevelName(settings.log_level)
    if settings.log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        inner = json_formatter()
        root = logging.getLogger()
        root.setLevel(level)
        root.addHandler(handler)
    else:
        discord.utils.setup_logging(level=level, root=True)
        handler = logging.getLogger().handlers[-1]
        inner = handler.formatter or logging.Formatter()
    handler.setFormatter(_Redacting(inner, secrets_of(settings)))
    handler.addFilter(RequestIds())
    return handler
