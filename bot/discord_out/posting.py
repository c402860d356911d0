"""Posting a generation's result in the channel: the embed, the uploads fitted to the server's
limit (bot/discord_out/delivery.py), follow-ups for what does not fit one message, and one retry at
half
the limit when Discord refuses an upload as too large. Where Discord limits the follow-ups (a
user-installed app's interaction: 5), the images are made smaller until they fit, one follow-up
kept for a private sentence, rather than lose the last of them to a refusal.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import discord

from bot.discord_out.delivery import ImageTooLarge, Upload, pack, prepare_uploads, refit_uploads
from bot.discord_out.replies import Replies, as_written, clip
from bot.i18n import Text, _, joined, ngettext
from bot.images import GenerationResult, InputImage

log = logging.getLogger(__name__)

DESCRIPTION_MAX = 3000  # of Discord's 4096, leaving room in the 6000-character embed total
FIELD_MAX = 1024
AUTHOR_MAX = 256
ALT_TEXT_MAX = 1024  # Discord's longest attachment description
UPLOAD_FAILED = _("Discord did not accept the images. Please try again.")
UPLOAD_TOO_LARGE = _("The images are too large to upload to this server.")
CAME_BACK = ngettext(
    "{came} of the {n} image came back from the image service.",
    "{came} of the {n} images came back from the image service.",
)
REENCODED = _("Some images were re-encoded to fit this server's upload limit.")
NO_SVG_PREVIEW = _("(No preview: the SVG could not be rendered.)")
ALT_TEXT = _("{what} generated from the prompt: {prompt}")
AN_IMAGE = _("An image")
INPUTS = ngettext("{n} image", "{n} images")
WITH_MASK = _("{inputs}, with a mask")
EDITED = _("{member} edited")
IMAGINED = _("{member} imagined")
MODEL = _("Model")
SIZE = _("Size")
QUALITY = _("Quality")
IMAGES = _("Images")
TIME = _("Time")
SECONDS = _("{seconds:.1f} s")
FROM = _("From")
OPTIONS = _("Options")
REVISED_PROMPT = _("Revised prompt")
TOO_LARGE = 413
# Follow-ups kept free where their number is limited: the private sentence a failure ends with.
FOLLOW_UPS_KEPT = 1
PACKING_ATTEMPTS = 4  # smaller each time
ONLY_YOU = _(
    "Only you can see these images: this server does not let members' own apps post in public."
)


# The buttons under a set of images, made for the uploads that are posted, in order.
ButtonsFor = Callable[[Sequence[Upload]], discord.ui.View]


class DeliveryFailed(Exception):
    """Discord did not take the images: a failure on the Discord side, not the image service's."""

    def __init__(self, detail: str, *, user_message: str) -> None:
        super().__init__(detail)
        self.user_message = user_message


