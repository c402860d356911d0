"""The tables, as the latest migration leaves them (the migrations are what create them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    false,
    text,
)

# SQLite numbers a row only through an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
OUTCOMES = ("pending", "delivered", "refused", "failed", "cancelled", "abandoned")
MONEY = Numeric(14, 6)  # US dollars, to a millionth: per-image prices have four decimals

metadata = MetaData()

usage_ledger = Table(
    "usage_ledger",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Column("guild_id", BigInteger, nullable=True),
    Column("channel_id", BigInteger, nullable=True),
    Column("member_id", BigInteger, nullable=False),
    # "generate" or "edit" (migration 0004); every earlier row was a generation.
    Column("kind", String(16), nullable=False, server_default="generate"),
    Column("model", String(100), nullable=False),
    Column("size", String(32), nullable=False),
    Column("quality", String(32), nullable=False),
    Column("images_requested", Integer, nullable=False),
    Column("images_delivered", Integer, nullable=False, default=0),
    Column("outcome", String(16), nullable=False),
    Column("request_id", String(100), nullable=True),
    Column("input_text_tokens", Integer, nullable=True),
    Column("input_image_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("estimated_cost", MONEY, nullable=True),
    Column("cost", MONEY, nullable=True),
    # Migration 0006: the lease (ledger_leases) of the process that admitted the row (NULL: a
    # row written before it), and when its request was handed to the image service (NULL: never).
    Column("owner", String(32), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # Migration 0008: where the request was made ("guild", "bot_dm" or "private_channel") and
    # which install authorized it ("guild" or "user"). A request outside every server that
    # installed the bot is the member's personal scope: its guild_id is NULL.
    Column("context", String(16), nullable=False, server_default="guild"),
    Column("installation", String(16), nullable=False, server_default="guild"),
    CheckConstraint(
        "outcome IN ('pending', 'delivered', 'refused', 'failed', 'cancelled', 'abandoned')",
        name="usage_ledger_outcome",
    ),
    Index("usage_ledger_requested_at", "requested_at"),
    Index("usage_ledger_guild_requested_at", "guild_id", "requested_at"),
    Index("usage_ledger_member_requested_at", "member_id", "requested_at"),
    Index(
        "usage_ledger_pending_owner",
        "owner",
        postgresql_where=text("outcome = 'pending'"),
        sqlite_where=text("outcome = 'pending'"),
    ),
)

# One row per running bot process (migration 0006): a row it admitted stays its own while its
# lease has not expired; past that, another process settles the row as abandoned.
ledger_leases = Table(
    "ledger_leases",
    metadata,
    Column("owner", String(32), primary_key=True),
    # Seconds since the epoch on the database's clock: every process reads the same clock.
    Column("expires_at", Double, nullable=False),
    Column("process", String(200), nullable=False),  # host and pid, for the operator's log
)

server_settings = Table(
    "server_settings",
    metadata,
    Column("guild_id", BigInteger, primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("changed_by", BigInteger, nullable=False),
)

settings_changes = Table(
    "settings_changes",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("name", String(32), nullable=False),
    Column("old_value", Text, nullable=True),  # None: it was the default
    Column("new_value", Text, nullable=True),  # None: reset to the default
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("changed_by", BigInteger, nullable=False),
    Index("settings_changes_guild_changed_at", "guild_id", "changed_at"),
)

# What a posted set of images was made from, so that its buttons can ask again after a restart:
# a custom_id holds 100 characters, a prompt up to 32000. One row per request that got buttons.
generation_state = Table(
    "generation_state",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("guild_id", BigInteger, nullable=True),
    Column("channel_id", BigInteger, nullable=True),
    Column("member_id", BigInteger, nullable=False),  # who asked: may delete the images
    Column("model", String(100), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("size", String(32), nullable=False),
    Column("quality", String(100), nullable=False),
    Column("image_count", Integer, nullable=False),
    Column("options", Text, nullable=False),  # JSON: the optional fields, as sent
    # JSON list of the ids of the messages posted after the first (migration 0005); NULL: none
    Column("followup_ids", Text, nullable=True),
    # Migration 0007 (NULL: not known, for rows written before): the first message (its jump
    # link), the request's row in usage_ledger (its cost), the saved request it was made from
    # and how (the button's action, or the menu), and whether it was posted privately.
    Column("message_id", BigInteger, nullable=True),
    Column("ledger_id", BigInteger, nullable=True),
    Column("parent_key", BigInteger, nullable=True),
    Column("origin", String(32), nullable=True),
    Column("private", Boolean, nullable=False, server_default=false()),
    Index("generation_state_member_guild_id", "member_id", "guild_id", "id"),
    Index("generation_state_parent_key", "parent_key"),
)
