"""The /edit definition and the Vary image message menu. They build an :class:`ImageRequest`
and hand it, with the images to start from, to :func:`bot.requests.editing.run_edit`; nothing
else."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.discord_out.replies import DISCORD_FAILURES, clip
from bot.i18n import Text, _
from bot.i18n.commands import command_text
from bot.images import ImageRequest
from bot.requests.admission import Admission
from bot.requests.buttons import buttons_of
from bot.requests.editing import (
    VARY_PROMPT,
    default_edit_model,
    edit_models,
    image_attachments,
    run_edit,
)
from bot.requests.options import (
    PROMPT_MAX,
    SHARED_OPTION_NAMES,
    autocompletes_following_the_model,
    choices_of_models,
)
from bot.services import Services

NO_IMAGE = _("This message has no image to vary.")
WHICH_IMAGE = _("This message has several images: which one should be varied?")
CHOICE_SECONDS = 300.0  # how long the question of which image stays answerable
SELECT_OPTIONS_MAX = 25  # Discord's most options in a select
SELECT_LABEL_MAX = 100  # Discord's longest option label
CHOOSE_PLACEHOLDER = _("Choose the image to vary")
IMAGE_LABEL = _("Image {index}: {filename}")
IMAGE_CHOSEN = _("Image {index} chosen.")
QUESTION_EXPIRED = _("This question has expired: use Vary image again.")


def build_edit_command(
    services: Services, admission: Admission
) -> app_commands.Command[Any, ..., None] | None:
    """/edit, with the offered models that edit; None where no offered model does."""
    settings, catalog = services.settings, services.settings.catalog
    editors = edit_models(admission, services.offer.models)
    if not editors:
        return None
    default = default_edit_model(services.offer.default, editors)
    size_autocomplete, quality_autocomplete = autocompletes_following_the_model(catalog, default)

    another = command_text("Another image to draw from (models that take several)")

    @app_commands.command(
        name=command_text("edit"),
        description=command_text("Edit an image, or make one from several"),
    )
    @app_commands.rename(
        **SHARED_OPTION_NAMES,
        image=command_text("image"),
        mask=command_text("mask"),
        image2=command_text("image2"),
        image3=command_text("image3"),
        image4=command_text("image4"),
        fidelity=command_text("fidelity"),
    )
    @app_commands.describe(
        image=command_text("The image to edit (PNG, JPEG or WebP)"),
        prompt=command_text("What to change, or what to make from the images"),
        mask=command_text(
            "A PNG the image's size; its transparent areas are where the image changes"
        ),
        image2=another,
        image3=another,
        image4=another,
        model=command_text(
            "The image model (left out: the server's default, else {model})", model=default
        ),
        size=command_text("Width x height; the choices follow the model"),
        quality=command_text("Rendering quality; the choices follow the model"),
        count=command_text(
            "How many images (at most {most})", most=settings.max_images_per_request
        ),
        fidelity=command_text(
            "How closely to keep the input's features, faces above all (some models)"
        ),
    )
    @app_commands.choices(
        model=choices_of_models([catalog[name] for name in editors]),
        fidelity=[
            app_commands.Choice(name=command_text("high"), value="high"),
            app_commands.Choice(name=command_text("low"), value="low"),
        ],
    )
    @app_commands.autocomplete(size=size_autocomplete, quality=quality_autocomplete)
    async def edit_command(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        mask: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        count: app_commands.Range[int, 1, 10] = 1,
        fidelity: str | None = None,
    ) -> None:
        request = ImageRequest(
            prompt=prompt,
            model=model or default,
            size=size,
            quality=quality,
            count=count,
            user=services.pseudonyms.for_user(interaction.user.id),
        )
        references = [extra for extra in (image2, image3, image4) if extra is not None]
        sources = [image, *references]
        await run_edit(
            admission,
            interaction,
            request,
            sources,
            mask=mask,
            input_fidelity=fidelity,
            picked=model,
        )

    return edit_command


def build_vary_menu(services: Services, admission: Admission) -> app_commands.ContextMenu | None:
    """Vary image: a variation of an image of any message, with the default edit model (the
    server's, where it edits).
    The prompt is the message's own where the bot posted it (the request saved with its buttons,
    else its embed's), else a request for a variation. None where no offered model edits."""
    editors = edit_models(admission, services.offer.models)
    if not editors:
        return None
    model = default_edit_model(services.offer.default, editors)

    async def vary_image(interaction: discord.Interaction, message: discord.Message) -> None:
        attachments = image_attachments(message)
        if not attachments:
            await interaction.response.send_message(
                NO_IMAGE.localized(interaction.locale), ephemeral=True
            )
            return
        prompt = VARY_PROMPT
        me = interaction.client.user
        if me is not None and message.author.id == me.id:
            # The prompt saved with the set (its embed holds only the first 3,000 characters),
            # else the embed's where the request is not known (a set posted without buttons).
            buttons = buttons_of(interaction.client)
            saved = await buttons.saved_prompt(interaction, message) if buttons else None
            shown = message.embeds[0].description if message.embeds else None
            prompt = saved or shown or VARY_PROMPT
        request = ImageRequest(
            prompt=prompt,
            model=model,
            user=services.pseudonyms.for_user(interaction.user.id),
        )

        async def vary(chosen: discord.Interaction, attachment: discord.Attachment) -> None:
            await run_edit(admission, chosen, request, [attachment], command="Vary image")

        if len(attachments) == 1:
            await vary(interaction, attachments[0])
            return
        # Several images: the member picks one, privately; the choice is a new interaction,
        # admitted like any other (the menu's own 3 seconds are spent on the question).
        await interaction.response.send_message(
            WHICH_IMAGE.localized(interaction.locale),
            view=ChooseImage(attachments, vary, interaction),
            ephemeral=True,
        )

    return app_commands.ContextMenu(name=command_text("Vary image"), callback=vary_image)


class ChooseImage(discord.ui.View):
    """A private select of the message's images (Discord shows at most 25 options); choosing
    one starts its variation."""

    def __init__(
        self,
        attachments: list[discord.Attachment],
        vary: Callable[[discord.Interaction, discord.Attachment], Awaitable[None]],
        question: discord.Interaction,
    ) -> None:
        super().__init__(timeout=CHOICE_SECONDS)
        self.attachments = attachments[:SELECT_OPTIONS_MAX]
        self.vary = vary
        self.question = question  # the private message asking, edited once it is answered
        self.locale = question.locale
        select: discord.ui.Select[ChooseImage] = discord.ui.Select(
            placeholder=CHOOSE_PLACEHOLDER.localized(self.locale),
            options=[
                discord.SelectOption(
                    label=clip(
                        IMAGE_LABEL.format(index=index, filename=attachment.filename).localized(
                            self.locale
                        ),
                        SELECT_LABEL_MAX,
                    ),
                    value=str(index - 1),
                )
                for index, attachment in enumerate(self.attachments, start=1)
            ],
        )
        select.callback = self._chosen  # type: ignore[method-assign]
        self.select = select
        self.add_item(select)

    async def _chosen(self, interaction: discord.Interaction) -> None:
        self.stop()  # one variation per question
        index = int(self.select.values[0])
        await self.vary(interaction, self.attachments[index])
        await self._close(IMAGE_CHOSEN.format(index=index + 1))

    async def on_timeout(self) -> None:
        await self._close(QUESTION_EXPIRED)

    async def _close(self, sentence: Text) -> None:
        """No select left that nothing would answer."""
        with contextlib.suppress(*DISCORD_FAILURES):
            await self.question.edit_original_response(
                content=sentence.localized(self.locale), view=None
            )
