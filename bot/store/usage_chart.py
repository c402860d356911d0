"""The chart of a server's last 30 days for /usage: drawn with matplotlib's Agg renderer, in a
worker thread (a figure takes tens of milliseconds; the event loop must not wait on it)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from bot.store.usage import Day


def render_chart(days: Sequence[Day]) -> bytes:
    """A PNG: the known cost per day as bars, the images delivered per day as a line."""
    # Imported here: matplotlib takes a while to import, and only this chart needs it. The
    # object-oriented API with the Agg canvas, not pyplot, whose global state is not for threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    cost_axes = figure.add_subplot()
    labels = [day.day.strftime("%d %b") for day in days]
    positions = range(len(days))
    cost_axes.bar(positions, [float(day.cost) for day in days], color="#5865F2", label="cost ($)")
    cost_axes.set_ylabel("cost (US$)")
    cost_axes.set_xticks(list(positions)[::5], labels[::5])
    images_axes = cost_axes.twinx()
    images_axes.plot(
        positions, [day.images for day in days], color="#EB459E", marker="o", markersize=3
    )
    images_axes.set_ylabel("images delivered")
    images_axes.set_ylim(bottom=0)
    cost_axes.set_title(f"Last {len(days)} days (UTC): cost bars, images line")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
