"""Ctrl-C on the command line: end the run with KeyboardInterrupt, never with a broken session.

Python runs a signal handler in the main thread between two bytecodes, which may be in the
middle of a Py4J call (a Spark job's `collect` waits there for minutes). Raising there leaves
that thread's connection to the JVM with an answer still to come, and the next call on it (a
`finally` that unpersists a broadcast, PySpark's own call-site reset) reads an empty line: its
Py4JNetworkError then replaces the KeyboardInterrupt, and the run ends as "failed" (measured: 1
run in 8). So a Ctrl-C that lands inside a Py4J call cancels the session's jobs from a thread of
its own (its own connection) and lets the call return: the transport turns the cancelled job's failure
into the KeyboardInterrupt (`cancelled_jobs_raise_interrupt`). A call that returns without a
failure gets the interrupt resent once it is out of Py4J. `requested()` tells the places that
decide a run's outcome that a failure they see is the cancel's.

Connect sessions have no Py4J: Ctrl-C is raised where it lands, as Python does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Optional

log = logging.getLogger(__name__)

# Raised where it lands once the deferred interrupt has waited this long (the JVM is not answering).
_GIVE_UP_SECONDS = 10.0
_RESEND_SECONDS = 0.5
_STRAGGLER_SECONDS = 1.0

_requested = threading.Event()
_deferred_since: Optional[float] = None
_raised_at: Optional[float] = None


def requested() -> bool:
    """True once Ctrl-C was pressed in this process (the command line's handler only)."""
    return _requested.is_set()


@contextlib.contextmanager
def cancelled_jobs_raise_interrupt() -> Iterator[None]:
    """Around a Spark action: after Ctrl-C, its failure is the cancel's, and ends the run as an
    interrupt, not as a failed stage."""
    try:
        yield
    except Exception:
        if _requested.is_set():
            _raise_interrupt()
        raise


def _raise_interrupt() -> None:
    global _deferred_since, _raised_at
    _deferred_since, _raised_at = None, time.monotonic()
    raise KeyboardInterrupt from None


def install() -> None:
    """Handle Ctrl-C as above in the main thread (the command line calls it once its session is
    up; a library user's handler is never replaced)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupted)


def _interrupted(signum: int, frame: Optional[FrameType]) -> None:
    global _deferred_since
    _requested.set()
    logging.disable(logging.CRITICAL)  # the cancelled tasks' errors are expected, not news
    now = time.monotonic()
    if _raised_at is not None and now - _raised_at < _STRAGGLER_SECONDS:
        return  # a resend that crossed the raise: the run is unwinding already
    if _in_py4j_call() and (_deferred_since is None or now - _deferred_since < _GIVE_UP_SECONDS):
        if _deferred_since is None:
            _deferred_since = now
            threading.Thread(target=_cancel_until_raised, name="ctrl-c", daemon=True).start()
        return
    _raise_interrupt()


def _in_py4j_call() -> bool:
    """Whether the main thread is waiting on its Py4J connection: in use, it is out of the
    client's pool of idle connections."""
    from pyspark import SparkContext

    client = getattr(SparkContext._gateway, "_gateway_client", None)
    if client is None or not hasattr(client, "get_thread_connection"):
        return False  # no JVM, or Py4J's one-connection-per-call client
    connection = client.get_thread_connection()
    return connection is not None and connection.socket is not None and connection not in client.deque


def _cancel_until_raised() -> None:
    """Cancel the session's jobs, and again after each resend that found the main thread in a
    Py4J call (a job submitted after the first cancel)."""
    while _deferred_since is not None:
        _cancel_jobs()
        time.sleep(_RESEND_SECONDS)  # the cancelled job's failure normally raises it first
        if _deferred_since is not None:
            os.kill(os.getpid(), signal.SIGINT)


def _cancel_jobs() -> None:
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    try:
        if context is not None:
            context.setLogLevel("OFF")
            context.cancelAllJobs()
    except Exception as e:  # the session may be going down already
        log.debug("cancelling the session's jobs: %s", e)
