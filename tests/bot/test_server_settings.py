"""Server settings in the database: two bot processes sharing it see each other's changes within
the cache's few seconds; what a manager types is read or refused."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.images import load_catalog
from bot.store.budgets import Budget, Period
from bot.store.db import migrate, open_engine
from bot.store.server_settings import (
    CACHE_SECONDS,
    Rules,
    ServerSettings,
    Setting,
    SettingRefused,
    SettingsStore,
    parse_tier,
)

SERVER = 987_654_321_098_765_432
MANAGER = 1_234_567_890_123_456_789


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def returning(engine: AsyncEngine) -> Callable[[], AsyncEngine]:
    return lambda: engine


async def test_another_process_sees_a_change_once_its_cache_expires(database_url: str) -> None:
    engines = [open_engine(database_url) for _ in range(2)]  # two bot processes
    await migrate(engines[0])
    clock = Clock()
    here, there = (SettingsStore(returning(engine), clock=clock) for engine in engines)
    try:
        assert (await there.get(SERVER)).max_images is None  # read, and cached there
        await here.change(SERVER, Setting.MAX_IMAGES, "2", by=MANAGER)

        assert (await here.get(SERVER)).max_images == 2  # the process that made it: at once
        assert (await there.get(SERVER)).max_images is None  # still within its cache
        clock.now += CACHE_SECONDS
        assert (await there.get(SERVER)).max_images == 2
        assert (await there.last_changes(SERVER))["max-images"].changed_by == MANAGER
    finally:
        for engine in engines:
            await engine.dispose()


async def test_requests_arriving_together_share_one_read_of_the_settings(
    database_url: str,
) -> None:
    engine = open_engine(database_url)
    await migrate(engine)
    await SettingsStore(returning(engine)).change(SERVER, Setting.MAX_IMAGES, "3", by=MANAGER)
    reads: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _k, statement, *_: (
            reads.append(statement) if "server_settings" in statement else None
        ),
    )
    store = SettingsStore(returning(engine))
    try:
        answers = await asyncio.gather(*(store.get(SERVER) for _ in range(20)))
    finally:
        await engine.dispose()
    assert [answer.max_images for answer in answers] == [3] * 20
    assert len(reads) == 1


async def test_two_managers_changing_a_default_setting_at_once_both_succeed(
    database_url: str,
) -> None:
    engines = [open_engine(database_url) for _ in range(2)]  # two bot processes
    await migrate(engines[0])
    stores = [SettingsStore(returning(engine)) for engine in engines]
    try:
        # No row yet for the setting: both would insert it, without the server's lock.
        for _ in range(5):
            await asyncio.gather(
                stores[0].change(SERVER, Setting.MAX_IMAGES, "2", by=MANAGER),
                stores[1].change(SERVER, Setting.MAX_IMAGES, "3", by=MANAGER + 1),
            )
            await stores[0].change(SERVER, Setting.MAX_IMAGES, None, by=MANAGER)
    finally:
        for engine in engines:
            await engine.dispose()


def rules() -> Rules:
    return Rules(
        offered=("gpt-image-1", "dall-e-2", "dall-e-3"),
        default_model="gpt-image-1",
        catalog=load_catalog(),
        max_images=4,
        default_member_budget=(Budget(Decimal(2), Period.DAY),),
    )


def test_what_a_manager_types_is_stored_normalised() -> None:
    chosen = ServerSettings()
    assert rules().parse(Setting.MODELS, "dall-e-2  dall-e-2,gpt-image-1", chosen) == (
        "dall-e-2,gpt-image-1"
    )
    assert rules().parse(Setting.MEMBER_BUDGET, "$2/day; 40 images/month", chosen) == (
        "$2.00/day;40 images/month"
    )
    assert rules().parse(Setting.SERVER_BUDGET, "None", chosen) == "none"
    # The lowest of each unit and period is what holds, and all that is kept of a long paste.
    pasted = "$3/day;$1/month;" * 300 + "$2/day"
    assert rules().parse(Setting.SERVER_BUDGET, pasted, chosen) == "$2.00/day;$1.00/month"
    assert rules().parse(Setting.CHANNELS, "<#123>, 456", chosen) == "123,456"


def test_a_servers_choices_narrow_what_the_operator_offers() -> None:
    chosen = ServerSettings(
        {"models": "dall-e-2,dall-e-3", "member-budget": "none", "max-images": "9"}
    )
    assert rules().allowed(chosen) == ("dall-e-2", "dall-e-3")
    assert rules().default(chosen) == "dall-e-2"  # the operator's default is not allowed here
    assert rules().member_budget(chosen) == (Budget(Decimal(2), Period.DAY),)  # the ceiling
    assert rules().cap(chosen) == 4  # never above MAX_IMAGES_PER_REQUEST
    gone = ServerSettings({"models": "midjourney"})  # no longer offered: the operator's choice
    assert rules().allowed(gone) == rules().offered


def test_a_quality_no_allowed_model_takes_is_refused() -> None:
    chosen = ServerSettings({"models": "dall-e-2"})
    with pytest.raises(SettingRefused, match="the allowed models take: standard"):
        rules().parse(Setting.DEFAULT_QUALITY, "high", chosen)


def test_a_servers_budget_holds_beside_the_operators_ceiling() -> None:
    def budget(text: str, *, servers_may_raise_budgets: bool = False) -> str:
        chosen = ServerSettings({"member-budget": text})
        rule = dataclasses.replace(rules(), servers_may_raise_budgets=servers_may_raise_budgets)
        return ";".join(map(str, rule.member_budget(chosen)))

    # One unit and period: the lower amount; another period or unit: both hold.
    assert budget("$5/day") == "$2.00/day"
    assert budget("$1/day") == "$1.00/day"
    assert budget("$20/month;10 images/day;$3/day") == "$2.00/day;$20.00/month;10 images/day"
    assert budget("none") == "$2.00/day"
    # Where the operator lets servers raise budgets, a server's replaces the operator's.
    assert budget("$5/day", servers_may_raise_budgets=True) == "$5.00/day"
    assert budget("none", servers_may_raise_budgets=True) == ""


def test_the_most_generous_of_a_members_tiers_applies_per_dimension() -> None:
    """Per dimension, each tier's own value or the server's member budget; the highest wins and
    no budget beats any amount; the operator's ceiling ($2/day here) over all of it."""

    def tier(
        tiers: dict[int, str],
        *roles: int,
        servers_may_exempt_roles: bool = False,
        servers_may_raise_budgets: bool = False,
    ) -> str:
        values = {"member-budget": "1 images/day;$1/month"}
        values.update({f"tier:{role}": value for role, value in tiers.items()})
        chosen = ServerSettings(values)
        rule = dataclasses.replace(
            rules(),
            servers_may_exempt_roles=servers_may_exempt_roles,
            servers_may_raise_budgets=servers_may_raise_budgets,
        )
        applied = rule.member_tier(chosen, MANAGER, roles)
        flags = ["exempt"] * applied.exempt + ["barred"] * applied.barred
        return ";".join([*map(str, applied.budgets), *flags])

    tiers = {1: "3 images/day", 2: "2 images/day;$5/month;exempt", 3: "$9/day;barred"}
    assert tier(tiers) == "$2.00/day;1 image/day;$1.00/month"  # no tier: the server's
    assert tier(tiers, 1, 2) == "$2.00/day;3 images/day;$5.00/month"
    assert tier(tiers, 1, 2, servers_may_exempt_roles=True).endswith(";exempt")
    assert tier(tiers, 3) == "$2.00/day;1 image/day;$1.00/month;barred"  # the ceiling holds
    # Tier 1 states no dollars a day and the server has none of its own: no budget, which is
    # more generous than tier 3's $9 (where the operator lets servers raise budgets).
    assert tier(tiers, 1, 3, servers_may_raise_budgets=True) == ("3 images/day;$1.00/month;barred")
    # A tier of only a flag has no budget of its own: the server's, dimension by dimension.
    assert tier({4: "exempt", 5: "$0.50/day"}, 4, 5) == "$2.00/day;1 image/day;$1.00/month"
    assert tier({5: "10 images/month"}, 5) == "$2.00/day;1 image/day;$1.00/month;10 images/month"
    with pytest.raises(SettingRefused, match="A tier must be budgets such as"):
        parse_tier("$5/fortnight")
