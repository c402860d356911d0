"""Blocked words and patterns: the operator's ``BLOCKED_WORDS`` and what a server's managers add
with /imagine-settings, folded and compiled once into one RE2 set per list.

Decisions:

- Every prompt and every blocked word is folded the same way before they are compared: Unicode
  NFKC (full-width letters, ligatures, circled and styled letters become plain ones), casefolding,
  accents and other combining marks removed (NFD, then every nonspacing or enclosing mark),
  invisible characters removed (format characters such as zero-width spaces and joiners, the
  soft hyphen, variation selectors, Hangul fillers), then :data:`LOOK_ALIKES`: the Cyrillic and
  Greek letters most used to disguise Latin ones (Cyrillic a, Greek omicron) and a few Latin
  letters with a stroke (o with a stroke). It is not the whole Unicode confusables table (UTS #39),
  which would need data Python does not ship and folds far more (digits into letters, among
  others); leetspeak (``b4d``) is likewise not folded: a pattern catches it (``b[a4@]d``).
- Every run of characters that are neither letters, digits nor spacing marks becomes one space,
  and the folded prompt has a space at either end; a word or phrase then matches on word
  boundaries as `` word `` (a phrase's words separated by any punctuation or spaces). A word
  with a character of a script written without spaces between words (Han, Hiragana, Katakana,
  Thai, Lao, Khmer, Myanmar, Tibetan) matches anywhere, since there are no boundaries to find.
- Patterns are RE2 (``google-re2``): matching takes time linear in the prompt whatever the
  pattern, so none can stall the bot. They run on the folded prompt, ignoring case: a manager
  writes them in lower case without accents; the folded prompt's words are separated by single
  spaces (``^`` and ``$`` are its first and last letters). A pattern RE2 refuses, one larger than
  :data:`PATTERN_MAX_MEM`, or one that matches an empty prompt (which would refuse every prompt)
  is refused when it is added.
- All of a list's words and patterns are compiled into one ``re2.Set`` (which runs them all in
  one pass), cached by the list's text (:func:`matcher`, the most recent :data:`CACHED_SETS`), so
  that it is compiled once per change, not per request: a 10,000-entry list costs an admission
  microseconds (tests/benchmarks/bench_blocklist.py).
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterable

import re2

PATTERN_MAX_MEM = 1 << 20  # bytes of RE2 program for one pattern: far above any sensible one
SET_MAX_MEM = 256 << 20  # for a whole list (10,000 words take about 8 MB)
CACHED_SETS = 64  # compiled lists kept (one per server in use, about a megabyte each)

# Look-alike letters: each character of the first string becomes the one at its place in the
# second.
LOOK_ALIKES = str.maketrans(
    # Cyrillic (lower case: prompts are casefolded first)
    "авеѐёһніїјкморԛсѕтуүхԝԁɡ"
    # Greek
    "αβεζικνορτυχω"
    # Latin letters that do not decompose
    "ıłøđħŧƀɨ",
    "abeeehhiijkmopqcstyyxwdgabezikvoptuxwilodhtbi",
)


# Scripts written without spaces between words: a word with one of their characters matches
# anywhere in the prompt.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]"
)


@functools.cache
def _classes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """What is removed (invisible characters and combining marks) and what separates words,
    as two character classes built once from Python's Unicode database (0.2 s, at first use)."""
    removed: list[int] = [0x115F, 0x1160, 0x3164, 0xFFA0]  # Hangul fillers (letters, invisible)
    # Planes 4 to 13 are unassigned and 15 and 16 private: separators, without asking each.
    separating: list[int] = [*range(0x40000, 0xE0000), *range(0xF0000, sys.maxunicode + 1)]
    for code in itertools.chain(range(0x40000), range(0xE0000, 0xF0000)):
        category = unicodedata.category(chr(code))
        if category in ("Mn", "Me", "Cf"):
            removed.append(code)
        elif category[0] not in "LN" and category != "Mc":
            separating.append(code)
    return re.compile(_class(removed)), re.compile(_class(separating) + "+")


def _class(codes: list[int]) -> str:
    """A character class of ``codes`` (sorted), as ranges."""
    ranges: list[tuple[int, int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = (
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return "[" + "".join(parts) + "]"


def fold(text: str) -> str:
    """``text`` as it is compared: folded (see the module's docstring), every run of
    separators one space, with a space at either end."""
    removed, separating = _classes()
    if text.isascii():  # most prompts: nothing to normalise but case
        folded = text.lower()
    else:
        folded = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
        folded = unicodedata.normalize("NFC", removed.sub("", folded)).translate(LOOK_ALIKES)
    return f" {separating.sub(' ', folded).strip()} "


def word_pattern(word: str) -> str | None:
    """The RE2 pattern of a blocked word or phrase (None: nothing left once folded)."""
    folded = fold(word)
    if not folded.strip():
        return None
    if _UNSPACED.search(folded):
        return str(re2.escape(folded.strip()))
    return str(re2.escape(folded))


def _compiled(entries: list[str]) -> re2.Set | None:
    if not entries:
        return None
    compiled = re2.Set.SearchSet(_options(SET_MAX_MEM))
    for entry in entries:
        compiled.Add(entry)  # each was checked when it was added
    compiled.Compile()
    return compiled


def _options(max_mem: int) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = max_mem
    options.log_errors = False
    return options


class PatternRefused(ValueError):
    """A pattern that cannot be used; the message says why, for the manager."""


def check_pattern(pattern: str) -> None:
    """Raise :class:`PatternRefused` for a pattern RE2 refuses, one too large, or one that
    matches an empty prompt."""
    try:
        compiled = re2.compile(pattern, _options(PATTERN_MAX_MEM))
    except re2.error:
        raise PatternRefused(
            "is not a pattern this bot can use: it must be RE2 syntax (no look-arounds or "
            "back-references), and not too large"
        ) from None
    if compiled.search("") is not None:
        raise PatternRefused("matches an empty prompt, so it would refuse every prompt")


class Blocklist:
    """Words and patterns compiled into one set; :meth:`blocks` says whether a prompt matches."""

    def __init__(self, words: Iterable[str], patterns: Iterable[str]) -> None:
        entries = [p for p in (word_pattern(word) for word in words) if p is not None]
        expressions = [pattern for pattern in patterns if pattern]
        self.size = len(entries) + len(expressions)
        # Words on the prompt with a space at either end; patterns without, so that ^ and $
        # mean its first and last letter.
        self._words = _compiled(entries)
        self._patterns = _compiled(expressions)

    def blocks(self, prompt: str) -> bool:
        folded = fold(prompt)
        if self._words is not None and self._words.Match(folded) is not None:
            return True
        return self._patterns is not None and self._patterns.Match(folded[1:-1]) is not None


@functools.lru_cache(maxsize=CACHED_SETS)
def matcher(operator_words: tuple[str, ...], words: str, patterns: str) -> Blocklist:
    """The operator's words with a server's (``words`` and ``patterns`` as stored: one a line),
    compiled once. Raises ``re2.error`` for a list too large to compile."""
    return Blocklist((*operator_words, *words.splitlines()), patterns.splitlines())


def fits(operator_words: tuple[str, ...], words: str, patterns: str) -> bool:
    """Whether the list compiles (it is checked before it is stored)."""
    try:
        matcher(operator_words, words, patterns)
    except re2.error:
        return False
    return True
