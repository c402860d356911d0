"""Configuration: read once at start from the environment and a ``.env`` file, validated.

Missing or malformed values stop start-up with :class:`ConfigError`, one sentence that names
every such variable and what it accepts. Secrets are :class:`~pydantic.SecretStr`: their repr is
masked.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, parse_many
from limits.util import SEPARATORS, SINGLE_EXPR
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.images.catalog import Catalog, CatalogError, load_catalog
from bot.images.pricing import MAX_REQUEST_COST, dearest_request
from bot.images.text import TextModelSpec, load_text_models
from bot.store.budgets import BUDGET_ACCEPTS, Budget, parse_budgets

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_RATE_LIMIT = "5/hour"
PACKAGE = "imagine-bot"
# Each shared store the per-user limits can use: the extra that installs its client, and the
# modules limits' asyncio storage class for it imports. From limits 5.x: RedisStorage and its
# sentinel and cluster variants use their coredis implementation unless told otherwise (the
# bot does not tell them), MongoDBStorage needs motor and pymongo. Memcached is not here: its
# storage keeps no moving window (see UNUSABLE_STORES); memory:// needs nothing.
SHARED_STORES: dict[str, tuple[str, tuple[str, ...]]] = {
    "redis": ("redis", ("coredis",)),
    "rediss": ("redis", ("coredis",)),
    "redis+sentinel": ("redis", ("coredis",)),
    "redis+cluster": ("redis", ("coredis",)),
    "mongodb": ("mongodb", ("motor", "pymongo")),
}
UNUSABLE_STORES = {
    "memcached": "keeps no moving window, which the per-user limits use; use redis:// or mongodb://"
}
MAX_DISCORD_CHOICES = 25
# A host name the metrics server may listen on (an IP address is read by ipaddress instead).
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
MAX_SHARDS = 65535  # far above what any bot runs: a bound for a mistyped number
LONGEST_WINDOW_SECONDS = 10 * 366 * 24 * 3600
# The client removes the key from every text it logs or keeps, wherever it occurs: a key of a
# few characters would also cut ordinary words apart, and is no real key anyway.
MIN_API_KEY_LENGTH = 8
# The database URLs the ledger takes, by scheme: the async driver each is normalised to.
DATABASE_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class ConfigError(Exception):
    """A configuration value is missing or malformed: one sentence for the operator."""


def _installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


class _Refused(ValueError):
    """A validator's own reason: the words that follow the variable's name in the sentence."""


@dataclass(frozen=True)
class Shown:
    """How the configuration reference and ``.env.example`` show a variable, where its default
    value alone does not say it (``python -m bot.config_docs`` writes both from the fields)."""

    default: str | None = None  # the default in words, for the reference
    required: str | None = None  # when a variable with a default is required nonetheless
    value: str | None = None  # what .env.example sets it to, where not the default
    commented: bool = False  # .env.example leaves it commented out


def about(accepts: str, *explanation: str) -> str:
    """A field's description: what it accepts (completing "it must be ...", the words of a
    start-up error), then paragraphs that explain it, for the reference and .env.example."""
    return "\n\n".join((accepts, *explanation))


def what_it_accepts(description: str | None) -> str:
    """What a field accepts: its description's first paragraph."""
    return (description or "a valid value").split("\n\n", 1)[0]


