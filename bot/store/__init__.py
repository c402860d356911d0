"""What is counted and kept: the ledger, budgets, usage reports, each server's settings, rate
limits, the pseudonyms sent upstream, and the database (``db/``: schema and migrations).

May import: ``bot.images`` (prices and the catalog) and ``bot.observability``. Never Discord
output, the request road, the root or ``cogs``.
"""
