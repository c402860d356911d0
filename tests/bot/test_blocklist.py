"""Blocked words and patterns: how prompts are folded, where words match, which patterns are
refused when added, and that a pattern that would backtrack for minutes in Python's ``re`` is
answered at once (RE2 is linear)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.images import load_catalog
from bot.store.blocklist import Blocklist, PatternRefused, check_pattern, fold, matcher
from bot.store.server_settings import (
    ADD,
    BLOCKLIST_MOST,
    REMOVE,
    Rules,
    ServerSettings,
    Setting,
    SettingRefused,
)


@pytest.mark.parametrize(
    ("prompt", "folded"),
    [
        ("A Bad, bad WORD!", " a bad bad word "),
        ("\uff42\uff41\uff44", " bad "),  # full-width
        ("b\u200bad b\u2060ad b\u00adad b\ufe0fad", " bad bad bad bad "),  # invisible characters
        ("b\u00e0d ba\u0301d", " bad bad "),  # accents, composed and combining
        ("b\u0430d \u0432\u0430d", " bad bad "),  # Cyrillic look-alikes
        ("\U0001d41b\U0001d41a\U0001d41d", " bad "),  # mathematical bold
        ("\ufb01re", " fire "),  # a ligature
        ("STRASSE Stra\u00dfe", " strasse strasse "),  # casefolding
        ("x\U0001f600y", " x y "),  # an emoji separates
        ("\u200b", "  "),
        ("\ua730\u026a\u0280\u1d07", " fire "),  # small capitals
        (
            "\U0001f175\U0001f158\U0001f1f7\U0001f174",
            " fire ",
        ),  # negative squared, circled; regional
    ],
)
def test_prompts_are_folded(prompt: str, folded: str) -> None:
    assert fold(prompt) == folded


def test_words_match_on_word_boundaries_and_phrases_across_punctuation() -> None:
    listed = Blocklist(["cat", "blood moon", "猫", "ไก่"], [])
    assert listed.blocks("a Cat.")
    assert not listed.blocks("a catalogue of concatenated things")
    assert listed.blocks("the blood...moon rises") and listed.blocks("BLOOD\tMOON")
    assert not listed.blocks("bloodmoon")
    # Scripts without spaces between words: anywhere.
    assert listed.blocks("一只猫在雪地里") and listed.blocks("ข้าวผัดไก่")


def test_patterns_run_on_the_folded_prompt() -> None:
    listed = Blocklist([], [r"b[a4@]d\s*guy", "^start", "end$", "f ?i ?r ?e"])
    assert listed.blocks("f.i.r.e") and listed.blocks("F I R E") and listed.blocks("fire")
    assert listed.blocks("a B4D  Guy") and listed.blocks("a bäd guy")
    assert listed.blocks("START here") and listed.blocks("the very END.")
    assert not listed.blocks("restart") and not listed.blocks("endless")


def test_a_pattern_that_backtracks_in_python_re_is_answered_at_once() -> None:
    listed = Blocklist([], ["(a+)+$", "(x+x+)+y"])
    assert not listed.blocks("a" * 30 + "b")  # minutes in Python's re
    assert not listed.blocks("x" * 5000)
    assert listed.blocks("a" * 30)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(?=x)", "RE2 syntax"),
        (r"(a)\1", "RE2 syntax"),
        ("((a)", "RE2 syntax"),
        ("x{1000}{1000}", "not too large"),
        ("a*", "empty prompt"),
        ("|x", "empty prompt"),
    ],
)
def test_a_pattern_re2_refuses_or_one_that_matches_everything_is_refused(
    pattern: str, why: str
) -> None:
    with pytest.raises(PatternRefused, match=why):
        check_pattern(pattern)


def test_a_list_is_compiled_once() -> None:
    first = matcher(("dragon",), "fire\nice", "kn[i1]ght")
    assert matcher(("dragon",), "fire\nice", "kn[i1]ght") is first
    assert first.size == 4
    assert first.blocks("ICE") and first.blocks("kn1ght") and not first.blocks("a night")


def test_a_servers_list_is_bounded_and_edited_entry_by_entry() -> None:
    rules = Rules(
        offered=("dall-e-2",), default_model="dall-e-2", catalog=load_catalog(), max_images=4,
        blocked_words=("dragon",),
    )  # fmt: skip
    full = ServerSettings({"blocked-words": "\n".join(f"w{n}" for n in range(BLOCKLIST_MOST))})
    with pytest.raises(SettingRefused, match="at most 10,000 words and patterns"):
        rules.parse(Setting.BLOCKED_WORDS, f"{ADD}one more", full)
    assert rules.parse(Setting.BLOCKED_WORDS, f"{REMOVE}w1, w2", full).count("\n") == 9997
    some = ServerSettings({"blocked-words": "fire"})
    assert rules.parse(Setting.BLOCKED_WORDS, f"{ADD} ice , fire,,Blood moon", some) == (
        "fire\nice\nBlood moon"
    )
    with pytest.raises(SettingRefused, match="'!!!' has no letters or digits"):
        rules.parse(Setting.BLOCKED_WORDS, f"{ADD}!!!", some)
    with pytest.raises(SettingRefused, match="each at most 100 characters"):
        rules.parse(Setting.BLOCKED_WORDS, f"{ADD}{'x' * 101}", some)
    with pytest.raises(SettingRefused, match="This pattern is not a pattern this bot can use"):
        rules.parse(Setting.BLOCKED_PATTERNS, f"{ADD}(?<=x)y", some)
    assert rules.parse(Setting.BLOCKED_PATTERNS, f"{ADD}kn[i1]ght, sir", some) == "kn[i1]ght, sir"
    assert rules.blocklist(some).blocks("DRAGON") and rules.blocklist(some).blocks("fire")


INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\ufe0f"]
ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0327", "\u0303"]


@st.composite
def disguised(draw: st.DrawFn, word: str) -> str:
    """``word`` as an evader might write it: any case, full-width letters, accents and
    invisible characters anywhere, Cyrillic look-alikes."""
    out = []
    for letter in word:
        char = letter.upper() if draw(st.booleans()) else letter
        look_alike = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "c": "\u0441", "p": "\u0440"}
        if letter in look_alike and draw(st.booleans()):
            char = look_alike[letter]
        elif draw(st.booleans()):
            char = chr(ord(char) + 0xFEE0)  # full-width
        out.append(char + draw(st.sampled_from(["", *ACCENTS])))
        out.append(draw(st.sampled_from(["", *INVISIBLE])))
    return "".join(out)


@given(data=st.data(), word=st.sampled_from(["scope", "peace", "cobra"]))
@settings(max_examples=200, deadline=None)
def test_disguised_words_are_caught(data: st.DataObject, word: str) -> None:
    listed = matcher((), "scope\npeace\ncobra", "")
    prompt = f"a {data.draw(disguised(word))}, at dusk"
    assert listed.blocks(prompt), repr(prompt)
