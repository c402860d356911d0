"""The Discord bot: one aiohttp session and one image client for the whole process.

The bot makes the feature's collaborators (image client, limits, queue, pseudonyms, model offer)
in ``setup_hook`` and hands them to the extensions it loads; ``close`` unloads the extensions
(the /imagine cog drains its requests then) before it closes the ledger, the image client and the
session. A close runs once, whoever asks first (a signal, or ``async with`` at the end), and every
caller waits for all of it: ``bot.start()`` returns as soon as Discord's connection is closed,
and ``asyncio.run`` cancels whatever is still running once ``_serve`` returns, so ``_serve``'s
``async with`` must not end before the ledger has written its last settlements.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import resource
import signal
from pathlib import Path
from types import TracebackType
from typing import TypedDict

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.discord_out.progress import EditBudget
from bot.i18n import _
from bot.i18n.commands import CatalogTranslator
from bot.i18n.text import load_catalogs
from bot.images import ImageClient, ProcessingSlots
from bot.observability import health
from bot.observability.logs import configure_logging
from bot.observability.metrics import BotCollector, LoopLagMonitor, Metrics
from bot.observability.server import MetricsServer
from bot.requests.admission import Admission
from bot.requests.buttons import ImageButton, ImageButtons
from bot.requests.describe import SuggestionButton, TextFeatures
from bot.requests.editing import vary_handler
from bot.requests.history import History, PageButton
from bot.requests.info import InfoCards
from bot.requests.moderation_log import ModerationLog
from bot.requests.offer import ModelOffer, discover, narrow, text_model_offered
from bot.requests.queue import GenerationQueue
from bot.requests.saved_requests import SavedRequests
from bot.requests.zoom import zoom_handler
from bot.services import Services, make_client
from bot.store.db import DatabaseTooNew, DatabaseUnavailable, migrate_database
from bot.store.ledger import Ledger
from bot.store.pseudonym import Pseudonymizer, load_or_create_secret
from bot.store.ratelimit import UserRateLimiter
from bot.store.server_settings import Rules, SettingsStore

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.edit",
    "cogs.describe",
    "cogs.usage",
    "cogs.settings",
    "cogs.history",
)
SYNC_STATE_FILE = "command_sync.json"
UNEXPECTED = _("Something went wrong with that command. Please try again.")
REFUSAL_TEXT_LIMIT = 300  # characters of Discord's explanation kept in the start-up log line


class ImagineTree(app_commands.CommandTree["ImagineBot"]):
    async def on_error(
        self, interaction: discord.Interaction[ImagineBot], error: app_commands.AppCommandError
    ) -> None:
        """The last resort: the user gets a sentence, the log gets the traceback."""
        log.error("app command failed", exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(
                    UNEXPECTED.localized(interaction.locale), ephemeral=True
                )
            else:
                await interaction.response.send_message(
                    UNEXPECTED.localized(interaction.locale), ephemeral=True
                )
        except discord.HTTPException:
            log.warning("could not tell the user about the failure")


class ShardOptions(TypedDict, total=False):
    shard_count: int | None
    shard_ids: list[int]  # absent: every shard runs in this process


def shard_options(settings: Settings) -> ShardOptions:
    """AutoShardedBot's arguments: SHARD_COUNT and SHARD_IDS, or Discord's recommended count
    (shard_count None) with every shard in this process."""
    options: ShardOptions = {"shard_count": settings.shard_count}
    if settings.shard_ids:
        options["shard_ids"] = list(settings.shard_ids)
    return options


def allowed_installs(settings: Settings) -> app_commands.AppInstallationType:
    """Where the commands may be installed: a server, and a member's account unless
    ALLOW_USER_INSTALL is off."""
    return app_commands.AppInstallationType(guild=True, user=settings.allow_user_install)


def allowed_contexts(settings: Settings) -> app_commands.AppCommandContext:
    """Where the commands may be used: servers, and (ALLOW_USER_INSTALL) the bot's DM and group
    DMs."""
    anywhere = settings.allow_user_install
    return app_commands.AppCommandContext(guild=True, dm_channel=anywhere, private_channel=anywhere)


class ImagineBot(commands.AutoShardedBot):
    def __init__(
        self,
        settings: Settings,
        *,
        sync_on_start: bool = True,
        queue: GenerationQueue | None = None,
        processing: ProcessingSlots | None = None,
        serve_metrics: bool = True,
        edits: EditBudget | None = None,
    ) -> None:
        """``queue``, ``processing`` and ``edits``: made outside (a test harness's, which
        declares its waits); by default the bot makes them from the configuration.
        ``serve_metrics``: False where the bot only syncs its commands (the running bot may hold
        METRICS_PORT)."""
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=ImagineTree,
            allowed_mentions=discord.AllowedMentions.none(),
            # Every command and context menu inherits these (their definitions say so, and the
            # sync digest compares them).
            allowed_installs=allowed_installs(settings),
            allowed_contexts=allowed_contexts(settings),
            **shard_options(settings),
        )
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._images: ImageClient | None = None
        # Every configured model until the endpoint has been asked (in setup_hook).
        self.offer: ModelOffer = narrow(settings, None)
        secret = settings.user_id_secret
        self.pseudonyms = Pseudonymizer(
            secret.get_secret_value().encode()
            if secret is not None
            else load_or_create_secret(settings.data_dir)
        )
        self._queue = queue or GenerationQueue(settings.max_concurrent_generations)
        self._processing = processing or ProcessingSlots(settings.processing_slot_count)
        self._edits = edits or EditBudget()
        self._services: Services | None = None
        self._admission: Admission | None = None
        self._image_buttons: ImageButtons | None = None
        self._history: History | None = None
        self._text_features: TextFeatures | None = None
        self._ledger: Ledger | None = None
        self._frozen = False
        self._sync_on_start = sync_on_start
        self._shutdown_task: asyncio.Task[None] | None = None
        self._closed_everything: asyncio.Future[None] | None = None
        # One registry per bot: tests run several bots in one process.
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self._serve_metrics_on = settings.metrics_port if serve_metrics else None
        self._loop_lag = LoopLagMonitor(self.metrics)

    @property
    def images(self) -> ImageClient:
        if self._images is None:
            raise RuntimeError("the image client exists once setup_hook has run")
        return self._images

    @property
    def services(self) -> Services:
        """The extensions' collaborators; they exist once setup_hook has made them."""
        if self._services is None:
            raise RuntimeError("the services exist once setup_hook has run")
        return self._services

    @property
    def image_buttons(self) -> ImageButtons | None:
        """What the buttons under posted images do; None before start and once shutting down
        (a press is then told the bot is restarting)."""
        if self._admission is None or self._admission.draining:
            return None
        return self._image_buttons

    @property
    def history(self) -> History | None:
        """/history, /show and the Info cards; None before start and once shutting down."""
        if self._admission is None or self._admission.draining:
            return None
        return self._history

    @property
    def text_features(self) -> TextFeatures | None:
        """Describe and enhance (bot/requests/describe.py); None before start and once shutting
        down, like :attr:`image_buttons`."""
        if self._admission is None or self._admission.draining:
            return None
        return self._text_features

    @property
    def admission(self) -> Admission:
        """Where every command's requests are admitted; it exists once setup_hook has run."""
        if self._admission is None:
            raise RuntimeError("the admission exists once setup_hook has run")
        return self._admission

    async def setup_hook(self) -> None:
        # First: a database that cannot take the ledger stops start-up before anything else.
        revision = await migrate_database(self.settings.database)
        log.info("usage ledger database at revision %s", revision)
        self._ledger = Ledger(
            self.settings.database,
            member_budget=self.settings.member_budget,
            server_budget=self.settings.server_budget,
            user_budget=self.settings.user_budget,
            total_budget=self.settings.total_budget,
            metrics=self.metrics,
        )
        await self._ledger.open()
        # aiohttp allows 100 connections by default; every generation in flight holds one.
        connections = max(100, 2 * self.settings.max_concurrent_generations)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
        # The queue hears every answer of the image service: its limit adapts to them.
        self._images = make_client(self._session, self.settings, feedback=self._queue)
        # Before the command is built: its model choices are what the endpoint serves.
        # Both asked at once: a slow endpoint delays start-up by one probe's time, not two.
        self.offer, moderations = await asyncio.gather(
            discover(self._images, self.settings), self._images.has_moderations()
        )
        if moderations is False and self.settings.moderation_check != "off":
            raise ModerationUnusable(
                f"MODERATION_CHECK is {self.settings.moderation_check}, but the endpoint has no "
                "moderation check (POST /moderations answered 404 or 405): set it to off, or "
                "use an endpoint that has one (OPENAI_BASE_URL)"
            )
        if moderations is False:
            log.info("the endpoint has no /moderations: servers cannot turn the check on")
        settings, ledger = self.settings, self._ledger
        self._services = Services(
            settings=settings,
            images=self._images,
            offer=self.offer,
            # Under the application's id: another bot sharing the store counts its members apart.
            limiter=UserRateLimiter(
                settings.user_rate_limit,
                settings.rate_limit_storage_uri,
                namespace=None if self.application_id is None else str(self.application_id),
            ),
            queue=self._queue,
            processing=self._processing,
            pseudonyms=self.pseudonyms,
            ledger=self._ledger,
            metrics=self.metrics,
            server_settings=SettingsStore(lambda: ledger.engine),
            server_rules=Rules(
                offered=self.offer.models,
                default_model=self.offer.default,
                catalog=settings.catalog,
                max_images=settings.max_images_per_request,
                default_member_budget=settings.member_budget,
                default_server_budget=settings.server_budget,
                servers_may_raise_budgets=settings.servers_may_raise_budgets,
                servers_may_exempt_roles=settings.servers_may_exempt_roles,
                blocked_words=settings.blocked_words,
                moderation_check=settings.moderation_check,
                moderations=moderations,
            ),
            edits=self._edits,
        )
        self.metrics.watch(BotCollector(self._queue, self._processing, self._images, self))
        if self._serve_metrics_on is not None:
            await self._serve_metrics(settings.metrics_host, self._serve_metrics_on)
        # One admission for every command that generates: one set of jobs to drain, and one set
        # of buttons under every command's images.
        services = self._services
        self._admission = admission = Admission(
            settings=settings,
            images=services.images,
            limiter=services.limiter,
            queue=services.queue,
            processing=services.processing,
            ledger=services.ledger,
            metrics=services.metrics,
            edits=services.edits,
            rules=services.server_rules,
            server_settings=services.server_settings,
            moderation_log=ModerationLog(
                services.server_settings,
                services.metrics,
                name_server=self.pseudonyms.for_server,
            ),
        )
        saved = SavedRequests(ledger)
        text_model, not_offered = text_model_offered(settings, self.offer.endpoint)
        if not_offered is not None:
            log.warning("%s", not_offered)
        self._text_features = text = TextFeatures(
            admission,
            text_model,
            saved,
            pseudonyms=self.pseudonyms,
            default_model=self.offer.default,
        )
        self._image_buttons = ImageButtons(
            admission.admit,
            saved,
            catalog=settings.catalog,
            offered=self.offer.models,
            pseudonyms=self.pseudonyms,
            vary=vary_handler(
                admission,
                offered=self.offer.models,
                offer_default=self.offer.default,
                pseudonyms=self.pseudonyms,
            ),
            enhance=text.enhance if text_model is not None else None,
            zoom=zoom_handler(
                admission,
                offered=self.offer.models,
                offer_default=self.offer.default,
                pseudonyms=self.pseudonyms,
            ),
        )
        admission.use_buttons(self._image_buttons.for_generation)
        cards = InfoCards(self._image_buttons, barred=admission.barred)
        cards.install()  # Info and Send to DM under every set
        self._history = History(cards, services.server_settings, services.server_rules)
        # At start, not when images are posted: the buttons of messages posted before a restart
        # must be answered too (their state is in the custom_id and the database).
        self.add_dynamic_items(ImageButton, PageButton, SuggestionButton)
        self.add_listener(self._image_buttons.on_interaction, "on_interaction")  # Edit prompt
        # Before the commands are built: their names and descriptions come from the catalogs.
        await asyncio.to_thread(load_catalogs)  # 0.15 s of parsing: not on the event loop
        await self.tree.set_translator(CatalogTranslator())
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self._sync_on_start:
            await self.sync_commands()

    async def _serve_metrics(self, host: str, port: int) -> None:
        server = MetricsServer(self.metrics.registry, self.health, host=host, port=port)
        try:
            await server.start()
        except OSError as exc:
            # asyncio's own text repeats the address as a Python tuple: the errno's words only.
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise MetricsUnavailable(
                f"the metrics server cannot listen on {host}:{port} (METRICS_HOST, METRICS_PORT): "
                f"{reason}"
            ) from None
        self.metrics_server = server
        self._loop_lag.start()

    async def health(self) -> health.Health:
        """Whether the gateway is connected, the ledger takes writes and the limit store answers."""
        services = self._services
        if services is None:
            return health.Health({"setup": health.Part(False, "the bot is starting")})
        return await health.check(
            ready=self.is_ready(),
            closed=self.is_closed(),
            ledger=services.ledger,
            probe=services.limiter.probe,
        )

    async def on_ready(self) -> None:
        if not self._frozen:
            # Everything alive once connected (modules, discord.py's caches) lives as long as
            # the process: keep it out of the collector's full passes, which otherwise stall
            # the event loop for tens of milliseconds (49 ms measured under load).
            gc.freeze()
            self._frozen = True
        log.info("ready as %s", self.user)

    # -- command registration ------------------------------------------------------------------

    async def _definitions_digest(self) -> str:
        """A digest of what a sync would send: the definitions with their localizations, so
        that a changed translation syncs again and an unchanged one does not."""
        translator = self.tree.translator
        payloads = [
            command.to_dict(self.tree)
            if translator is None
            else await command.get_translated_payload(self.tree, translator)
            for command in self.tree.get_commands()
        ]
        definitions = sorted(payloads, key=lambda entry: str(entry["name"]))
        encoded = json.dumps(definitions, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()

    def _sync_state_path(self) -> Path:
        return self.settings.data_dir / SYNC_STATE_FILE

    async def sync_commands(self, *, force: bool = False) -> None:
        """Sync the global commands only when their definitions changed since the last sync.

        Discord rate-limits syncing; a restart with unchanged commands costs no request.
        A development guild, when configured, is synced at every start.
        """
        guild_id = self.settings.dev_guild_id
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
            log.info("synced commands to the development guild (DEV_GUILD_ID)")
        digest = await self._definitions_digest()
        path = self._sync_state_path()
        try:
            previous = json.loads(path.read_text("utf-8")).get("digest")
        except (OSError, ValueError, AttributeError):
            previous = None
        if not force and previous == digest:
            log.info("global commands unchanged since the last sync; not syncing")
            return
        synced = await self.tree.sync()
        log.info("synced %d global command(s)", len(synced))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"digest": digest}), "utf-8")

    # -- shutdown --------------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """From a signal handler: shut down in a task that is kept and whose failure is logged."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self.shutdown(), name="shutdown")
            self._shutdown_task.add_done_callback(_log_failure)

    async def shutdown(self) -> None:
        """Close: the extensions stop taking requests and drain theirs as they are unloaded."""
        log.info("shutting down")
        await self.close()

    async def close(self) -> None:
        """Close everything, once; every caller returns when all of it is closed."""
        if self._closed_everything is None:
            self._closed_everything = asyncio.ensure_future(self._close_everything())
        # Shielded: a caller cancelled while it waits does not cut the ledger's last writes off.
        await asyncio.shield(self._closed_everything)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # discord.py's waits only for its own part of close (the connection to Discord), which
        # a signal's shutdown may have started: the ledger, client and session close after it.
        await self.close()

    async def _close_everything(self) -> None:
        if self._ready is discord.utils.MISSING:
            # Never started (a start-up that failed before logging in, or a test):
            # AutoShardedClient makes the queue its close writes to only when it starts.
            await self._async_setup_hook()
        # discord.py's close unloads the extensions first, while Discord can still be told
        # about the requests they cancel; the engine and its session go only after that.
        await super().close()
        if self._admission is not None:  # after the extensions' jobs: their entries are queued
            await self._admission.moderation_log.close()
        self._loop_lag.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self._ledger is not None:  # after the extensions have settled their requests
            await self._ledger.close()
        if self._images is not None:
            await self._images.close()
        if self._session is not None:
            await self._session.close()


