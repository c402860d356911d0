"""Everything written to Discord for an interaction: replies and refusals, progress and
previews, images fitted to the upload limit and posted.

May import: ``bot.images`` and ``bot.observability``. Never the stores, the request road, the
root or ``cogs``.
"""
