"""Zoom out and pan: the buttons' looks and layout, the Custom zoom form, and the edit each press
makes (the image on a larger canvas, the new area masked, filled by ``/images/edits``).

Decisions:

- A press is an edit from the presser, on the road every edit takes
  (``Admission.admit_checked_later``, as Vary): the server's settings, the presser's limits and
  budgets, an edit's price, every refusal private. The model is the images' own where it edits
  with a mask and the server allows it, else the default edit model (as Vary chooses); the
  prompt is the original one (Custom zoom: as the member changed it).
- What is extended is image 1 of the set (the first image of the pressed message): seven
  buttons for each of up to ten images would not fit Discord's five rows of five. Custom zoom
  asks which image when the set has several. The buttons take two rows (zoom, then the four
  pans), after the Vary rows: at most 1 + 2 + 2 = 5.
- The canvas is made only once the request is counted, within budget and has room
  (:class:`ZoomInputs` is an :class:`~bot.requests.edit_inputs.EditInputs`): the download and
  the two PNGs are bounded by the processing room or a slot (:func:`bot.images.canvas.held_bytes`),
  the decoding by the canvas threads (:func:`bot.images.canvas.extend_off_loop`).
- The size is fixed when the request is checked, before anything is downloaded (the price and
  budgets depend on it): from the image's size as Discord declares it, else the size the set
  was asked at. The real image is then fitted into that size (see :mod:`bot.images.canvas`).
- The buttons keep working after a restart like the others (their custom_ids name the action
  and the saved request); the Custom zoom form is read by custom_id, as Edit prompt's.

Member-facing sentences are the constants below.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import discord

from bot.i18n import Text, _
from bot.images import ImageClient, ImageRequest, PreparedRequest, UnsupportedOption, parse_size
from bot.images.canvas import (
    MAX_SOURCE_PIXELS,
    MAX_ZOOM,
    MIN_ZOOM,
    Extension,
    extend_off_loop,
    held_bytes,
    target_size,
)
from bot.images.edits import EditRequest, check_file_size
from bot.requests.edit_inputs import EditInputs, _download
from bot.requests.saved_requests import SavedRequest
from bot.store.pseudonym import Pseudonymizer

if TYPE_CHECKING:
    from bot.requests.admission import Admission

# The buttons: their custom_id action, emoji, label and the extension they ask for (None:
# Custom zoom, which asks first). In the order shown; "row" is the row among the zoom rows.
ZOOM_OUT_15 = "zoom15"
ZOOM_OUT_2 = "zoom2"
CUSTOM_ZOOM = "zoomc"
PAN_LEFT = "panl"
PAN_RIGHT = "panr"
PAN_UP = "panu"
PAN_DOWN = "pand"
LOOKS: Mapping[str, tuple[str, str, discord.ButtonStyle]] = {
    ZOOM_OUT_15: ("🔭", _("Zoom out 1.5\u00d7"), discord.ButtonStyle.secondary),
    ZOOM_OUT_2: ("🔭", _("Zoom out 2\u00d7"), discord.ButtonStyle.secondary),
    CUSTOM_ZOOM: ("📐", _("Custom zoom"), discord.ButtonStyle.secondary),
    PAN_LEFT: ("⬅️", _("Pan left"), discord.ButtonStyle.secondary),
    PAN_RIGHT: ("➡️", _("Pan right"), discord.ButtonStyle.secondary),
    PAN_UP: ("⬆️", _("Pan up"), discord.ButtonStyle.secondary),
    PAN_DOWN: ("⬇️", _("Pan down"), discord.ButtonStyle.secondary),
}
EXTENSIONS: Mapping[str, Extension] = {
    ZOOM_OUT_15: Extension("out", 1.5),
    ZOOM_OUT_2: Extension("out", 2.0),
    PAN_LEFT: Extension("left"),
    PAN_RIGHT: Extension("right"),
    PAN_UP: Extension("up"),
    PAN_DOWN: Extension("down"),
}
LAYOUT: tuple[tuple[str, ...], ...] = (
    (ZOOM_OUT_15, ZOOM_OUT_2, CUSTOM_ZOOM),
    (PAN_LEFT, PAN_RIGHT, PAN_UP, PAN_DOWN),
)
ZOOM_ACTIONS = frozenset(LOOKS)
# The formats a posted image 1 may have for the buttons to show: what Pillow decodes to a still.
EXTENDABLE = frozenset({"png", "jpeg", "webp"})

MODAL_ID = re.compile(r"imagine:zoomout:(?P<key>[0-9]{1,19})")
FACTOR_INPUT = "factor"
PROMPT_INPUT = "prompt"
IMAGE_INPUT = "image"
TEXT_INPUT_MAX = 4000  # Discord's longest text input value
MODAL_TIMEOUT = 900.0  # seconds the modal object is kept (its submission is read by custom_id)
# The largest posted image downloaded to extend (the bot posts within Discord's upload limits).
MAX_SOURCE_BYTES = 100 * 1024 * 1024

BAD_FACTOR = _(
    "The zoom factor must be a number from {least} to {most}, such as {example}."
).format(least=Decimal(f"{MIN_ZOOM:g}"), most=Decimal(f"{MAX_ZOOM:g}"), example=Decimal("1.5"))
EMPTY_PROMPT = _("The prompt is empty: write what the new area should show.")
BAD_IMAGE = _("The image number must be a whole number, such as 1.")
NO_MASK = _("{model} cannot zoom out or pan: it takes no mask.")
# What the requests are called in sentences ("{command} works in ...") and the metrics.
ZOOM_OUT = _("Zoom out")
PAN = _("Pan")
# The Custom zoom form.
CUSTOM_ZOOM_TITLE = _("Custom zoom")
ZOOM_OUT_BY = _("Zoom out by")
ZOOM_OUT_BY_HINT = _("From {least} to {most}: 2 makes each side twice as long.").format(
    least=Decimal(f"{MIN_ZOOM:g}"), most=Decimal(f"{MAX_ZOOM:g}")
)
PROMPT = _("Prompt")
PROMPT_HINT = _("What the whole picture shows, the new area included.")
IMAGE = _("Image")
WHICH_IMAGE = _("Which one, 1 to {n}.")

# Does an extension for a press: the press, the set's saved request, the image to extend, how,
# and the prompt. A new request from the presser; it owns its answer, as Admit does.
# (the press, the set, its image, the extension, the prompt, whether the result is private)
ZoomHandler = Callable[
    [discord.Interaction, SavedRequest, discord.Attachment, Extension, str, bool],
    Awaitable[None],
]


def rows() -> Iterator[tuple[int, str]]:
    """(row among the zoom rows, action) of each zoom button, in order."""
    for row, actions in enumerate(LAYOUT):
        for action in actions:
            yield row, action


def command_of(extension: Extension) -> Text:
    """What the request is called in sentences and logs ("use Zoom out in ...")."""
    return ZOOM_OUT if extension.direction == "out" else PAN


class ZoomInputs(EditInputs):
    """The image an extension starts from: checked without a file (the size it is asked at is
    fixed here), then downloaded and put on its canvas, with its mask, once room is kept."""

    def __init__(
        self,
        images: ImageClient,
        source: discord.Attachment,
        extension: Extension,
        *,
        reference: tuple[int, int] | None,
    ) -> None:
        super().__init__(images, [source])
        self.source = source
        self.extension = extension
        self.reference = reference  # the size the set was asked at, where known
        self.target: tuple[int, int] | None = None
        self.max_pixels = MAX_SOURCE_PIXELS

    def _declared_size(self) -> tuple[int, int]:
        width, height = self.source.width, self.source.height
        if width and height:
            return width, height
        return self.reference or (1024, 1024)

    @property
    def declared_bytes(self) -> int:
        assert self.target is not None, "checked first"
        # The file, then the two PNGs; the pixels are bounded by the canvas threads.
        return self.source.size + held_bytes(self.extension, self.target)

    def check(self, request: ImageRequest) -> PreparedRequest:
        spec = self.images.edit_spec(request.model)
        if not spec.mask:
            raise UnsupportedOption("mask", NO_MASK.format(model=spec.name))
        check_file_size("image", self.source.size, MAX_SOURCE_BYTES)
        declared = self._declared_size()
        width, height = target_size(spec, self.extension, declared, self.reference)
        if (self.source.width and self.source.height) or self.reference:
            # As Discord declares it, else as asked (the bot posts nothing larger): a larger
            # image is refused from its header, so memory stays as declared.
            self.max_pixels = min(MAX_SOURCE_PIXELS, declared[0] * declared[1])
        request = dataclasses.replace(request, size=f"{width}x{height}")
        checked = self.images.check_edit(request, images=1, has_mask=True)
        self.target = (width, height)
        self.request = request
        return checked

    async def download(self) -> PreparedRequest:
        assert self.request is not None and self.target is not None, "checked first"
        self.downloading = True
        data = await _download(self.source, "image")
        image, mask = await extend_off_loop(
            data, self.extension, self.target, max_pixels=self.max_pixels
        )
        del data
        return await self.images.prepare_edit(EditRequest(self.request, (image,), mask=mask))


def zoom_models(images: ImageClient, offered: Sequence[str]) -> list[str]:
    """The offered models that can extend an image: they edit, with a mask."""
    catalog = images.catalog
    return [
        name for name in offered if name in catalog and catalog[name].edits and catalog[name].mask
    ]


def zoom_handler(
    admission: Admission,
    *,
    offered: Sequence[str],
    offer_default: str,
    pseudonyms: Pseudonymizer,
) -> ZoomHandler | None:
    """What the zoom and pan buttons do; None where no offered model edits with a mask (no
    such buttons then)."""
    editors = zoom_models(admission.images, offered)
    if not editors:
        return None
    default = offer_default if offer_default in editors else editors[0]

    async def zoom(
        interaction: discord.Interaction,
        saved: SavedRequest,
        image: discord.Attachment,
        extension: Extension,
        prompt: str,
        private: bool,
    ) -> None:
        # As Vary: the images' model, size and quality where it can and the server allows it,
        # else the default edit model's; the size is then fixed by ZoomInputs.check.
        request = ImageRequest(
            prompt=prompt,
            model=default,
            size=saved.size,
            quality=saved.quality,
            user=pseudonyms.for_user(interaction.user.id),
        )
        inputs = ZoomInputs(admission.images, image, extension, reference=parse_size(saved.size))
        await admission.admit_checked_later(
            interaction,
            request,
            inputs,
            picked=None,
            command=command_of(extension),
            preferred=saved.model,
            private=private,
        )

    return zoom


def prompt_input(prompt: str) -> discord.ui.TextInput[Any]:
    """A form's prompt field, prefilled with ``prompt`` (as much as fits); Edit prompt's too."""
    return discord.ui.TextInput(
        custom_id=PROMPT_INPUT,
        style=discord.TextStyle.paragraph,
        default=prompt[:TEXT_INPUT_MAX],
        max_length=TEXT_INPUT_MAX,
        required=True,
    )


class ZoomModal(discord.ui.Modal):
    """Custom zoom: the factor, the prompt (prefilled) and, for a set of several, which image.

    Its submission is read by :func:`read_form` from the interaction, by ``custom_id``, so that
    a form still open when the bot restarts is answered too; this object only draws it.
    """

    def __init__(self, saved: SavedRequest, images: int, locale: object = None) -> None:
        super().__init__(
            title=CUSTOM_ZOOM_TITLE.localized(locale),
            custom_id=f"imagine:zoomout:{saved.key}",
            timeout=MODAL_TIMEOUT,
        )
        self.factor: discord.ui.TextInput[ZoomModal] = discord.ui.TextInput(
            custom_id=FACTOR_INPUT, default="1.5", max_length=8, required=True
        )
        self.add_item(
            discord.ui.Label(
                text=ZOOM_OUT_BY.localized(locale),
                description=ZOOM_OUT_BY_HINT.localized(locale),
                component=self.factor,
            )
        )
        self.prompt = prompt_input(saved.prompt)
        self.add_item(
            discord.ui.Label(
                text=PROMPT.localized(locale),
                description=PROMPT_HINT.localized(locale),
                component=self.prompt,
            )
        )
        if images > 1:
            self.image: discord.ui.TextInput[ZoomModal] = discord.ui.TextInput(
                custom_id=IMAGE_INPUT, default="1", max_length=2, required=True
            )
            self.add_item(
                discord.ui.Label(
                    text=IMAGE.localized(locale),
                    description=WHICH_IMAGE.format(n=images).localized(locale),
                    component=self.image,
                )
            )


@dataclasses.dataclass(frozen=True, slots=True)
class ZoomForm:
    """A Custom zoom form as submitted: the extension, the prompt, the image (0-based)."""

    extension: Extension
    prompt: str
    index: int


def read_form(values: Mapping[str, str], saved: SavedRequest) -> ZoomForm | Text:
    """The submitted Custom zoom ``values`` (by custom_id), or the sentence refusing them. An
    unchanged prompt cut to fit the form stands for the whole saved one."""
    text = values.get(FACTOR_INPUT, "").strip().lower().rstrip("\u00d7x").strip().replace(",", ".")
    try:
        factor = float(text)
    except ValueError:
        return BAD_FACTOR
    if not MIN_ZOOM <= factor <= MAX_ZOOM:  # NaN fails this too
        return BAD_FACTOR
    prompt = values.get(PROMPT_INPUT, "").strip()
    if not prompt:
        return EMPTY_PROMPT
    if prompt == saved.prompt[:TEXT_INPUT_MAX].strip():
        prompt = saved.prompt
    image = values.get(IMAGE_INPUT, "1").strip()
    # At most 2 digits, as the form allows (a forged one of thousands is no number to parse).
    index = int(image) - 1 if len(image) <= 2 and image.isascii() and image.isdigit() else -1
    if index < 0:
        return BAD_IMAGE
    return ZoomForm(Extension("out", factor), prompt, index)
