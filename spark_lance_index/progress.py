"""Progress a person can watch: a bar in a terminal, a plain line at a bounded rate elsewhere.

Databricks and Airflow capture stderr into a log: there a carriage-return bar becomes one
enormous line, so outside a terminal the job prints one ordinary log line every
`interval` seconds (and at the end) instead.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Optional, TextIO

log = logging.getLogger("spark_lance_index")

DEFAULT_INTERVAL = 30.0  # seconds between plain progress lines outside a terminal


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Renders (done, total) of tasks plus rows, rate and ETA for one phase."""

    def __init__(
        self, label: str, total_tasks: int, total_rows: int = 0, *,
        stream: Optional[TextIO] = None, interval: float = DEFAULT_INTERVAL,
        tty: Optional[bool] = None,
    ):
        self.label, self.total_tasks, self.total_rows = label, total_tasks, total_rows
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.start = time.monotonic()
        self._last_line = float("-inf")  # the first update always prints
        self._last_text = ""

    def line(self, done: int, rows: int) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        parts = [f"{self.label}: {done}/{self.total_tasks} tasks"]
        if self.total_rows:
            rate = rows / elapsed
            parts.append(f"{_human(rows)}/{_human(self.total_rows)} rows")
            parts.append(f"{_human(rate)} rows/s")
            if 0 < rows < self.total_rows and rate > 0:
                parts.append(f"ETA {_duration((self.total_rows - rows) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        return ", ".join(parts)

    def update(self, done: int, rows: int, final: bool = False) -> None:
        text = self.line(done, rows)
        if self.tty:
            width = 24
            filled = int(width * done / max(1, self.total_tasks))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            if final:
                self.stream.write("\n")
            self.stream.flush()
            return
        now = time.monotonic()
        if final or (now - self._last_line >= self.interval and text != self._last_text):
            log.info("%s", text)
            self._last_line, self._last_text = now, text


class Ticker:
    """Polls `read()` -> (tasks done, rows done) on a thread and feeds a Progress."""

    def __init__(self, progress: Progress, read: Callable[[], tuple[int, int]], every: float = 0.5):
        self.progress, self.read, self.every = progress, read, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.progress.update(*self.read())
            except Exception:  # progress must never break the job
                pass

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.progress.update(*self.read(), final=True)
        except Exception:
            pass