async def post_result(
    replies: Replies, result: GenerationResult, buttons: ButtonsFor | None = None
) -> int:
    """Post the images with their embed, and the buttons ``buttons`` makes for the uploads
    actually posted under the first message; return the bytes uploaded. Raises
    :class:`DeliveryFailed` when Discord will not take them."""
    embed = _embed(replies, result)
    limit = replies.upload_limit
    try:
        return await _upload(replies, result, embed, limit, buttons)
    except discord.HTTPException as exc:
        if exc.status != TOO_LARGE:
            raise
        # The server's real limit is below what the interaction reported: try once, smaller.
        log.warning("Discord refused an upload as too large; retrying at half the limit")
        try:
            return await _upload(replies, result, embed, limit // 2, buttons)
        except discord.HTTPException as again:
            if again.status != TOO_LARGE:
                raise
            raise DeliveryFailed(str(again), user_message=UPLOAD_TOO_LARGE) from None


async def _upload(
    replies: Replies,
    result: GenerationResult,
    embed: discord.Embed,
    limit: int,
    buttons: ButtonsFor | None,
) -> int:
    """One attempt at ``limit`` bytes; lets a 413 on the first message through for a retry.
    Returns the bytes uploaded."""
    try:
        uploads, messages = await _packed(result, limit, replies.follow_up_limit)
    except ImageTooLarge as exc:
        raise DeliveryFailed(str(exc), user_message=UPLOAD_TOO_LARGE) from None
    # Made from what is posted (not what was asked for): one Vary per image that came back and
    # can be varied. A follow-up refitted later keeps its images in the same order.
    view = buttons(uploads) if buttons is not None else None
    first, *rest = messages
    prompt = result.request.prompt
    content = _note(result, uploads, only_member_sees=replies.shown_to_member_only)
    try:
        await replies.post(
            content=content,
            embed=embed,
            files=_files(first, prompt, replies),
            view=view,
        )
    except discord.HTTPException as exc:
        if exc.status == TOO_LARGE:
            raise
        raise DeliveryFailed(
            f"uploading to Discord failed: {exc}", user_message=UPLOAD_FAILED
        ) from None
    uploaded = _size(first)
    for part in rest:
        try:
            await replies.follow_up(_files(part, prompt, replies))
            uploaded += _size(part)
        except discord.HTTPException as exc:
            if exc.status != TOO_LARGE:
                # The images already posted stay; Replies.tell_privately says the rest are
                # missing.
                raise DeliveryFailed(
                    f"a follow-up upload failed: {exc}", user_message=UPLOAD_FAILED
                ) from None
            uploaded += await _follow_up_smaller(replies, part, limit // 2, prompt)
    return uploaded


async def _packed(
    result: GenerationResult, limit: int, follow_ups: int | None
) -> tuple[list[Upload], list[list[Upload]]]:
    """The uploads and the messages they go in, within ``follow_ups`` follow-up messages
    (None: no limit) less :data:`FOLLOW_UPS_KEPT`: where they would need more, each image is
    made smaller (from the original, once more per attempt) so that several share a message.
    Raises :class:`ImageTooLarge` where they cannot be made to fit."""
    uploads = await prepare_uploads(result.images, limit)
    messages = pack(uploads, limit)
    if follow_ups is None:
        return uploads, messages
    most = 1 + max(follow_ups - FOLLOW_UPS_KEPT, 0)
    per_file = limit
    for _attempt in range(PACKING_ATTEMPTS):
        if len(messages) <= most:
            return uploads, messages
        # Each message holds this many files if each is at most this large.
        per_file = min(per_file // 2, limit // -(-len(uploads) // most))
        log.info(
            "%d images need %d messages, more than Discord allows here: made smaller",
            len(result.images),
            len(messages),
        )
        uploads = await prepare_uploads(result.images, per_file)
        messages = pack(uploads, limit)
    if len(messages) <= most:
        return uploads, messages
    raise ImageTooLarge(f"{len(result.images)} images do not fit in {most} messages")


def _size(uploads: list[Upload]) -> int:
    return sum(len(upload.data) for upload in uploads)


async def _follow_up_smaller(replies: Replies, part: list[Upload], limit: int, prompt: str) -> int:
    """A follow-up Discord refused as too large, once more at ``limit`` bytes; returns the bytes
    uploaded. Where the follow-ups are counted (a user install's), it stays one message: each
    image is made small enough to share it, rather than spend follow-ups the rest need."""
    log.warning("Discord refused a follow-up as too large; retrying at half the limit")
    per_file = limit if replies.follow_up_limit is None else max(limit // len(part), 1)
    try:
        smaller = await refit_uploads(part, per_file)
    except ImageTooLarge as exc:
        raise DeliveryFailed(str(exc), user_message=UPLOAD_TOO_LARGE) from None
    for message in pack(smaller, limit):
        try:
            await replies.follow_up(_files(message, prompt, replies))
        except discord.HTTPException as exc:
            sentence = UPLOAD_TOO_LARGE if exc.status == TOO_LARGE else UPLOAD_FAILED
            raise DeliveryFailed(
                f"a follow-up upload failed: {exc}", user_message=sentence
            ) from None
    return _size(smaller)


def _note(
    result: GenerationResult, uploads: list[Upload], *, only_member_sees: bool = False
) -> str | None:
    """What the member should know about the set, a sentence each (Replies.post renders them
    in the member's language)."""
    notes: list[str] = []
    if only_member_sees:
        notes.append(ONLY_YOU)
    if result.missing:
        asked = result.request.count
        notes.append(CAME_BACK.format(came=asked - result.missing, n=asked))
    if any(upload.reencoded for upload in uploads):
        notes.append(REENCODED)
    if any(upload.preview_failed for upload in uploads):
        notes.append(NO_SVG_PREVIEW)
    return joined(notes) if notes else None


def _files(uploads: list[Upload], prompt: str, replies: Replies) -> list[discord.File]:
    """The files, each with alt text for members who use screen readers: the prompt it was
    made from (an SVG's rendering says so), in the asker's language; blurred until clicked
    where the request asked for a spoiler (``replies.spoiler``)."""
    return [
        discord.File(
            io.BytesIO(upload.data),
            filename=upload.filename,
            description=clip(
                ALT_TEXT.format(what=upload.description or AN_IMAGE, prompt=prompt).localized(
                    replies.locale
                ),
                ALT_TEXT_MAX,
            ),
            spoiler=replies.spoiler,
        )
        for upload in uploads
    ]


def _inputs(inputs: tuple[InputImage, ...], mask: InputImage | None) -> Text:
    """What an edit started from: ``1 image, with a mask``."""
    text = INPUTS.format(n=len(inputs))
    return text if mask is None else WITH_MASK.format(inputs=text)


def _embed(replies: Replies, result: GenerationResult) -> discord.Embed:
    """The embed under the images, in the language of the member who asked for them."""
    locale, request = replies.locale, result.request
    embed = discord.Embed(
        description=clip(as_written(request.prompt), DESCRIPTION_MAX),
        colour=discord.Colour.blurple(),
        timestamp=discord.utils.utcnow(),
    )
    author = (EDITED if request.is_edit else IMAGINED).format(member=replies.member_name)
    embed.set_author(name=clip(author.localized(locale), AUTHOR_MAX))
    seconds = SECONDS.format(seconds=result.elapsed)
    fields: list[tuple[Text, str]] = [
        (MODEL, result.model),
        (SIZE, request.size),
        (QUALITY, request.quality),
        (IMAGES, str(len(result.images))),
        (TIME, seconds.localized(locale)),
    ]
    if request.is_edit:
        fields.append((FROM, _inputs(request.inputs, request.mask).localized(locale)))
    options = ", ".join(f"{name} {value}" for name, value in request.options.items())
    if options:
        fields.append((OPTIONS, clip(options, FIELD_MAX)))
    for name, value in fields:
        embed.add_field(name=name.localized(locale), value=value)
    if result.revised_prompt:
        embed.add_field(
            name=REVISED_PROMPT.localized(locale),
            value=clip(as_written(result.revised_prompt), FIELD_MAX),
            inline=False,
        )
    return embed
