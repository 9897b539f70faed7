"""Progress for long steps: an elapsed-seconds ticker on a terminal, plain start and end lines in logs.

Converting a large model or quantizing it under a budget can take a minute with
nothing to print; on a terminal the current step's line counts the seconds, and
in a log (not a terminal) the step gets one line when it starts and one when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

#: where a step's lines go (print, click.echo, a log): the one definition every module imports
Echo = Callable[[str], None]


def _live(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


@contextlib.contextmanager
def step(echo: Echo, label: str, stream=None, interval_s: float = 0.5) -> Iterator[None]:
    """Run a step under ``label``: on a terminal (``stream``, default stderr) a ticker redraws
    '<label> ... 12 s' in place until the step ends; otherwise ``echo`` prints '<label> ...' once.
    The step's own result lines are printed by the caller after it."""
    stream = stream or sys.stderr
    if not _live(stream):
        echo(f"{label} ...")
        yield
        return
    done = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not done.wait(interval_s):
            stream.write(f"\r{label} ... {time.perf_counter() - start:.0f} s")
            stream.flush()

    ticker: threading.Thread | None = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        stream.write("\r" + " " * (len(label) + 16) + "\r")
        stream.flush()
