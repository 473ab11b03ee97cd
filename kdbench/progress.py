"""Progress bars for the long loops of a job (training steps, profiling and cache batches, generation).

They go to stderr, which is the job's log file under Snakemake (``results/<name>/logs/...``; follow one with
``tail -f``). On a terminal the bar redraws in place; in a file every redraw is its own line, at most one
every ``LOG_INTERVAL_S`` seconds, so logs stay small and readable. Callers pass ``desc=None`` to get no bar
(the benchmark suite and the tests call the same loops).
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 5.0
TTY_INTERVAL_S = 0.5
tqdm.monitor_interval = 0           # no monitor thread in training processes


class _Lines:
    """A file for tqdm that turns each carriage-return redraw into a line of its own."""

    def __init__(self, stream):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", "utf-8")

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(total: int, desc: str | None, unit: str = "it", initial: int = 0, disable: bool = False) -> tqdm:
    """A tqdm bar on stderr; a disabled one (no output, next to no cost) when ``desc`` is None."""
    stream = sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable or desc is None,
                file=stream if tty else _Lines(stream), mininterval=TTY_INTERVAL_S if tty else LOG_INTERVAL_S,
                dynamic_ncols=tty, ncols=None if tty else 80, smoothing=0.1)


def batch_starts(n: int, batch_size: int, desc: str | None, unit: str = "ex"):
    """``range(0, n, batch_size)`` with a bar that counts the ``n`` items as each batch is done."""
    with bar(n, desc, unit) as items:
        for start in range(0, n, batch_size):
            yield start
            items.update(min(batch_size, n - start))