class Settings(BaseSettings):
    """Every setting of the bot. Each field's description is its documentation: its first
    paragraph says what the variable accepts (start-up errors repeat it), the others explain
    it. The configuration reference (docs/configuration.md) and .env.example are generated
    from them by ``python -m bot.config_docs``, and a test fails while either is stale."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    discord_token: Annotated[SecretStr | None, Shown(required="to run or sync")] = Field(
        default=None,
        description=about(
            "the bot token from the Discord developer portal",
            "Developer portal → your application → **Bot** → **Reset Token**; see "
            "[Creating the Discord application]"
            "(getting-started.md#creating-the-discord-application). The other commands of "
            "`python -m bot` (`check`, `imagine`, `edit`, `usage`, `migrate`, `health`) do "
            "without it.",
        ),
    )
    openai_api_key: SecretStr = Field(
        description=about(
            "the API key of the OpenAI account or gateway (sent as a Bearer token)",
            "The key of your OpenAI account, or of the gateway `OPENAI_BASE_URL` names, sent as "
            "`Authorization: Bearer <key>`; at least 8 characters. It never appears in logs, "
            "messages or errors.",
        )
    )
    openai_base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description=about(
            "an http(s) URL of an OpenAI-compatible API, such as https://api.openai.com/v1",
            "The Images API's base URL: any gateway that republishes it works (the bot sends "
            "`POST {OPENAI_BASE_URL}/images/generations` and `/images/edits`). A trailing slash "
            "is fine and a query string (`?api-version=…`) is kept; no user name or password "
            "(credentials go in `OPENAI_API_KEY`).",
        ),
    )
    user_rate_limit: Annotated[
        tuple[RateLimitItem, ...], NoDecode, Shown(value=DEFAULT_RATE_LIMIT)
    ] = Field(
        default=tuple(parse_many(DEFAULT_RATE_LIMIT)),
        description=about(
            "limits in the `limits` notation, such as 5/hour or 2/minute;20/day",
            "Per Discord user, in a moving window; several separated by `;`, each letting at "
            "least 1 request through. A request counts once it is accepted (valid and within "
            "the limits), before it is queued, whatever its outcome; requests refused as "
            "invalid never count. See [Rate limits](commands.md#rate-limits).",
        ),
    )
    member_budget: Annotated[tuple[Budget, ...], NoDecode, Shown(default="no budget")] = Field(
        default=(),
        description=about(
            f"{BUDGET_ACCEPTS}, for each member in each server",
            "In money (US dollars, as the catalog's prices say) and in images, per calendar day "
            "or month in UTC. A request reserves its estimated cost and image count when it is "
            "admitted; a money budget refuses models whose price is not known. A request a "
            "budget refuses has still counted against `USER_RATE_LIMIT`. It is a ceiling: a "
            "server's managers can lower it for their server with `/imagine-settings "
            "member-budget`, never lift it (unless `SERVERS_MAY_RAISE_BUDGETS`). See "
            "[Budgets](usage.md#budgets).",
        ),
    )
    server_budget: Annotated[tuple[Budget, ...], NoDecode, Shown(default="no budget")] = Field(
        default=(),
        description=about(
            f"{BUDGET_ACCEPTS}, for each server as a whole",
            "Each server's budget as a whole, in the notation of `MEMBER_BUDGET`; a ceiling "
            "that `/imagine-settings server-budget` can lower for one server, never lift "
            "(unless `SERVERS_MAY_RAISE_BUDGETS`).",
        ),
    )
    user_budget: Annotated[tuple[Budget, ...], NoDecode, Shown(default="no budget")] = Field(
        default=(),
        description=about(
            f"{BUDGET_ACCEPTS}, for each Discord user across every server and direct message",
            "What each Discord user may spend with the bot as a whole, in the notation of "
            "`MEMBER_BUDGET`: their requests in every server and direct message count together, "
            "so a member who invites the bot to servers of their own gets no fresh budget in "
            "each. No server's settings change it; `/usage` shows it to the member.",
        ),
    )
    total_budget: Annotated[tuple[Budget, ...], NoDecode, Shown(default="no budget")] = Field(
        default=(),
        description=about(
            f"{BUDGET_ACCEPTS}, for the whole bot",
            "What the whole bot may spend, every server and direct message together, in the "
            "notation of `MEMBER_BUDGET`, such as `$50/day;$500/month`: the bound on the "
            "operator's bill, however many servers invite the bot. No server's settings "
            "change it. Every admission then waits its turn for one lock (see "
            "[Budgets](usage.md#budgets)).",
        ),
    )
    servers_may_raise_budgets: bool = Field(
        default=False,
        description=(
            "true or false: whether a server's managers may replace MEMBER_BUDGET and "
            "SERVER_BUDGET with higher budgets, or none, in /imagine-settings (false: they are "
            "ceilings a server can only lower)"
        ),
    )
    servers_may_exempt_roles: bool = Field(
        default=False,
        description=(
            "true or false: whether a server's managers may exempt roles from USER_RATE_LIMIT "
            "for requests on their server (`/imagine-settings role-tier ... exempt`); false: "
            "the rate limit holds for every member, whatever their tier"
        ),
    )
    blocked_words: Annotated[tuple[str, ...], NoDecode, Shown(default="none")] = Field(
        default=(),
        description=about(
            "a comma-separated list of words and phrases",
            "Prompts with any of them are refused on every server (and in direct messages), "
            "privately and before anything is paid for. A server's managers can add words and "
            "patterns of their own with `/imagine-settings blocked-words` and "
            "`blocked-patterns`, never remove these. Matching ignores case, accents, invisible "
            "characters and look-alike letters, on word boundaries: see "
            "[Keeping a server safe](safety.md#blocked-words-and-patterns).",
        ),
    )
    moderation_check: Annotated[str, Shown(default="off")] = Field(
        default="off",
        description=about(
            "off, on or strict",
            "Whether prompts (and an edit's images) go to the service's moderation check "
            "(`POST /moderations`, free on OpenAI) before anything is paid for, on servers that "
            "choose nothing else with `/imagine-settings moderation`: `on` refuses what the "
            "service flags, `strict` lower scores too (for servers with children). A check "
            "that fails refuses the request. Where the endpoint has no `/moderations`, start-up "
            "stops while this is on; see "
            "[The moderation check](safety.md#the-moderation-check).",
        ),
    )
    allow_user_install: bool = Field(
        default=True,
        description=about(
            "true or false: whether members may install the bot to their own account and use "
            "it in DMs, group DMs and servers that have not installed it",
            "Every command declares where it may be installed and used: with `true`, installed "
            "to a server and by a member (user install), used in servers, the bot's DM and "
            "group DMs; with `false`, installed to servers and used in them only. The "
            "application's **Installation** page in the developer portal must match (see "
            "[Creating the Discord application](getting-started.md)). Outside a server that "
            "installed the bot, spending is the member's personal scope: see "
            "[Budgets](usage.md#budgets).",
        ),
    )
    rate_limit_storage_uri: str = Field(
        default="memory://",
        repr=False,  # it may hold the store's password
        description=about(
            "memory:// (one process) or a storage URI shared by several processes, "
            "such as redis://localhost:6379",
            "Where the per-user limits are kept: `memory://` for one process, or a store several "
            "bot processes share: `redis://host:6379` (also `rediss://`, `redis+sentinel://`, "
            "`redis+cluster://`) with the `redis` extra, `mongodb://host:27017` with the "
            "`mongodb` extra. Without the extra, start-up stops with the install command; a "
            "store that does not answer stops start-up too. Memcached cannot be used: its "
            "storage in `limits` keeps no moving window. On Redis a member's limits are checked "
            "and counted as one across processes; turn on Redis's persistence (`appendonly "
            "yes`) if its restart should not forget the counts. See "
            "[Several processes, one state](operations.md#several-processes-one-state).",
        ),
    )
    default_model: str = Field(
        default="gpt-image-2.5-flare",
        description=about(
            "a model of the catalog",
            "The model used when a member picks none. Where the endpoint lists its models and "
            "lacks this one, the first configured model it serves is used instead (and the log "
            "says so).",
        ),
    )
    offered_models: Annotated[tuple[str, ...], NoDecode, Shown(default="every catalog model")] = (
        Field(
            default=(),
            description=about(
                f"a comma-separated list of catalog models, at most {MAX_DISCORD_CHOICES}",
                "The models members may choose, each listed once; `DEFAULT_MODEL` is always "
                "offered and counts towards the 25. Where the endpoint lists its models, only "
                "those it serves are offered.",
            ),
        )
    )
    text_model: str = Field(
        default="gpt-5.4-mini",
        description=about(
            'a text model of the catalog (`[text_models."<name>"]`), or empty to turn it off',
            "The model that writes prompt suggestions for /describe and the Describe image menu "
            "(it must read images) and richer prompts for Enhance, asked through "
            "`POST {OPENAI_BASE_URL}/chat/completions`. Where the endpoint lists its models and "
            "lacks this one, or it is empty, those features are not offered (the log says so "
            "once). See [Describe and enhance](describe.md).",
        ),
    )
    image_models_file: Annotated[Path | None, Shown(default="the shipped catalog only")] = Field(
        default=None,
        description=about(
            "the path of a TOML file adding or overriding models",
            "A gateway's own model names, other defaults, a lower `max_count`, prices: the same "
            "shape as `bot/images/models.toml`; see "
            "[Your own models](models.md#your-own-models).",
        ),
    )
    max_images_per_request: int = Field(
        default=4,
        ge=1,
        le=10,
        description=about(
            "a whole number 1-10",
            "The most images one request may ask for, whatever the model allows; "
            "`/imagine-settings max-images` lowers it for one server.",
        ),
    )
    request_timeout: float = Field(
        default=180.0,
        gt=0,
        le=840,
        description=about(
            "seconds, more than 0 and at most 840",
            "How long one attempt at the image service may take, connection to last byte. "
            "Time an answer waits for a processing slot is not counted.",
        ),
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description=(
            "seconds to open a connection to the image service, more than 0 and at most 120"
        ),
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=5,
        description=about(
            "a whole number 0-5",
            "How many times a failed request (429 rate limit, 5xx, dropped connection) is "
            "retried. Each retry of a generation may be billed.",
        ),
    )
    allow_private_image_urls: bool = Field(
        default=False,
        description=about(
            "true or false: whether image URLs returned by the image service may point at "
            "loopback or private network addresses (true for a gateway on the same host or "
            "network)",
            "Otherwise image URLs are fetched only from public addresses, each redirect checked.",
        ),
    )
    max_image_mb: float = Field(
        default=32.0,
        ge=0.1,
        le=512,
        description=about(
            "megabytes, at least 0.1 and at most 512",
            "The largest single image accepted from the image service.",
        ),
    )
    max_response_mb: float = Field(
        default=96.0,
        ge=1,
        le=2048,
        description=about(
            "megabytes, at least 1 and at most 2048, and no less than MAX_IMAGE_MB",
            "The largest response body accepted from the image service; a streamed answer "
            "counts whole.",
        ),
    )
    partial_images: int = Field(
        default=2,
        ge=0,
        le=3,
        description=about(
            "a whole number 0-3: previews streamed while an image is made, where the model "
            "streams (0: none); each is billed as 100 more image output tokens",
            "Asked for only where the model streams (the catalog's `streaming`; not GIF or SVG "
            "output). With 2, a gpt-image-1-mini image costs 200 x $8/1M = $0.0016 more, a "
            "gpt-image-1 image 200 x $40/1M = $0.008 more. Asked for only while the bot's "
            "shared budget of progress edits can show them (under a burst, later requests ask "
            "for fewer or none, and pay for none). 0 turns previews (and streaming) off: the "
            "reply shows the time elapsed instead. See [Live progress](buttons.md#live-progress).",
        ),
    )
    max_concurrent_generations: int = Field(
        default=256,
        ge=1,
        le=1000,
        description=about(
            "a whole number 1-1000",
            "The most requests waiting on the image service at once, across the whole bot; the "
            "rest wait in the bot's queue and see their place in line. A waiting request costs "
            "a socket, not memory, so this is high; the bot lowers it by itself while the "
            "service answers 429 or its `x-ratelimit-remaining-requests` runs out, and raises it "
            "again as the service recovers.",
        ),
    )
    processing_slots: Annotated[int | None, Shown(default="4 per core, at least 4")] = Field(
        default=None,
        ge=1,
        le=64,
        description=about(
            "a whole number 1-64 (unset: 4 per core, at least 4)",
            "How many answers are read, decoded, re-encoded and posted at once; the others wait "
            "in the network buffers. Memory is about this times the largest response, plus 8 MiB "
            "per slot for previews and edits' input images held outside them.",
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        le=900,
        description=about(
            "seconds, 0 to 900",
            "On SIGTERM or SIGINT, how long requests in flight may take to finish. Whatever "
            "supervises the bot must wait longer before killing it: see "
            "[Hosting](hosting.md).",
        ),
    )
    data_dir: Annotated[Path, Shown(commented=True)] = Field(
        default=Path("data"),
        description=about(
            "a writable directory",
            "Where the bot keeps its state: the pseudonym secret (unless `USER_ID_SECRET` is "
            "set), the digest of the last command sync, and the usage ledger's SQLite file "
            "unless `DATABASE_URL` says otherwise; created when missing. A relative path is "
            "read from the working directory. The Docker image sets `/data`, its volume: "
            "leave it unset there.",
        ),
    )
    database_url: Annotated[str | None, Shown(default="`DATA_DIR/imagine.db` (SQLite)")] = Field(
        default=None,
        repr=False,  # it may hold the database's password
        description=about(
            "a sqlite:///PATH URL, or a postgresql://USER:PASSWORD@HOST/DATABASE URL shared by "
            "several bot processes (unset: DATA_DIR/imagine.db)",
            "The usage ledger's database. Unset: the SQLite file `DATA_DIR/imagine.db`, which "
            "needs no set-up; a file elsewhere: `sqlite:////srv/imagine.db`. To share one "
            "ledger between several bot processes, a PostgreSQL server (the `postgres` extra): "
            "`postgresql://USER:PASSWORD@HOST:5432/DATABASE`. The password is never logged.",
        ),
    )
    user_id_secret: Annotated[SecretStr | None, Shown(default="generated into `DATA_DIR`")] = Field(
        default=None,
        description=about(
            "a random string of at least 16 characters used to pseudonymise user ids",
            "The key of the pseudonyms sent to the image API as `user` (an HMAC-SHA256 of "
            "the Discord user id). Unset: one is generated once and kept in `DATA_DIR`; "
            "back it up, or the members' pseudonyms change.",
        ),
    )
    dev_guild_id: int | None = Field(
        default=None,
        gt=0,
        description=about(
            "a Discord server id",
            "A server (guild) whose commands are synced at every start, so that they show "
            "there at once: for development.",
        ),
    )
    log_level: str = Field(
        default="INFO", description="one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
    log_format: str = Field(
        default="text",
        description=about(
            "text or json (one JSON object a line)",
            "`text`: discord.py's lines, ending with the request's ids in brackets; `json`: one "
            "JSON object a line with time, level, logger, message, and on the lines of a "
            "member's request its `correlation_id` and the image service's `request_id`. See "
            "[Log lines](operations.md#log-lines).",
        ),
    )
    metrics_port: Annotated[
        int | None, Shown(default="no metrics server", value="9100", commented=True)
    ] = Field(
        default=None,
        ge=0,
        le=65535,
        description=about(
            "a port number 1-65535 for /metrics and /healthz (0: any free port; "
            "unset: no metrics server)",
            "Prometheus metrics at `/metrics`, a health check at `/healthz` (`python -m bot "
            "health` asks it); with 0 the port chosen is logged at start. See "
            "[Metrics and health](operations.md#metrics-and-health).",
        ),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description=about(
            "the address the metrics server listens on, such as 127.0.0.1 or 0.0.0.0",
            "An IP address or host name: 127.0.0.1 for this host only, or 0.0.0.0 in a "
            "container whose port is published to Prometheus. The server has no "
            "authentication: do not expose it to the internet.",
        ),
    )
    shard_count: Annotated[int | None, Shown(default="the number Discord recommends")] = Field(
        default=None,
        ge=1,
        le=MAX_SHARDS,
        description=about(
            f"a whole number 1-{MAX_SHARDS} (unset: the number Discord recommends)",
            "The total number of shards across every process. See [Shards](operations.md#shards).",
        ),
    )
    shard_ids: Annotated[tuple[int, ...], NoDecode, Shown(default="every shard")] = Field(
        default=(),
        description=about(
            "a comma-separated list of shard numbers, such as 0,1 (unset: every shard)",
            "The shards this process runs; needs `SHARD_COUNT`, each number below it and listed "
            "once. To split a large bot over processes, give each the same `SHARD_COUNT` and its "
            "own `SHARD_IDS` (`0,1` in one, `2,3` in the next...).",
        ),
    )

    _catalog: Catalog = PrivateAttr()
    _text_models: dict[str, TextModelSpec] = PrivateAttr()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def text_spec(self) -> TextModelSpec | None:
        """The text model's entry; None where TEXT_MODEL is empty (the features are off)."""
        return self._text_models.get(self.text_model) if self.text_model else None

    @property
    def database(self) -> str:
        """The ledger's database: DATABASE_URL, or the SQLite file in DATA_DIR."""
        from bot.store.db import default_database_url  # SQLAlchemy only where a database is used

        return self.database_url or default_database_url(self.data_dir)

    @property
    def processing_slot_count(self) -> int:
        """Answers read, decoded, re-encoded and posted at once, unless set: a few per core,
        since a slot also waits on the network (the body arriving, the upload to Discord);
        measured on 2 cores, 2 slots doubled the engine's overhead and 8 matched 64."""
        return self.processing_slots or max(4 * (os.cpu_count() or 1), 4)

    @field_validator("openai_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        if any(char.isspace() or ord(char) < 32 for char in value):
            raise _Refused("is not valid: it must not contain spaces or control characters")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise _Refused("is not valid: its port must be a number from 1 to 65535")
        if parts.username is not None or parts.password is not None:
            # Fixed words: the refused value holds a password and is never repeated.
            raise _Refused(
                "is not valid: it must not contain a user name or password; "
                "send credentials with OPENAI_API_KEY"
            )
        if "#" in value:
            raise _Refused("is not valid: it must not contain a fragment (a part after #)")
        # The query string stays (a gateway may want ?api-version=... on every request); the
        # engine joins its paths before it.
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))

    @field_validator("user_rate_limit", mode="before")
    @classmethod
    def _rate_limit(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            limits = tuple(parse_many(value))
        except ValueError:
            raise ValueError("not in the limits notation") from None
        # parse_many reads "1/0 seconds" as one per second: a window of 0 is refused instead,
        # with the same expressions parse_many splits the text with.
        for expression in SEPARATORS.split(value):
            match = SINGLE_EXPR.match(expression)
            if match and match.group(3) is not None and int(match.group(3)) == 0:
                raise _Refused(
                    f"is not valid: {expression.strip()!r} has a window of 0 "
                    f"{match.group(4)}; the number before the unit must be at least 1"
                )
        return limits

    @field_validator("user_rate_limit")
    @classmethod
    def _each_limit_lets_a_request_through(
        cls, value: tuple[RateLimitItem, ...]
    ) -> tuple[RateLimitItem, ...]:
        for limit in value:
            if limit.amount < 1:
                raise _Refused(
                    f"is not valid: {limit} lets no request through; "
                    f"every limit must allow at least 1"
                )
            if limit.get_expiry() > LONGEST_WINDOW_SECONDS:
                # A refusal says when to try again; past a few years that date cannot be shown.
                raise _Refused(f"is not valid: {limit} has a window longer than 10 years")
        return value

    @field_validator("member_budget", "server_budget", "user_budget", "total_budget", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_budgets(value)
        except ValueError as exc:
            raise _Refused(f"is not valid: {exc}; it must be {BUDGET_ACCEPTS}") from None

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _storage(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].removeprefix("async+")
        if scheme in UNUSABLE_STORES:
            raise _Refused(f"is not usable: {scheme}:// {UNUSABLE_STORES[scheme]}")
        if "://" not in value or (scheme != "memory" and scheme not in SHARED_STORES):
            raise ValueError("unknown storage scheme")
        if scheme in SHARED_STORES:
            extra, modules = SHARED_STORES[scheme]
            if not all(_installed(module) for module in modules):
                raise _Refused(
                    f"is not usable: {scheme}:// needs the {extra} extra "
                    f'(pip install "{PACKAGE}[{extra}]")'
                )
            try:
                # Read the way the limits library will read it at start, so that a URI it
                # cannot parse is a sentence now; its error would print the whole URI.
                _check_store_locations(value)
            except ValueError:
                raise _Refused(
                    "is not valid: the URI cannot be read (a password with '#', '/', '?' or "
                    "'@' must be percent-encoded)"
                ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, separator, rest = value.strip().partition("://")
        driver = DATABASE_DRIVERS.get(scheme.lower())
        if not separator or driver is None:
            raise ValueError("unknown database scheme")
        if driver == "postgresql+asyncpg" and not _installed("asyncpg"):
            raise _Refused(
                "is not usable: postgresql:// needs the postgres extra "
                f'(pip install "{PACKAGE}[postgres]")'
            )
        url = f"{driver}://{rest}"
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception:  # its error repeats the URL, password and all
            raise _Refused(
                "is not valid: the URL cannot be read (a password with '@', '/', '#' or '?' "
                "must be percent-encoded)"
            ) from None
        if driver == "sqlite+aiosqlite" and parsed.database in (None, "", ":memory:"):
            raise _Refused(
                "is not valid: a SQLite URL must name a file, such as sqlite:////srv/imagine.db "
                "(an in-memory database would lose the ledger at every restart)"
            )
        if driver == "postgresql+asyncpg" and not parsed.database:
            raise _Refused(
                "is not valid: it must name the database, such as postgresql://host/imagine"
            )
        return url

    @field_validator("blocked_words", mode="before")
    @classmethod
    def _blocked_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(dict.fromkeys(w.strip() for w in value.split(",") if w.strip()))
        return value

    @field_validator("blocked_words")
    @classmethod
    def _blocked_words_fold(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from bot.store.blocklist import word_pattern  # RE2 and Unicode tables where used

        empty = [word for word in value if word_pattern(word) is None]
        if empty:
            raise _Refused(
                f"is not valid: {empty[0][:40]!r} has no letters or digits, so it blocks nothing"
            )
        return value

    @field_validator("moderation_check")
    @classmethod
    def _moderation_check(cls, value: str) -> str:
        if value.strip().lower() not in ("off", "on", "strict"):
            raise _Refused("is not valid: it must be off, on or strict")
        return value.strip().lower()

    @field_validator("offered_models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("offered_models")
    @classmethod
    def _listed_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = list(dict.fromkeys(name for name in value if value.count(name) > 1))
        if repeated:
            verb = "is" if len(repeated) == 1 else "are"
            raise _Refused(f"is not valid: {', '.join(repeated)} {verb} listed more than once")
        return value

    @field_validator("openai_api_key", "discord_token", "user_id_secret", mode="before")
    @classmethod
    def _secret_text(cls, value: Any) -> Any:
        # A .env saved with CRLF line ends (docker --env-file keeps the \r) or a pasted key
        # with a trailing space: the spaces go; a control character left inside is refused,
        # as it would be refused in an HTTP header on every request.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            return value
        text = text.strip()
        if any(ord(char) < 32 or ord(char) == 127 or char.isspace() for char in text):
            raise _Refused("is not valid: it must not contain spaces or control characters")
        return text

    @field_validator("openai_api_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
            # Says nothing of the value: even a wrong key is someone's secret.
            raise _Refused(
                f"is not valid: it must be at least {MIN_API_KEY_LENGTH} characters long"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("unknown level")
        return level

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in ("text", "json"):
            raise ValueError("unknown format")
        return chosen

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        host = value.strip().removeprefix("[").removesuffix("]")
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(host):
            raise ValueError("not an address")
        return host

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not all(part.isascii() and part.isdigit() for part in parts):
            raise _Refused(
                "is not valid: it must be a comma-separated list of shard numbers, such as 0,1"
            )
        return tuple(int(part) for part in parts)

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if not self.shard_ids:
            return self
        if self.shard_count is None:
            raise ValueError(
                "SHARD_IDS is not valid without SHARD_COUNT: set SHARD_COUNT to the total number "
                "of shards across every process"
            )
        repeated = sorted({shard for shard in self.shard_ids if self.shard_ids.count(shard) > 1})
        if repeated:
            raise ValueError(
                f"SHARD_IDS is not valid: {', '.join(map(str, repeated))} "
                f"{'is' if len(repeated) == 1 else 'are'} listed more than once"
            )
        beyond = [shard for shard in self.shard_ids if shard >= self.shard_count]
        if beyond:
            raise ValueError(
                f"SHARD_IDS is not valid: shard numbers go from 0 to {self.shard_count - 1} "
                f"with SHARD_COUNT={self.shard_count}, so {', '.join(map(str, beyond))} "
                f"{'is' if len(beyond) == 1 else 'are'} out of range"
            )
        return self

    @field_validator("user_id_secret")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("too short")
        return value

    @model_validator(mode="after")
    def _response_holds_an_image(self) -> Settings:
        if self.max_response_mb < self.max_image_mb:
            raise ValueError(
                f"MAX_RESPONSE_MB is not valid: it must be no less than MAX_IMAGE_MB "
                f"({self.max_image_mb:g}), since a response carries whole images"
            )
        return self

    @model_validator(mode="after")
    def _models(self) -> Settings:
        try:
            catalog = load_catalog(self.image_models_file)
        except CatalogError as exc:
            raise ValueError(f"IMAGE_MODELS_FILE: {exc}") from None
        for spec in catalog.values():
            dearest = dearest_request(spec)
            if dearest is not None and dearest > MAX_REQUEST_COST:
                # The amount is not repeated: a mistyped price can make it too long to print.
                raise ValueError(
                    f"IMAGE_MODELS_FILE: {self.image_models_file or 'models.toml'}: "
                    f"models.{spec.name}: price: "
                    f"one request could cost more than ${MAX_REQUEST_COST:,} at these prices, "
                    f"the most the bot records for one request (prices are US dollars per "
                    f"image, or per 1M tokens)"
                )
        self._catalog = catalog
        try:
            text_models = load_text_models(self.image_models_file)
        except CatalogError as exc:
            raise ValueError(f"IMAGE_MODELS_FILE: {exc}") from None
        if self.text_model and self.text_model not in text_models:
            raise ValueError(
                f"TEXT_MODEL is not valid: {self.text_model!r} is not a text model of the catalog "
                f'(known: {", ".join(text_models)}); add it as [text_models."<name>"] in '
                "IMAGE_MODELS_FILE, or leave TEXT_MODEL empty to turn describe and enhance off"
            )
        self._text_models = text_models
        return self

    def offered(self) -> tuple[str, ...]:
        """The models users may choose, the default first."""
        names = self.offered_models or tuple(self.catalog)
        return (self.default_model, *(n for n in names if n != self.default_model))


def _check_store_locations(uri: str) -> None:
    """Raise ValueError where no host, or an unreadable port, can be read from ``uri`` (the
    limits library reads them this way, and its own error would print the URI, password and
    all). A missing port is the store's default."""
    netloc = urlsplit(uri).netloc
    hosts = netloc[netloc.rfind("@") + 1 :]
    if not hosts:
        raise ValueError("no host")
    for location in hosts.split(","):
        parts = urlsplit(f"fake://{location.strip()}")
        _ = parts.port  # raises ValueError for a port that is not a number in range
        if parts.hostname is None:
            raise ValueError("no host")


class _DiscordSettings(Settings):
    """The settings of the commands that log in to Discord, where DISCORD_TOKEN is required."""

    # The same field without a default: a missing token is reported with the other problems.
    discord_token: SecretStr | None = Field(
        description=Settings.model_fields["discord_token"].description
    )


def _missing(variables: list[tuple[str, str]]) -> str:
    """``A and B are not set: A must be ..., and B must be ...`` (or one variable alone)."""
    if len(variables) == 1:
        variable, accepts = variables[0]
        return f"{variable} is not set: it must be {accepts}"
    names = [variable for variable, _ in variables]
    needs = [f"{variable} must be {accepts}" for variable, accepts in variables]
    return (
        f"{', '.join(names[:-1])} and {names[-1]} are not set: "
        f"{', '.join(needs[:-1])}, and {needs[-1]}"
    )


def _problems(exc: ValidationError, settings_class: type[Settings]) -> list[str]:
    """One clause per variable pydantic refused, every missing variable in a single clause."""
    missing: list[tuple[str, str]] = []
    clauses: list[str] = []
    seen: set[str] = set()
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        info = settings_class.model_fields.get(field)
        if info is None:
            # Raised by a model validator: its message already names the variable.
            clauses.append(str(error["msg"]).removeprefix("Value error, ").rstrip("."))
            continue
        variable = field.upper()
        if variable in seen:  # a union type reports each of its branches
            continue
        seen.add(variable)
        accepts = what_it_accepts(info.description)
        reason = error.get("ctx", {}).get("error")
        if error["type"] == "missing":
            missing.append((variable, accepts))
        elif isinstance(reason, _Refused):
            clauses.append(f"{variable} {reason}")
        else:
            clauses.append(f"{variable} is not valid: it must be {accepts}")
    return ([_missing(missing)] if missing else []) + clauses


def _sentence(problems: list[str]) -> str:
    return "; ".join(problems) + "."


def data_dir_problem(directory: Path) -> str | None:
    """Why DATA_DIR cannot be used (it is created when missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK | os.X_OK)
    except OSError as exc:
        return f"DATA_DIR is not valid: it must be a writable directory ({exc.strerror})"
    if not writable:
        return "DATA_DIR is not valid: it must be a writable directory"
    return None


def load_settings(
    *, require_discord: bool = True, env_file: str | Path | None = ".env"
) -> Settings:
    """Read and validate the configuration, or raise :class:`ConfigError` with one sentence.

    The sentence names every missing variable and every refused one, so that an operator
    fixes them all in one go rather than one per start.
    """
    settings_class = _DiscordSettings if require_discord else Settings
    try:
        settings: Settings = settings_class(_env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(_sentence(_problems(exc, settings_class))) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{env_file} is not valid: it must be UTF-8 text.") from None

    problems: list[str] = []
    if require_discord and (unwritable := data_dir_problem(settings.data_dir)) is not None:
        problems.append(unwritable)
    catalog = settings.catalog
    if settings.default_model not in catalog:
        problems.append(
            f"DEFAULT_MODEL is not valid: {settings.default_model!r} is not in the model catalog "
            f"({', '.join(catalog)})"
        )
    unknown = [name for name in settings.offered_models if name not in catalog]
    if unknown:
        problems.append(
            f"OFFERED_MODELS is not valid: {', '.join(unknown)} not in the model catalog "
            f"({', '.join(catalog)})"
        )
    elif len(settings.offered()) > MAX_DISCORD_CHOICES:
        problems.append(
            f"OFFERED_MODELS is not valid: with DEFAULT_MODEL, which is always offered, it makes "
            f"{len(settings.offered())} choices and Discord allows at most {MAX_DISCORD_CHOICES}"
        )
    if problems:
        raise ConfigError(_sentence(problems))
    return settings
