"""Where an interaction happens, and so whose rules and budgets apply to it.

A member may use the bot in a server that installed it (a guild install), or, having installed it
to their own account (a user install), in the bot's DM, a group DM, a DM with someone else, or a
server that never installed it. Discord says which on every interaction: ``context`` (guild, bot
DM, private channel) and ``authorizing_integration_owners`` (which installs authorized it: ``0``,
the server's id where that server installed the bot; ``1``, the member's id for their own).

Decisions:

- A request is the **server's** only where that server installed the bot
  (``interaction.is_guild_integration()``, or the bot is a member of it: Discord names only the
  member's install where the server's cannot authorize the command, such as its integration
  permissions keeping it from them, or a press under images their install posted before the
  server added the bot, and a server's bar, blocklist, moderation check and budgets must not be
  left behind by that): its settings, its budgets, its /usage. Everywhere else
  it is the member's **personal** scope (``guild_id`` None here): no server settings, the
  operator's MEMBER_BUDGET as the member's own window for personal spending, never a server's
  budget; USER_BUDGET and TOTAL_BUDGET count it as everything else. A server that once
  installed the bot and removed it gets nothing of a user install used there.
- An interaction that names no installation at all (an older gateway, a test double) is taken
  as a guild install in a server and as the bot's DM elsewhere: how the bot was used before user
  installs existed.
- Outside a server's install the bot writes **only through the interaction** (its response,
  follow-ups and their webhook edits and deletes): it is not in that server or group DM, and the
  bot's own routes to a channel would be refused. Discord allows such an interaction at most
  :data:`FOLLOW_UPS_OUTSIDE_SERVERS` follow-up messages.
- Where a server turned off external apps for the member (they lack ``USE_EXTERNAL_APPS`` in the
  channel, in the resolved ``permissions`` Discord sends for them), Discord shows a user-installed
  app's answers to that member alone: :attr:`Where.shown_to_member_only` says so, and the answer
  tells the member rather than letting them think it is public. The member's permission is the
  rule Discord documents for it ("When disabled, users will still be allowed to use their apps
  but the responses will be ephemeral"); ``app_permissions`` cannot tell it (it is @everyone's,
  limited to what a response may use). That one says whether the server lets apps attach files
  in the channel: where it does not, a request is refused before anything is paid for.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import discord

# The most follow-up messages Discord accepts for one interaction of a user-installed app.
FOLLOW_UPS_OUTSIDE_SERVERS = 5

GUILD_INSTALL = 0
USER_INSTALL = 1


class Context(StrEnum):
    """Where the interaction was used (Discord's interaction context types 0, 1, 2)."""

    GUILD = "guild"
    BOT_DM = "bot_dm"
    PRIVATE_CHANNEL = "private_channel"  # a group DM, or a DM between other users


class Installation(StrEnum):
    """Which install of the bot authorized the interaction."""

    GUILD = "guild"
    USER = "user"


class Place(StrEnum):
    """What metrics and log lines call a place: server, DM and user-install use apart."""

    SERVER = "server"  # a server that installed the bot
    DM = "dm"  # the bot's DM
    GROUP_DM = "group_dm"  # a group DM or someone else's DM (user install)
    USER_INSTALL = "user_install"  # a server that did not install the bot (user install)


@dataclass(frozen=True, slots=True)
class Where:
    context: Context
    installation: Installation
    # The server whose settings and budgets apply: None for the member's personal scope.
    guild_id: int | None
    # Discord shows the bot's answers here to the member alone (external apps are off for them).
    shown_to_member_only: bool = False
    # Whether the bot may attach files to its answers here (a server can deny it to apps).
    can_attach: bool = True

    @property
    def personal(self) -> bool:
        return self.guild_id is None

    @property
    def follow_up_limit(self) -> int | None:
        """The most follow-ups one interaction may send here; None: as many as needed. An
        interaction only the member's install authorized keeps Discord's limit in a server that
        has the bot too: its follow-ups go through that interaction all the same."""
        if self.personal or self.installation is Installation.USER:
            return FOLLOW_UPS_OUTSIDE_SERVERS
        return None

    @property
    def place(self) -> Place:
        if not self.personal:
            return Place.SERVER
        if self.context is Context.GUILD:
            return Place.USER_INSTALL
        return Place.DM if self.context is Context.BOT_DM else Place.GROUP_DM


def where(interaction: discord.Interaction) -> Where:
    """Where ``interaction`` happens (see the module's decisions)."""
    owners = interaction._integration_owners  # discord.py's parse of authorizing_integration_owners
    context = _context(interaction)
    if not owners:  # no installation named: as before user installs
        return Where(context, Installation.GUILD, interaction.guild_id)
    if interaction.guild_id is not None and interaction.is_guild_integration():
        return Where(context, Installation.GUILD, interaction.guild_id)
    installation = Installation.USER if USER_INSTALL in owners else Installation.GUILD
    in_a_server = context is Context.GUILD
    hidden = (
        in_a_server
        and installation is Installation.USER
        and not interaction.permissions.use_external_apps
    )
    # In a server without the bot, what an app may do is @everyone's there (limited to what a
    # response may use): a channel that denies attaching files would refuse every image.
    attach = not in_a_server or interaction.app_permissions.attach_files
    # A server the bot is in installed it, whichever install Discord says authorized this one.
    guild_id = interaction.guild_id if _bot_is_in(interaction) else None
    return Where(context, installation, guild_id, shown_to_member_only=hidden, can_attach=attach)


def _bot_is_in(interaction: discord.Interaction) -> bool:
    """Whether the bot is a member of the interaction's server (in its cache of servers)."""
    guild_id = interaction.guild_id
    return guild_id is not None and interaction.client.get_guild(guild_id) is not None


def _context(interaction: discord.Interaction) -> Context:
    flags = interaction.context
    if flags.private_channel:
        return Context.PRIVATE_CHANNEL
    if flags.dm_channel:
        return Context.BOT_DM
    if flags.guild or interaction.guild_id is not None:
        return Context.GUILD
    return Context.BOT_DM
