"""The buttons under every posted set of images: Reroll, Edit prompt, Larger, Delete (and Vary,
once it has a handler; Info and Send to DM, whose presses bot.requests.info handles; Zoom out
and pan, :mod:`bot.requests.zoom`). A private set (ephemeral) has no Delete: Discord's Dismiss
removes it, and only its member sees it.

They keep working after a restart and after any number of messages: each is a discord.py
``DynamicItem`` whose ``custom_id`` names an action and the key of the request in the bot's
database (:mod:`bot.requests.saved_requests`), registered once at start by the bot. The
Edit prompt modal is answered the same way: its submission is read from the interaction by
``custom_id``, not by a modal object that a restart would forget.

The buttons belong to the road every request takes, not to a command: the bot builds one
:class:`ImageButtons` at start and hands it to the admission, which puts them under the images of
every command (/imagine, /edit, Vary, and every press). Every press that makes images is a new
request from the presser: it goes through the admission (validation, the presser's limits and
budgets, the acknowledgement) with the presser's pseudonym, and every refusal or failure is
private.

Outside a server that installed the bot (bot/requests/where.py) the buttons work the same, but
the bot is not in that channel: what it posted after the first message (follow-ups) it reaches
only through the webhook of the interaction that posted them, while that interaction's token
lives (15 minutes). Decision: those webhooks (their tokens) are kept in this process's memory
only, never in the database (a token lets its holder post as the bot); past them, Delete
removes the pressed message and says which stay, and Vary on an image in a follow-up says to
use Vary image on that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol, cast

import discord

from bot.discord_out.delivery import Upload
from bot.discord_out.posting import ButtonsFor
from bot.discord_out.replies import DISCORD_FAILURES, RESTARTING, Replies, step_timeout
from bot.i18n import _, localize, ngettext
from bot.images import Catalog, ImageRequest
from bot.images.canvas import Extension
from bot.images.larger import larger_size
from bot.requests import zoom as zooming
from bot.requests.generation import TOKEN_LIFETIME, TOKEN_MARGIN, Generation
from bot.requests.saved_requests import SavedRequest, SavedRequests
from bot.requests.where import where
from bot.store.pseudonym import Pseudonymizer

log = logging.getLogger(__name__)

# imagine:<action>:<key>[:<argument>]: Delete carries the asker's id (so who may delete needs no
# database: it gives only the follow-up messages to delete with the pressed one),
# Vary the index of the image it varies (0-based); zoom and pan none. At most 6 + 6 + 20 + 20
# characters, far inside Discord's 100.
BUTTON_ID = re.compile(
    r"imagine:(?P<action>reroll|edit|larger|delete|vary|info|dm|enhance"
    r"|zoom15|zoom2|zoomc|panl|panr|panu|pand):(?P<key>[0-9]{1,19})"
    r"(?::(?P<argument>[0-9]{1,20}))?"
)
MODAL_ID = re.compile(r"imagine:prompt:(?P<key>[0-9]{1,19})")
# What any press or form under a set is recognised by, for the lineage of what it makes (the
# buttons and forms other modules add, zoom and pan among them, follow the same pattern).
LINEAGE_ID = re.compile(r"imagine:(?P<action>[a-z_]{1,20}):(?P<key>[0-9]{1,19})(?::.*)?")
PROMPT_INPUT = "prompt"
TEXT_INPUT_MAX = 4000  # Discord's longest text input value (a prompt may be 32000)
BUTTONS_PER_ROW = 5
LOAD_TIMEOUT = 1.0  # seconds to read a request back: a press wants an answer within 3
MODAL_TIMEOUT = 900.0  # seconds a modal object is kept (its submission is read by custom_id)
# Seconds posting waits for a follow-up's id to be written (it is remembered in memory at once):
# past it the images go on being posted and the write finishes on its own.
RECORD_TIMEOUT = 2.0

GONE = _("The bot no longer has the request behind these buttons. Please use /imagine.")
UNREADABLE = _("The bot cannot read this request right now. Please try again soon.")
NOT_YOURS = _(
    "Only the member who asked for these images, or someone allowed to manage messages here, "
    "can delete them."
)
NOT_DELETED = _("Discord did not let the bot delete these images. Please try again.")
NO_VARY = _("Varying an image is not available yet.")
NO_ZOOM = _("Zooming out is not available here: no model offered here can do it.")
NO_ENHANCE = _("Enhancing prompts is no longer available here.")
NO_SUCH_IMAGE = _("That image is no longer in this message.")
UNEXPECTED = _("Something went wrong with that button. Please try again.")
NOT_OFFERED = _("The model {model} is no longer offered here. Please use /imagine.")
NOTHING_LARGER = _("{model} makes nothing larger than {size}.")
LARGER_TO = _("Larger ({size})")
VARY_ONE = _("Vary {n}")
MODAL_TITLE = _("Edit the prompt")
PROMPT_LABEL = _("Prompt")
PROMPT_CUT = _("Only the first {n} characters of the prompt fit here.")
PROMPT_OF = _("{model}, {size}, quality {quality}")
FOLLOW_UPS_STAY = ngettext(
    "The message with the buttons is deleted, but not the message after it with the rest of "
    "these images: outside a server that installed the bot, Discord lets the bot delete it "
    "only within 15 minutes of the request, and that time has passed (or the bot restarted).",
    "The message with the buttons is deleted, but not the {n} messages after it with the rest "
    "of these images: outside a server that installed the bot, Discord lets the bot delete those "
    "only within 15 minutes of the request, and that time has passed (or the bot restarted).",
)
FOLLOW_UP_OUT_OF_REACH = _(
    "That image is in a later message the bot can no longer read here: outside a server that "
    "installed the bot, Discord allows it only within 15 minutes of the request. Use Vary image "
    "on that message instead."
)
# Where the bot is not in the server (personal scope), its follow-ups can be reached only through
# the webhook of the interaction that posted them, while its token lives: kept in memory (never
# written anywhere: a token lets its holder post as the bot), this many at most.
WEBHOOKS_REMEMBERED = 10_000


class Action(StrEnum):
    REROLL = "reroll"
    EDIT = "edit"
    LARGER = "larger"
    DELETE = "delete"
    VARY = "vary"
    INFO = "info"  # bot.requests.info
    DM = "dm"  # Send to DM: bot.requests.info
    ENHANCE = "enhance"  # bot/requests/describe.py: the prompt made richer, then the images
    ZOOM_OUT_15 = zooming.ZOOM_OUT_15
    ZOOM_OUT_2 = zooming.ZOOM_OUT_2
    CUSTOM_ZOOM = zooming.CUSTOM_ZOOM
    PAN_LEFT = zooming.PAN_LEFT
    PAN_RIGHT = zooming.PAN_RIGHT
    PAN_UP = zooming.PAN_UP
    PAN_DOWN = zooming.PAN_DOWN


# What a button looks like; Larger's label also names the size it asks for.
# The labels are in the language of the member who asked for the images (the buttons are
# made once, when the images are posted; a restart reads them back from the message).
LOOKS: Mapping[Action, tuple[str, str, discord.ButtonStyle]] = {
    Action.REROLL: ("🔁", _("Reroll"), discord.ButtonStyle.primary),
    Action.EDIT: ("✏️", _("Edit prompt"), discord.ButtonStyle.secondary),
    Action.LARGER: ("🔍", _("Larger"), discord.ButtonStyle.secondary),
    Action.DELETE: ("🗑️", _("Delete"), discord.ButtonStyle.danger),
    Action.VARY: ("🎨", _("Vary"), discord.ButtonStyle.secondary),
    Action.INFO: ("\N{INFORMATION SOURCE}\ufe0f", _("Info"), discord.ButtonStyle.secondary),
    Action.DM: ("📩", _("Send to DM"), discord.ButtonStyle.secondary),
    Action.ENHANCE: ("✨", _("Enhance"), discord.ButtonStyle.secondary),
    **{Action(action): look for action, look in zooming.LOOKS.items()},
}
INFO_ACTIONS = (Action.INFO, Action.DM)  # beside the zoom buttons, or on a row of their own


def _with_extras(
    zoom: list[tuple[int, ImageButton]], extras: list[ImageButton]
) -> list[tuple[int, ImageButton]]:
    """The zoom buttons (row offset, button) with ``extras`` after the first zoom row's (Zoom
    out 1.5x, 2x, Custom: room for two more), or on a row of their own without zoom."""
    if not zoom:
        return [(0, button) for button in extras]
    first = [item for item in zoom if item[0] == 0]
    rest = [item for item in zoom if item[0] != 0]
    room = BUTTONS_PER_ROW - len(first)
    shared = [(0, button) for button in extras[:room]]
    own = [(max(offset for offset, _ in zoom) + 1, button) for button in extras[room:]]
    return first + shared + rest + own


# The hook for Vary: called with the press, the request the images came from, and the posted
# image to vary (read back from the message: the bot stores no image files). It is a new request
# from the presser and owns its answer, as Admit does.
VaryHandler = Callable[[discord.Interaction, SavedRequest, discord.Attachment], Awaitable[None]]
# What a press of a button defined elsewhere does (Info, Send to DM: bot.requests.info), given
# the press and the request behind it (of this server); it owns its answer.
PressHandler = Callable[[discord.Interaction, SavedRequest], Awaitable[None]]


class Admit(Protocol):
    """Admits a new request from a press (the admission's ``admit``), which owns its answer;
    ``private``: answered to the presser only (a press under a private set)."""

    def __call__(
        self, interaction: discord.Interaction, request: ImageRequest, *, private: bool = False
    ) -> Awaitable[None]: ...


# Enhance: the request with its prompt enhanced first (TextFeatures.enhance); owns its answer.
EnhanceHandler = Admit


def button_id(action: Action, key: int, argument: int | None = None) -> str:
    custom_id = f"imagine:{action.value}:{key}"
    return custom_id if argument is None else f"{custom_id}:{argument}"


class ImageButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=BUTTON_ID):
    """One button under a set of images; what it does is in :class:`ImageButtons`."""

    def __init__(
        self,
        action: Action,
        key: int,
        argument: int | None = None,
        *,
        label: str | None = None,
        locale: object = None,
    ) -> None:
        emoji, default_label, style = LOOKS[action]
        super().__init__(
            discord.ui.Button(
                style=style,
                emoji=emoji,
                label=localize(label or default_label, locale),
                custom_id=button_id(action, key, argument),
            )
        )
        self.action = action
        self.key = key
        self.argument = argument

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ImageButton:
        argument = match["argument"]
        return cls(
            Action(match["action"]),
            int(match["key"]),
            int(argument) if argument is not None else None,
            label=getattr(item, "label", None),
        )

    async def callback(self, interaction: discord.Interaction) -> None:
        buttons = buttons_of(interaction.client)
        try:
            if self.action is Action.DELETE:  # works while draining, and without the database
                saved = buttons.saved if buttons is not None else None
                webhook = buttons.webhook_of(self.key) if buttons is not None else None
                await delete_images(
                    interaction, asker=self.argument, key=self.key, saved=saved, webhook=webhook
                )
            elif buttons is None:  # the bot is shutting down
                await Replies(interaction).answer(RESTARTING)
            else:
                await buttons.pressed(interaction, self)
        except Exception:
            log.exception("a %s button failed", self.action.value)
            await _tell_unexpected(interaction)


def buttons_of(client: discord.Client) -> ImageButtons | None:
    """The bot's :class:`ImageButtons` (its ``image_buttons``), where pressed buttons find
    them; None once the bot has started shutting down (its requests are draining)."""
    return cast("ImageButtons | None", getattr(client, "image_buttons", None))


class PromptModal(discord.ui.Modal):
    """Edit prompt: the prompt, prefilled, to change and send again.

    Its submission is handled by :meth:`ImageButtons.on_interaction`, found by ``custom_id``,
    so that a modal still open when the bot restarts is answered too; this object only draws it.
    """

    def __init__(self, saved: SavedRequest, locale: discord.Locale) -> None:
        super().__init__(
            title=MODAL_TITLE.localized(locale),
            custom_id=f"imagine:prompt:{saved.key}",
            timeout=MODAL_TIMEOUT,
        )
        longer = len(saved.prompt) > TEXT_INPUT_MAX
        self.prompt = zooming.prompt_input(saved.prompt)
        self.add_item(
            discord.ui.Label(
                text=PROMPT_LABEL.localized(locale),
                description=(
                    PROMPT_CUT.format(n=TEXT_INPUT_MAX)
                    if longer
                    else PROMPT_OF.format(model=saved.model, size=saved.size, quality=saved.quality)
                ).localized(locale),
                component=self.prompt,
            )
        )


def _submitted_values(components: Any) -> Iterator[tuple[str, str]]:
    """(custom_id, value) of every text input in a modal submission, however it is nested
    (in action rows, or in labels)."""
    if not isinstance(components, list):
        return
    for component in components:
        if not isinstance(component, dict):
            continue
        if isinstance(component.get("value"), str) and isinstance(component.get("custom_id"), str):
            yield component["custom_id"], component["value"]
        yield from _submitted_values(component.get("components"))
        yield from _submitted_values([component.get("component")])


class ImageButtons:
    """What the buttons do; every new request a press makes goes to ``admit``.

    ``offered``: the models members may use (a saved request of another is not made again);
    ``vary``: what a Vary button does, None where no offered model edits (no Vary buttons then).
    """

    def __init__(
        self,
        admit: Admit,
        saved: SavedRequests,
        *,
        catalog: Catalog,
        offered: tuple[str, ...],
        pseudonyms: Pseudonymizer,
        vary: VaryHandler | None = None,
        enhance: EnhanceHandler | None = None,
        zoom: zooming.ZoomHandler | None = None,
    ) -> None:
        self.admit = admit
        self.enhance = enhance  # None: no text model offered, no Enhance buttons
        self.saved = saved
        self.catalog = catalog
        self.offered = offered
        self.pseudonyms = pseudonyms
        self.vary = vary
        # The presses handled by other modules (Info, Send to DM), set by the bot at start.
        self.handlers: dict[Action, PressHandler] = {}
        self._writes: set[asyncio.Task[None]] = set()  # messages being recorded
        # The follow-up webhooks of sets posted in personal scope, by key, until they expire.
        self._webhooks: OrderedDict[int, tuple[discord.Webhook, dt.datetime]] = OrderedDict()
        self.zoom = zoom  # None where no offered model edits with a mask (no zoom buttons)

    def webhook_of(self, key: int) -> discord.Webhook | None:
        """The webhook the set saved under ``key`` was posted through, while its token lives;
        None where it has expired, was never kept (a server's set) or was forgotten (a
        restart)."""
        kept = self._webhooks.get(key)
        if kept is None:
            return None
        webhook, expires = kept
        if discord.utils.utcnow() >= expires:
            del self._webhooks[key]
            return None
        return webhook

    def _keep_webhook(self, key: int, interaction: discord.Interaction) -> None:
        now = discord.utils.utcnow()
        while self._webhooks and (
            len(self._webhooks) >= WEBHOOKS_REMEMBERED
            or next(iter(self._webhooks.values()))[1] <= now
        ):
            self._webhooks.popitem(last=False)
        expires = interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        self._webhooks[key] = (interaction.followup, expires)

    # -- under the images ------------------------------------------------------------------------

    async def for_generation(self, generation: Generation) -> ButtonsFor | None:
        """Save the request and return what makes its buttons for the uploads posted
        (bot.requests.generation.Buttons); None, with a log line, when it cannot be saved: the
        images are
        posted without buttons then."""
        interaction = generation.interaction
        parent, origin = lineage(interaction)
        try:
            key = await self.saved.save(
                generation.prepared,
                member_id=generation.member_id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                ledger_id=generation.ledger_row,
                parent_key=parent,
                origin=origin,
                private=generation.replies.private,
            )
        except Exception as exc:
            log.error(
                "could not save a request for its buttons (%s: %s)",
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )
            return None
        if generation.where.personal:  # the bot reaches its follow-ups only through this
            self._keep_webhook(key, interaction)
        generation.replies.on_follow_up = functools.partial(
            self._record_follow_ups, key, interaction
        )
        generation.replies.on_posted = functools.partial(self._record_message, key)
        return functools.partial(self.view, key, generation)

    async def _record_follow_ups(
        self, key: int, interaction: discord.Interaction, message_ids: tuple[int, ...]
    ) -> None:
        """Keep the follow-up messages a set was posted in, for its Delete; a failure costs
        only that (one log line): the images are posted all the same. Where the set was
        deleted while its follow-ups were still being posted, they are deleted too."""
        if self.saved.was_deleted(key):
            try:
                if where(interaction).personal:
                    await _delete_through(interaction.followup, message_ids)
                else:
                    await _delete_messages(interaction, message_ids)
            except DISCORD_FAILURES as exc:
                log.warning("could not delete the follow-ups of a deleted set: %r", exc)
            return
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await self.saved.record_follow_ups(key, message_ids)
        except Exception as exc:
            log.error(
                "could not record the follow-up messages of saved request %s (%s)",
                key,
                type(exc).__name__,
            )

    async def _record_message(self, key: int, message_id: int) -> None:
        """Keep the message a set was posted in, for its jump link (Info, /history, /show), in
        the background: the rest of the set, its settlement and its processing slot do not wait
        for the database (the request in memory has it at once)."""
        self.saved.note_message(key, message_id)
        task = asyncio.create_task(self._write_message(key, message_id))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_message(self, key: int, message_id: int) -> None:
        """A failure costs only the link, with one log line."""
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await self.saved.record_message(key, message_id)
        except Exception as exc:
            log.error(
                "could not record the message of saved request %s (%s)", key, type(exc).__name__
            )

    def view(self, key: int, generation: Generation, uploads: Sequence[Upload]) -> discord.ui.View:
        """The buttons under the first message of a set posted as ``uploads``: the request's
        (Reroll, Edit prompt, Larger, Enhance, Delete), then one Vary for each image that came
        back and that an offered model can edit (an animated GIF cannot be), numbered as the
        set's, then the zoom buttons for image 1 (:mod:`bot.requests.zoom`) with Info and Send
        to DM beside them, and the pan buttons: at most Discord's 5 rows (1 + 2 Vary + 2)."""
        prepared = generation.prepared
        locale = generation.interaction.locale
        view = discord.ui.View(timeout=None)
        row: list[ImageButton] = []
        if not prepared.is_edit:  # an edit's inputs are not kept: it is varied, not asked again
            row += [
                ImageButton(Action.REROLL, key, locale=locale),
                ImageButton(Action.EDIT, key, locale=locale),
            ]
            larger = larger_size(prepared.spec, prepared.size)
            if larger is not None:
                bigger = LARGER_TO.format(size=larger)
                row.append(ImageButton(Action.LARGER, key, label=bigger, locale=locale))
            if self.enhance is not None:
                row.append(ImageButton(Action.ENHANCE, key, locale=locale))
        if not generation.replies.private:  # Discord's own "Dismiss message" removes a private set
            row.append(ImageButton(Action.DELETE, key, generation.member_id, locale=locale))
        for button in row:
            button.item.row = 0
            view.add_item(button)
        next_row = 1
        if self.vary is not None:
            alone = len({upload.image for upload in uploads}) == 1
            for place, (index, upload) in enumerate(self._variable(uploads)):
                label = LOOKS[Action.VARY][1] if alone else VARY_ONE.format(n=upload.image)
                button = ImageButton(Action.VARY, key, index, label=label, locale=locale)
                button.item.row = 1 + place // BUTTONS_PER_ROW
                next_row = button.item.row + 1
                view.add_item(button)
        # Info and Send to DM share the first zoom row (3 + 2 buttons), or have their own.
        extras = [
            ImageButton(action, key, locale=locale)
            for action in INFO_ACTIONS
            if action in self.handlers
        ]
        first = next((upload for upload in uploads if _is_image(upload.filename)), None)
        if self.zoom is not None and first and _format_of(first.filename) in zooming.EXTENDABLE:
            zoom_rows = zooming.rows()
        else:
            zoom_rows = iter(())
        placed = [
            (offset, ImageButton(Action(action), key, locale=locale))
            for offset, action in zoom_rows
        ]
        for offset, button in _with_extras(placed, extras):
            button.item.row = next_row + offset
            view.add_item(button)
        return view

    def _variable(self, uploads: Sequence[Upload]) -> list[tuple[int, Upload]]:
        """The uploads a Vary press can start from, each with its index among the set's images
        as :func:`source_image` counts them (an SVG's rendering stands for it)."""
        catalog = self.catalog
        formats = {
            kind
            for name in self.offered
            if name in catalog and catalog[name].edits
            for kind in catalog[name].input_formats
        }
        images = [upload for upload in uploads if _is_image(upload.filename)]
        return [
            (index, upload)
            for index, upload in enumerate(images)
            if _format_of(upload.filename) in formats
        ]

    # -- presses ---------------------------------------------------------------------------------

    async def pressed(self, interaction: discord.Interaction, button: ImageButton) -> None:
        """A press of any button but Delete (:func:`delete_images`), which needs no request."""
        replies = Replies(interaction)
        saved = await self._load(replies, button.key)
        if saved is None:
            return
        if button.action is Action.EDIT:
            await interaction.response.send_modal(PromptModal(saved, interaction.locale))
        elif button.action is Action.REROLL:
            await self._again(replies, saved)
        elif button.action is Action.LARGER:
            await self._larger(replies, saved)
        elif button.action is Action.VARY:
            await self._vary(replies, saved, button.argument or 0)
        elif button.action is Action.CUSTOM_ZOOM:
            message = interaction.message
            shown = _image_count(message) if message is not None else 1
            images = saved.count if saved.follow_up_ids else shown  # a number past them: refused
            await interaction.response.send_modal(
                zooming.ZoomModal(saved, images, interaction.locale)
            )
        elif button.action.value in zooming.EXTENSIONS:
            await self._zoom(replies, saved, zooming.EXTENSIONS[button.action.value], saved.prompt)
        elif button.action is Action.ENHANCE:
            await self._again(replies, saved, enhance=True)
        elif button.action in self.handlers:
            await self.handlers[button.action](interaction, saved)
        else:  # a button of a feature this bot no longer has
            await replies.answer(UNEXPECTED)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """An Edit prompt modal submitted: the request again, with the new prompt (a Custom zoom
        form: :meth:`_custom_zoom`)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Mapping[str, Any] = interaction.data or {}
        match = MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            await self._custom_zoom(interaction, data)
            return
        prompt = dict(_submitted_values(data.get("components"))).get(PROMPT_INPUT, "")
        replies = Replies(interaction)
        try:
            saved = await self._load(replies, int(match["key"]))
            if saved is not None:
                await self._again(replies, saved, prompt=prompt)
        except Exception:
            log.exception("an edited prompt failed")
            await _tell_unexpected(interaction)

    async def _load(self, replies: Replies, key: int) -> SavedRequest | None:
        """The request behind a button, or None after telling the presser why not."""
        try:
            async with asyncio.timeout(step_timeout(replies.interaction, LOAD_TIMEOUT)):
                saved = await self.saved.load(key)
        except Exception as exc:
            log.error("could not read saved request %s (%s)", key, type(exc).__name__)
            await replies.answer(UNREADABLE)
            return None
        if saved is None or not belongs_here(saved, replies.interaction):
            # Another server's request (a forged form's id) is no request of this one.
            await replies.answer(GONE)
            return None
        return saved

    async def saved_prompt(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> str | None:
        """The whole prompt of the set whose first message is ``message`` (its embed shows only
        the first 3,000 characters); None where it is not known or cannot be read in time."""
        key = saved_key(message)
        if key is None:
            return None
        try:
            async with asyncio.timeout(step_timeout(interaction, LOAD_TIMEOUT)):
                saved = await self.saved.load(key)
        except Exception as exc:
            log.warning("could not read saved request %s (%s)", key, type(exc).__name__)
            return None
        if saved is None or not belongs_here(saved, interaction):
            return None
        return saved.prompt

    async def _again(
        self,
        replies: Replies,
        saved: SavedRequest,
        *,
        prompt: str | None = None,
        size: str | None = None,
        enhance: bool = False,
    ) -> None:
        """The saved request, as the presser's own new request (with a new prompt or size, or
        its prompt ``enhance``d first)."""
        if saved.model not in self.offered:
            await replies.answer(NOT_OFFERED.format(model=saved.model))
            return
        user = self.pseudonyms.for_user(replies.interaction.user.id)
        request = saved.request(user=user, prompt=prompt, size=size)
        if enhance and self.enhance is None:
            await replies.answer(NO_ENHANCE)
            return
        await (self.enhance if enhance and self.enhance else self.admit)(
            replies.interaction, request, private=made_privately(replies.interaction, saved)
        )

    async def _larger(self, replies: Replies, saved: SavedRequest) -> None:
        spec = self.catalog.get(saved.model)
        larger = larger_size(spec, saved.size) if spec is not None else None
        if larger is None:
            await replies.answer(NOTHING_LARGER.format(model=saved.model, size=saved.size))
            return
        await self._again(replies, saved, size=larger)

    async def _vary(self, replies: Replies, saved: SavedRequest, index: int) -> None:
        if self.vary is None:
            await replies.answer(NO_VARY)
            return
        source = await self._source(replies, saved, index)
        if source is not None:
            await self.vary(replies.interaction, saved, source)

    async def _source(
        self, replies: Replies, saved: SavedRequest, index: int
    ) -> discord.Attachment | None:
        """The ``index``-th image of the pressed set (0-based), or None after saying so."""
        message = replies.interaction.message
        source = source_image(message, index) if message is not None else None
        if source is None and message is not None and saved.follow_up_ids:
            index -= _image_count(message)
            if where(replies.interaction).personal:
                webhook = self.webhook_of(saved.key)
                if webhook is None:
                    await replies.answer(FOLLOW_UP_OUT_OF_REACH)
                    return None
                source = await self._in_follow_ups(replies, saved, index, webhook)
            else:
                source = await self._in_follow_ups(replies, saved, index)
        if source is None:
            await replies.answer(NO_SUCH_IMAGE)
        return source

    async def _zoom(
        self,
        replies: Replies,
        saved: SavedRequest,
        extension: Extension,
        prompt: str,
        index: int = 0,
    ) -> None:
        if self.zoom is None:
            await replies.answer(NO_ZOOM)
            return
        source = await self._source(replies, saved, index)
        if source is not None:
            private = made_privately(replies.interaction, saved)  # as what it is made from
            await self.zoom(replies.interaction, saved, source, extension, prompt, private)

    async def _custom_zoom(self, interaction: discord.Interaction, data: Mapping[str, Any]) -> None:
        """A Custom zoom form submitted (found by custom_id): the extension it asks for."""
        match = zooming.MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        replies = Replies(interaction)
        try:
            saved = await self._load(replies, int(match["key"]))
            if saved is None:
                return
            form = zooming.read_form(dict(_submitted_values(data.get("components"))), saved)
            if isinstance(form, str):
                await replies.answer(form)
                return
            await self._zoom(replies, saved, form.extension, form.prompt, form.index)
        except Exception:
            log.exception("a custom zoom failed")
            await _tell_unexpected(interaction)

    @staticmethod
    async def _in_follow_ups(
        replies: Replies, saved: SavedRequest, index: int, webhook: discord.Webhook | None = None
    ) -> discord.Attachment | None:
        """The ``index``-th image (0-based) after the first message's: the rest of a set that
        did not fit in one message went into follow-ups, in order. Read through the channel,
        or ``webhook`` where the bot is not in it."""
        interaction = replies.interaction
        if index < 0 or interaction.channel_id is None:
            return None
        channel = interaction.client.get_partial_messageable(
            interaction.channel_id, guild_id=interaction.guild_id
        )
        for message_id in saved.follow_up_ids:
            try:
                async with asyncio.timeout(step_timeout(interaction, LOAD_TIMEOUT)):
                    if webhook is not None:
                        message: discord.Message = await webhook.fetch_message(message_id)
                    else:
                        message = await channel.fetch_message(message_id)
            except (TimeoutError, *DISCORD_FAILURES) as exc:
                log.warning("could not read a follow-up of saved request %s: %r", saved.key, exc)
                return None
            found = source_image(message, index)
            if found is not None:
                return found
            index -= _image_count(message)
        return None


async def delete_images(
    interaction: discord.Interaction,
    *,
    asker: int | None,
    key: int,
    saved: SavedRequests | None,
    webhook: discord.Webhook | None = None,
) -> None:
    """Remove the pressed message and the follow-ups its images were posted in (as ``saved``
    has them under ``key``), for the member who asked or one who may manage messages.

    The follow-ups go first: if one cannot be deleted, the pressed message stays, with its
    Delete button to try again. Where the bot is not in the server (personal scope) they can
    be deleted only through ``webhook``, the posting interaction's, while its token lives;
    past that the pressed message (this press's own to delete) goes, and the member is told
    which messages stay.
    """
    allowed = interaction.user.id == asker or interaction.permissions.manage_messages
    if not allowed:
        await Replies(interaction).answer(NOT_YOURS)
        return
    # A set in flight is in memory: read at once, before its next follow-up can be recorded.
    found = await _saved_set(saved, key)
    follow_ups: tuple[int, ...] = ()
    if saved is not None and found is not None and _is_pressed_set(found, interaction, asker):
        saved.mark_deleted(key)  # a follow-up still being posted is deleted as it comes
        follow_ups = found.follow_up_ids
    else:  # no set, or not this message's (a forged id): the pressed message only
        webhook = None
    try:
        await interaction.response.defer()  # no new message: the pressed one goes
        stay: tuple[int, ...] = ()
        if where(interaction).personal:
            stay = follow_ups if webhook is None else await _delete_through(webhook, follow_ups)
        else:
            await _delete_messages(interaction, follow_ups)
        await interaction.delete_original_response()
        if stay:
            log.info("%d follow-up(s) of a deleted set were out of the bot's reach", len(stay))
            await interaction.followup.send(
                FOLLOW_UPS_STAY.format(n=len(stay)).localized(interaction.locale), ephemeral=True
            )
    except DISCORD_FAILURES as exc:
        log.warning("could not delete an /imagine message: %r", exc)
        try:
            await interaction.followup.send(
                NOT_DELETED.localized(interaction.locale), ephemeral=True
            )
        except DISCORD_FAILURES:
            log.warning("could not tell the member either")


def _is_pressed_set(
    found: SavedRequest, interaction: discord.Interaction, asker: int | None
) -> bool:
    """Whether ``found`` is the set whose Delete was pressed: asked by the member the button
    names, made here, and posted in the pressed message (where that is known). A forged id
    naming another member's set must not reach its follow-ups (nor its webhook)."""
    if found.member_id != asker or not belongs_here(found, interaction):
        return False
    pressed = interaction.message
    return found.message_id is None or (pressed is not None and found.message_id == pressed.id)


async def _saved_set(saved: SavedRequests | None, key: int) -> SavedRequest | None:
    """The set saved under ``key``; None where there is none or it cannot be read (the pressed
    message is deleted all the same: the member wants the images gone)."""
    if saved is None:  # the bot is shutting down
        return None
    try:
        async with asyncio.timeout(LOAD_TIMEOUT):
            found = await saved.load(key)
    except Exception as exc:
        log.warning(
            "could not read the follow-up messages of saved request %s (%s); "
            "deleting the pressed message only",
            key,
            type(exc).__name__,
        )
        return None
    return found


async def _delete_messages(interaction: discord.Interaction, message_ids: tuple[int, ...]) -> None:
    """Delete the bot's messages ``message_ids`` in the pressed message's channel, through the
    channel: a follow-up belongs to the interaction that posted it, whose token has expired or
    is not this press's. One already gone is no failure; any other failure is raised."""
    if not message_ids or interaction.channel_id is None:
        return
    channel = interaction.client.get_partial_messageable(
        interaction.channel_id, guild_id=interaction.guild_id
    )
    for message_id in message_ids:
        # One deleted already (by hand, or by an earlier press that failed later) is gone.
        with contextlib.suppress(discord.NotFound):
            await channel.get_partial_message(message_id).delete()


async def _delete_through(webhook: discord.Webhook, message_ids: tuple[int, ...]) -> tuple[()]:
    """Delete the follow-ups ``message_ids`` through the webhook that posted them (where the bot
    is not in the channel); one already gone is no failure, any other failure is raised."""
    for message_id in message_ids:
        with contextlib.suppress(discord.NotFound):
            await webhook.delete_message(message_id)
    return ()


def belongs_here(saved: SavedRequest, interaction: discord.Interaction) -> bool:
    """Whether the request behind a press was made where it is pressed: in its server, and
    outside servers in its own DM or group DM, and is not another member's private set (a
    forged id, or a message of another app carrying one, names none of them here)."""
    if saved.guild_id != interaction.guild_id:
        return False
    if saved.private and saved.member_id != interaction.user.id:
        return False
    return saved.guild_id is not None or saved.channel_id == interaction.channel_id


async def _tell_unexpected(interaction: discord.Interaction) -> None:
    """The last resort for a press: the presser gets a private sentence, the log the detail."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(
                UNEXPECTED.localized(interaction.locale), ephemeral=True
            )
        else:
            await interaction.response.send_message(
                UNEXPECTED.localized(interaction.locale), ephemeral=True
            )
    except DISCORD_FAILURES:
        log.warning("could not tell the member about the failure")


def made_privately(interaction: discord.Interaction, saved: SavedRequest) -> bool:
    """Whether what a press makes is private: it is made from a private set, or from a message
    only the presser sees (a set shown again privately)."""
    message = interaction.message
    return saved.private or (message is not None and message.flags.ephemeral)


def lineage(interaction: discord.Interaction) -> tuple[int | None, str | None]:
    """The saved request a new request was made from, and how: the set whose button or form
    (``imagine:<action>:<key>``) was used, or the set a message menu (Vary image) was used on,
    where the message is the bot's; (None, None) for a command."""
    data: Mapping[str, Any] = cast("Mapping[str, Any]", interaction.data or {})
    match = LINEAGE_ID.fullmatch(str(data.get("custom_id", "")))
    if match is not None:
        return int(match["key"]), match["action"]
    target = data.get("target_id")
    resolved = data.get("resolved")
    if target is None or not isinstance(resolved, Mapping):
        return None, None
    message = (resolved.get("messages") or {}).get(str(target))
    if not isinstance(message, Mapping):
        return None, None
    me = interaction.client.user
    author = message.get("author")
    if me is None or not isinstance(author, Mapping) or str(author.get("id")) != str(me.id):
        return None, None  # another app's message may carry buttons with any of the bot's ids
    for row in message.get("components") or ():
        for child in row.get("components") or () if isinstance(row, Mapping) else ():
            found = BUTTON_ID.fullmatch(str(child.get("custom_id", "")))
            if found is not None:
                return int(found["key"]), str(data.get("name", "menu")).lower()[:32]
    return None, None


def saved_key(message: discord.Message) -> int | None:
    """The key of the request behind the buttons of ``message``; None where it has none."""
    for row in message.components:
        for child in getattr(row, "children", ()):
            match = BUTTON_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if match is not None:
                return int(match["key"])
    return None


def _is_image(filename: str) -> bool:
    """Whether a posted file counts among the images Vary buttons are numbered over: every one
    but an SVG (its PNG rendering, which the edits endpoint takes, stands for it)."""
    return not filename.lower().endswith(".svg")


def _format_of(filename: str) -> str:
    """A posted file's format, from the name the bot gave it."""
    suffix = filename.lower().rpartition(".")[2]
    return "jpeg" if suffix == "jpg" else suffix


def _image_count(message: discord.Message) -> int:
    return sum(_is_image(a.filename) for a in message.attachments)


def source_image(message: discord.Message, index: int) -> discord.Attachment | None:
    """The ``index``-th image of a posted set (0-based), as Vary sends it: an SVG's PNG
    rendering stands for the SVG, which the edits endpoint does not take."""
    images = [attachment for attachment in message.attachments if _is_image(attachment.filename)]
    return images[index] if 0 <= index < len(images) else None
