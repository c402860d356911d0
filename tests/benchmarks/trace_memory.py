"""Where a benchmarked process's Python memory goes at its peak: ``bench_scale --tracemalloc``.

Started by the benchmark's launcher before the subject's module runs. A daemon thread reads the
traced total every half second and takes a snapshot whenever it is a quarter above the last one
taken (and 5 s after it at the soonest: a snapshot of a large heap holds the interpreter for a
while), so the last snapshot is within a quarter of the peak, or is the last growth; at exit
(the subject stops on SIGTERM and unwinds), the peak and the largest allocation sites of that
snapshot are written to a file.
What tracemalloc cannot see (C libraries' own buffers: OpenSSL, zlib, Pillow's image memory) and
what the C allocator keeps after a free is the difference between RSS and these figures.
"""

from __future__ import annotations

import atexit
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 1  # the allocating line: more frames slow the subject down several times
GROWTH = 1.25
SPACING = 5.0  # seconds
TOP = 15


def start(report: str) -> None:
    tracemalloc.start(FRAMES)
    kept: list[tracemalloc.Snapshot] = []
    largest = [0]

    def sample() -> None:
        taken_at = 0.0
        while True:
            time.sleep(0.5)
            current, _ = tracemalloc.get_traced_memory()
            if current > largest[0] * GROWTH and time.monotonic() - taken_at > SPACING:
                kept[:] = [tracemalloc.take_snapshot()]
                largest[0] = current
                taken_at = time.monotonic()

    def write() -> None:
        _, peak = tracemalloc.get_traced_memory()
        lines = [f"traced peak {peak / 2**20:.1f} MiB; snapshot at {largest[0] / 2**20:.1f} MiB"]
        if kept:
            snapshot = kept[0].filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            for stat in snapshot.statistics("lineno")[:TOP]:
                frames = " <- ".join(
                    f"{Path(frame.filename).name}:{frame.lineno}" for frame in stat.traceback
                )
                lines.append(f"{stat.size / 2**20:8.1f} MiB {stat.count:7d} blocks  {frames}")
        Path(report).write_text("\n".join(lines) + "\n")

    threading.Thread(target=sample, name="trace-memory", daemon=True).start()
    atexit.register(write)
