"""The road every command shares: a member's interaction in, a settled ledger row out.

Owns admission (limits, budgets, a server's rules, the ledger row written before anything is
spent), one generation's life (queue, processing slots, the engine, posting, settlement), edits,
saved requests and the buttons under posted images.

May import: ``bot.config``, ``bot.discord_out``, ``bot.store``, ``bot.images``,
``bot.observability``. Never ``bot.app``, ``bot.__main__`` or ``cogs``.
"""