class MetricsUnavailable(Exception):
    """The metrics server cannot listen where it is told: one sentence naming the variables."""


class ModerationUnusable(Exception):
    """MODERATION_CHECK is on where the endpoint has no moderation check: one sentence."""


class _StoreSilent(Exception):
    """The rate-limit store did not answer at start-up; the message says which store."""


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shutting down failed", exc_info=task.exception())


async def _serve(settings: Settings, *, sync_only: bool) -> None:
    assert settings.discord_token is not None
    token = settings.discord_token.get_secret_value()
    if not sync_only:
        # Before logging in: a bot whose store does not answer would refuse every /imagine.
        limiter = UserRateLimiter(settings.user_rate_limit, settings.rate_limit_storage_uri)
        if (silent_store := await limiter.probe()) is not None:
            raise _StoreSilent(silent_store)
        # Before logging in too: a database the bot cannot use stops it without a login (a
        # supervisor restarting it would otherwise spend Discord's daily logins), and
        # setup_hook then finds the schema up to date.
        await migrate_database(settings.database)
    async with ImagineBot(
        settings, sync_on_start=not sync_only, serve_metrics=not sync_only
    ) as bot:
        if sync_only:
            await bot.login(token)  # runs setup_hook, which then leaves syncing to us
            await bot.sync_commands(force=True)
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, bot.request_shutdown)
        await bot.start(token)


