"""One decorator times every phase and logs its start and end."""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Optional, TypeVar

log = logging.getLogger("spark_lance_index")

F = TypeVar("F", bound=Callable)

_current: contextvars.ContextVar[Optional[dict[str, float]]] = contextvars.ContextVar(
    "phase_timings", default=None
)


class PhaseClock:
    """Collects the seconds of each phase run inside `with PhaseClock() as clock:`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._token: Optional[contextvars.Token[Optional[dict[str, float]]]] = None

    def __enter__(self) -> PhaseClock:
        self._token = _current.set(self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)


def phase(name: str) -> Callable[[F], F]:
    """Decorate a pipeline phase: log it, time it, record the time on the current clock."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            log.info("%s: started", name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                timings = _current.get()
                if timings is not None:
                    timings[name] = timings.get(name, 0.0) + seconds
                log.info("%s: %.2f s", name, seconds)

        return timed  # type: ignore[return-value]

    return wrap


def record_seconds(name: str, seconds: float) -> None:
    """Put a duration measured elsewhere (a thread's) on the current clock."""
    timings = _current.get()
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + seconds
