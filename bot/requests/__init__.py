"""The road every command shares: a member's interaction in, a settled ledger row out.

Owns admission (limits, budgets, a server's rules, the ledger row written before anything is
spent), one generation's life (queue, processing slots, the engine, posting, settlement), edits,
saved requests and the buttons under posted images, the Info cards, Send to DM, /history and
/show (what a member made, found again from the saved requests and Discord's own messages).

May import: ``bot.config``, ``bot.discord_out``, ``bot.store``, ``bot.images``,
``bot.observability``. Never ``bot.app``, ``bot.__main__`` or ``cogs``.
"""