def _refusal(exc: discord.HTTPException, settings: Settings) -> str:
    """One line for a 4xx from Discord: what was refused, the status and code, Discord's words."""
    url = str(getattr(exc.response, "url", ""))
    refused = "the slash-command definitions" if "/commands" in url else "a start-up request"
    text = " ".join(exc.text.split())  # Discord lists the invalid fields one per line
    if settings.discord_token is not None:  # never echoed by Discord, but a log must not risk it
        text = text.replace(settings.discord_token.get_secret_value(), "[redacted]")
    if len(text) > REFUSAL_TEXT_LIMIT:
        text = text[: REFUSAL_TEXT_LIMIT - 1] + "…"
    return f"Discord refused {refused} (HTTP {exc.status}, code {exc.code}): {text}"


# Open files the bot asks for: every image call in flight holds a connection (the pool allows
# twice MAX_CONCURRENT_GENERATIONS), besides Discord, the stores and the metrics port.
OPEN_FILES_WANTED = 65536


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files towards its hard limit (at most
    OPEN_FILES_WANTED), as any process may: a host's or a container's default soft limit is
    often 1,024. Return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):  # a sandbox that refuses: the limit stays as it was
            return soft
        return wanted
    return soft


def run_bot(settings: Settings, *, sync_only: bool = False) -> int:
    configure_logging(settings)
    log.debug("open files allowed: %d", raise_open_files_limit())
    try:
        asyncio.run(_serve(settings, sync_only=sync_only))
    except DatabaseTooNew as exc:  # starting again would only say it again
        log.error("%s", exc)
        return 2
    except DatabaseUnavailable as exc:
        log.error("%s", exc)
        return 1
    except (MetricsUnavailable, ModerationUnusable) as exc:
        log.error("%s", exc)
        return 1
    except _StoreSilent as exc:
        log.error("%s: check that it runs and that this host can reach it", exc)
        return 1
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN: check the bot token in the developer portal")
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error("the bot asked for an intent the developer portal does not grant")
        return 2
    except (aiohttp.ClientConnectionError, ConnectionError, discord.GatewayNotFound) as exc:
        log.error("cannot reach Discord (%s): check the network and try again", type(exc).__name__)
        return 1
    except OSError as exc:
        log.error("cannot use %s: %s", exc.filename or "a file", exc.strerror or exc)
        return 1
    except discord.HTTPException as exc:
        if exc.status == 429 or exc.status >= 500:
            log.error("Discord answered HTTP %s at start-up; try again later", exc.status)
            return 1
        # Any other 4xx will be refused again on the next start: say what Discord said.
        log.error("%s", _refusal(exc, settings))
        return 2
    except KeyboardInterrupt:
        pass
    return 0
