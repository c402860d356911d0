"""Fitting what the bot writes to Discord's limits: the guard behind every answer."""

from __future__ import annotations

import discord

from bot.discord_out.replies import CONTENT_MAX, EMBED_TOTAL_MAX, clip, fit_content, fit_embed


def test_a_long_answer_is_clipped_to_a_message_and_says_so() -> None:
    text = fit_content("word " * 1000)
    assert len(text) == CONTENT_MAX and text.endswith("…")
    assert fit_content("short") == "short"


def test_a_cut_never_leaves_half_a_mention() -> None:
    mentions = " ".join(f"<#{1456074443980800000 + n}>" for n in range(100))
    for limit in range(40, 120):
        clipped = clip(mentions, limit)
        assert len(clipped) <= limit
        assert clipped.count("<") == clipped.count(">"), clipped


def test_a_cut_never_leaves_half_a_custom_emoji() -> None:
    """A prompt typed with a server's emoji holds its markup, up to 57 characters for an
    animated one with a 32-character name: half of it would show as raw text."""
    emoji = f"<a:{'party_parrot_but_much_longer_x32'[:32]}:1456074443980800012>"
    prompt = "a cat " * 10 + emoji + " dancing"
    for limit in range(61, 61 + len(emoji)):
        clipped = clip(prompt, limit)
        assert len(clipped) <= limit
        assert clipped.count("<") == clipped.count(">"), clipped


def test_an_embed_over_discords_limits_is_brought_within_them() -> None:
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    embed.set_author(name="a" * 300)
    embed.set_footer(text="f" * 3000)
    for n in range(30):
        embed.add_field(name=f"field {n}" * 40, value="v" * 2000)

    fit_embed(embed)

    assert len(embed.title or "") <= 256 and len(embed.description or "") <= 4096
    assert len(embed.author.name or "") <= 256 and len(embed.footer.text or "") <= 2048
    assert len(embed.fields) <= 25
    assert all(len(f.name or "") <= 256 and len(f.value or "") <= 1024 for f in embed.fields)
    assert len(embed) <= EMBED_TOTAL_MAX


def test_an_embed_too_long_in_all_loses_its_last_fields_first() -> None:
    embed = discord.Embed(description="d" * 4000)
    for n in range(10):
        embed.add_field(name=f"field {n}", value="v" * 1000)

    fit_embed(embed)

    assert len(embed) <= EMBED_TOTAL_MAX
    assert embed.description == "d" * 4000
    assert [f.name for f in embed.fields] == ["field 0"]
