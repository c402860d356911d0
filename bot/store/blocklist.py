"""Blocked words and patterns: the operator's ``BLOCKED_WORDS`` and what a server's managers add
with /imagine-settings, folded and compiled once into one RE2 set per list.

Decisions:

- Every prompt and every blocked word is folded the same way before they are compared: Unicode
  NFKC (full-width letters, ligatures, circled and styled letters become plain ones), casefolding,
  accents and other combining marks removed (NFD, then every nonspacing or enclosing mark),
  invisible characters removed (format characters such as zero-width spaces and joiners, the
  soft hyphen, variation selectors, Hangul fillers), then :data:`LOOK_ALIKES`: the Cyrillic and
  Greek letters most used to disguise Latin ones (Cyrillic a, Greek omicron) and a few Latin
  letters with a stroke (o with a stroke), the Latin small capitals, and the letters drawn as
  symbols (negative circled and squared, regional indicators). It is not the whole Unicode
  confusables table (UTS #39), which would need data Python does not ship and folds far more
  (digits into letters, among others); leetspeak (``b4d``) is likewise not folded: a pattern
  catches it (``b[a4@]d``).
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
  that it is compiled once per change, not per request, in a thread (a 10,000-entry list takes
  a fifth of a second): the list then costs an admission microseconds
  (tests/benchmarks/bench_blocklist.py).
"""

from __future__ import annotations

import collections
import functools
import re
import unicodedata
from collections.abc import Iterable

import re2

from bot.i18n import _

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
    "ıłøđħŧƀɨ"
    # Latin small capitals ("fancy text" generators): no decomposition either
    "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ",
    "abeeehhiijkmopqcstyyxwdgabezikvoptuxwilodhtbiabcdefghijklmnoprstuvwyz",
)
# Letters drawn as symbols, with no decomposition (Unicode category So, so separators without
# this): negative circled and negative squared capitals, and the regional indicator letters
# (which pair into flags). Each range is the alphabet from a.
_LETTER_SYMBOLS = ((0x1F150, 0x1F169), (0x1F170, 0x1F189), (0x1F1E6, 0x1F1FF))


# Scripts written without spaces between words: a word with one of their characters matches
# anywhere in the prompt.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]"
)


_SPACES = re.compile(" {2,}")
_ASCII_SEPARATORS = re.compile("[^a-z0-9]+")
_FILLERS = (0x115F, 0x1160, 0x3164, 0xFFA0)  # Hangul fillers: letters, but invisible


def _folded_char(code: int) -> str | None:
    """What one character becomes: None (removed), a space (a separator), a letter (a letter
    drawn as a symbol) or itself."""
    for first, last in _LETTER_SYMBOLS:
        if first <= code <= last:
            return chr(ord("a") + code - first)
    category = unicodedata.category(chr(code))
    if category in ("Mn", "Me", "Cf") or code in _FILLERS:
        return None
    if category[0] not in "LN" and category != "Mc":
        return " "
    return chr(code)


@functools.cache
def _table() -> dict[int, str | None]:
    """One translation of the Basic Multilingual Plane: invisible characters and combining
    marks removed, separators made spaces, look-alikes folded; built once (about 0.1 s)."""
    table: dict[int, str | None] = {}
    for code in range(0x10000):
        folded = _folded_char(code)
        if folded is None or folded == " ":
            table[code] = folded
    table.update({code: chr(folded) for code, folded in LOOK_ALIKES.items()})
    return table


def fold(text: str) -> str:
    """``text`` as it is compared: folded (see the module's docstring), every run of
    separators one space, with a space at either end."""
    if text.isascii():  # most prompts: nothing to normalise but case
        folded = _ASCII_SEPARATORS.sub(" ", text.lower())
    else:
        decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
        folded = decomposed.translate(_table())
        if folded and max(folded) > "\uffff":  # rare (emoji, rare ideographs): one by one
            folded = "".join(
                (_folded_char(ord(char)) or "") if char > "\uffff" else char for char in folded
            )
        folded = _SPACES.sub(" ", folded)
    return f" {folded.strip()} "


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
    """A pattern that cannot be used; the message is the sentence for the manager."""


# The sentences a manager reads (one place, for translation).
NOT_RE2 = _(
    "This pattern is not a pattern this bot can use: it must be RE2 syntax (no look-arounds or "
    "back-references), and not too large."
)
MATCHES_EVERYTHING = _("This pattern matches an empty prompt, so it would refuse every prompt.")


def check_pattern(pattern: str) -> None:
    """Raise :class:`PatternRefused` for a pattern RE2 refuses, one too large, or one that
    matches an empty prompt."""
    try:
        compiled = re2.compile(pattern, _options(PATTERN_MAX_MEM))
    except re2.error:
        raise PatternRefused(NOT_RE2) from None
    if compiled.search("") is not None:
        raise PatternRefused(MATCHES_EVERYTHING)


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
        if self._words is None and self._patterns is None:
            return False  # nothing blocked: nothing to fold
        folded = fold(prompt)
        if self._words is not None and self._words.Match(folded) is not None:
            return True
        return self._patterns is not None and self._patterns.Match(folded[1:-1]) is not None


Key = tuple[tuple[str, ...], str, str]
_compiled_lists: collections.OrderedDict[Key, Blocklist] = collections.OrderedDict()


def cached(operator_words: tuple[str, ...], words: str, patterns: str) -> Blocklist | None:
    """The list compiled already, or None (it is then compiled off the event loop)."""
    key = (operator_words, words, patterns)
    found = _compiled_lists.get(key)
    if found is not None:
        _compiled_lists.move_to_end(key)
    return found


def matcher(operator_words: tuple[str, ...], words: str, patterns: str) -> Blocklist:
    """The operator's words with a server's (``words`` and ``patterns`` as stored: one a line),
    compiled once and kept among the :data:`CACHED_SETS` most recent. Raises ``re2.error`` for
    a list too large to compile."""
    found = cached(operator_words, words, patterns)
    if found is None:
        found = Blocklist((*operator_words, *words.splitlines()), patterns.splitlines())
        _compiled_lists[(operator_words, words, patterns)] = found
        while len(_compiled_lists) > CACHED_SETS:
            _compiled_lists.popitem(last=False)
    return found


def fits(operator_words: tuple[str, ...], words: str, patterns: str) -> bool:
    """Whether the list compiles (it is checked before it is stored)."""
    try:
        matcher(operator_words, words, patterns)
    except re2.error:
        return False
    return True
