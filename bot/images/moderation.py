"""The moderation check: a prompt, and an edit's input images, sent to the service's
``POST /moderations`` (``omni-moderation-latest``, which reads text and images) before anything
is paid for, and a policy that says which categories refuse at what score.

Decisions:

- The check fails closed: a timeout, a failure, an answer that is not a moderation result (or
  lacks a score of a category the policy checks) raises :class:`ModerationUnavailable`, and the
  request is refused; nothing is let through that a server wanted checked.
- A policy is a score per category: a category refuses where its score reaches it. ``on`` is
  OpenAI's own judgement: a category refuses where the answer flags it. ``strict`` is for servers
  with children: it refuses what ``on`` refuses, and also any category whose score reaches the
  (lower) threshold of :data:`STRICT`. A server can override one category (``violence=0.6``) or
  leave one unchecked (``violence=off``).
- Nothing of Discord is sent: the body is the model, the text and the images (as data URLs),
  no ``user`` or ids.
- Whether the endpoint has the route is probed without generating: ``POST /moderations`` with
  an empty body, which OpenAI refuses as invalid (400) and a gateway without the route answers
  with 404 or 405 (:func:`has_moderations`).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

from bot.i18n import Text, _

MODEL = "omni-moderation-latest"
MODERATION_SECONDS = 10.0  # the most a check waits for its answer before refusing
ANSWER_BYTES = 256 * 1024  # a moderation answer is about 2 KB
# An input image is checked at this many pixels on its longer side at most: enough to judge it,
# and a body of a few hundred kilobytes instead of an edit's 16 inputs of up to 50 MB each.
CHECKED_SIDE = 1024

# omni-moderation-latest's categories.
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
PRESETS = ("off", "on", "strict")
# The scores that refuse under ``strict``, besides every category the service flags.
STRICT: Mapping[str, float] = {
    "harassment": 0.4,
    "harassment/threatening": 0.2,
    "hate": 0.3,
    "hate/threatening": 0.2,
    "illicit": 0.3,
    "illicit/violent": 0.2,
    "self-harm": 0.2,
    "self-harm/intent": 0.2,
    "self-harm/instructions": 0.2,
    "sexual": 0.2,
    "sexual/minors": 0.01,
    "violence": 0.4,
    "violence/graphic": 0.2,
}
OFF = "off"


class ModerationUnavailable(Exception):
    """The check could not be made (no route, timeout, failure, an answer not understood); the
    message is for the log, never the member."""


class PolicyRefused(ValueError):
    """A policy that is not accepted; the message says what is, for the manager (in English;
    ``why``, the part that is wrong, is marked for translation)."""

    def __init__(self, message: str, why: Text | None) -> None:
        super().__init__(message)
        self.why = why


@dataclass(frozen=True, slots=True)
class Policy:
    """Which categories refuse: a preset and per-category overrides (None: not checked)."""

    preset: str = "off"
    overrides: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def checks(self) -> bool:
        return self.preset != "off" or any(v is not None for v in self.overrides.values())

    def threshold(self, category: str) -> float | None:
        """The score at which ``category`` refuses regardless of the flag (None: only the
        flag, under on and strict)."""
        if category in self.overrides:
            return self.overrides[category]
        return STRICT.get(category) if self.preset == "strict" else None

    def refused(self, result: ModerationResult) -> tuple[str, ...]:
        """The categories that refuse this result; :class:`ModerationUnavailable` where one
        this policy scores is missing from it (an older model's answer, say)."""
        refusing = []
        for category in CATEGORIES:
            if category in self.overrides and self.overrides[category] is None:
                continue  # the server does not check it
            threshold = self.threshold(category)
            if threshold is not None and category not in result.scores:
                raise ModerationUnavailable(f"the answer has no score of {category}")
            score = result.scores.get(category, 0.0)
            flagged = self.preset != "off" and category in result.flagged
            if flagged or (threshold is not None and score >= threshold):
                refusing.append(category)
        return tuple(refusing)

    def __str__(self) -> str:
        parts = [self.preset]
        for category, score in self.overrides.items():
            parts.append(f"{category}={OFF if score is None else f'{score:g}'}")
        return " ".join(parts)


# Why a policy is refused, in the manager's language (the whole sentence is the settings').
NOT_ONE = _("{word} is not one")
NOT_A_SCORE = _("{word}: a score is 0 to 1")
POLICY_ACCEPTS = (
    "off, on (the service's own judgement) or strict (lower scores refuse, for servers with "
    "children), then any categories with the score from 0 to 1 at which they refuse, or off, "
    "such as: strict violence=0.6 harassment=off. The categories: " + ", ".join(CATEGORIES)
)


def parse_policy(text: str) -> Policy:
    """A policy from its text (as :meth:`Policy.__str__` writes it); :class:`PolicyRefused`."""
    words = text.lower().replace(",", " ").split()
    if not words or words[0] not in PRESETS:
        raise PolicyRefused(f"must be {POLICY_ACCEPTS}.", None)
    overrides: dict[str, float | None] = {}
    for word in words[1:]:
        category, _, score = word.partition("=")
        if category not in CATEGORIES or not score:
            raise PolicyRefused(
                f"must be {POLICY_ACCEPTS} ({word[:60]} is not one).",
                NOT_ONE.format(word=word[:60]),
            )
        if score == OFF:
            overrides[category] = None
            continue
        try:
            value = float(score)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise PolicyRefused(
                f"must be {POLICY_ACCEPTS} ({word[:60]}: a score is 0 to 1).",
                NOT_A_SCORE.format(word=word[:60]),
            )
        overrides[category] = value
    return Policy(words[0], overrides)


@dataclass(frozen=True, slots=True)
class ModerationResult:
    """What the service said: the categories it flags and every category's score."""

    flagged: frozenset[str]
    scores: Mapping[str, float]


def moderation_body(prompt: str, images: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """The JSON body: the prompt as text and each image (its format and bytes) as a data URL."""
    inputs: list[dict[str, object]] = [{"type": "text", "text": prompt}]
    for image_format, data in images:
        url = f"data:image/{image_format};base64,{base64.b64encode(data).decode()}"
        inputs.append({"type": "image_url", "image_url": {"url": url}})
    return json.dumps({"model": MODEL, "input": inputs}).encode()


def checked_image(image_format: str, data: bytes) -> tuple[str, bytes]:
    """An input image as it is sent to the check: as it is where it is small, else scaled down
    to :data:`CHECKED_SIDE` (PNG where it has transparency, else JPEG). The inputs were read and
    checked already (bot/images/edits.py); one that cannot be read again fails the check."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= CHECKED_SIDE and len(data) <= 1024 * 1024:
                return image_format, data
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            shrunk = image.convert("RGBA" if alpha else "RGB")
        shrunk.thumbnail((CHECKED_SIDE, CHECKED_SIDE))
        out = io.BytesIO()
        shrunk.save(out, "PNG" if alpha else "JPEG", quality=90)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ModerationUnavailable("an input image could not be read for the check") from None
    return ("png" if alpha else "jpeg"), out.getvalue()


def parse_moderation(body: bytes) -> ModerationResult:
    """The answer's results, as one (a category flagged or scored by any of them counts);
    :class:`ModerationUnavailable` for anything that is not a moderation answer. A category the
    answer lacks is left out (a gateway's older model may score fewer): a policy that scores it
    then fails closed, one that reads only the service's flags takes it as not flagged."""
    try:
        document = json.loads(body)
        results = document["results"]
        if not isinstance(results, list) or not results:
            raise TypeError
        flagged: set[str] = set()
        scores: dict[str, float] = {}
        for result in results:
            categories, scored = result["categories"], result["category_scores"]
            if not isinstance(categories, dict) or not isinstance(scored, dict):
                raise TypeError
            for category in CATEGORIES:
                if category not in categories and category not in scored:
                    continue
                flag, score = categories[category], scored[category]
                if not isinstance(flag, bool) or isinstance(score, bool):
                    raise TypeError
                if not 0.0 <= float(score) <= 1.0:
                    raise ValueError
                if flag:
                    flagged.add(category)
                scores[category] = max(scores.get(category, 0.0), float(score))
    except (ValueError, TypeError, KeyError, RecursionError, AttributeError):
        raise ModerationUnavailable("the moderation answer is not one the bot reads") from None
    if not scores:
        raise ModerationUnavailable("the moderation answer scores none of the categories")
    return ModerationResult(frozenset(flagged), scores)
