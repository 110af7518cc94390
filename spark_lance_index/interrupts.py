"""Ctrl-C on the command line: end the run with KeyboardInterrupt, never with a broken session.

Python runs a signal handler in the main thread between two bytecodes, which may be in the
middle of a Py4J call (a Spark job's `collect` waits there for minutes). Raising there leaves
that thread's connection to the JVM with an answer still to come, and the next call on it (a
`finally` that unpersists a broadcast, PySpark's own call-site reset) reads an empty line: its
Py4JNetworkError then replaces the KeyboardInterrupt, and the run ended as "failed" (measured: 1
run in 8). So a Ctrl-C that lands inside a Py4J call cancels the session's jobs (the handler is
installed only for a session the command line created) from threads of their own (their own
connections) and lets the call return: the transport turns the
cancelled job's failure into the KeyboardInterrupt (`cancelled_jobs_raise_interrupt`). A call
that returns without a failure gets the interrupt resent once it is out of Py4J, and the commit
phase raises it before it commits (`raise_if_requested`). After 10 s of a JVM that does not
answer, it is raised where it lands. Once the run's cleanup has begun (`closing`), a press only
marks the run interrupted: the cleanup runs to its end, and a run that got that far reports what
it did.

Connect sessions have no Py4J: Ctrl-C is raised where it lands, as Python does. The Python API
never installs this handler (a notebook's Ctrl-C is the notebook's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Optional, Union

from .errors import JobError, SparkStageError

log = logging.getLogger(__name__)

_GIVE_UP_SECONDS = 10.0  # deferred this long: raised where it lands (the JVM is not answering)
_RESEND_SECONDS = 0.5
_STRAGGLER_SECONDS = 0.2  # a resend that crossed the raise arrives within this

_requested = threading.Event()
_deferred_since: Optional[float] = None
_raised_at: Optional[float] = None
_closing = False
_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]
_previous: _Handler = None
_installed = False


def requested() -> bool:
    """True once Ctrl-C was pressed while the command line's handler was installed."""
    return _requested.is_set()


def caused_by_interrupt(error: BaseException) -> bool:
    """A failure after Ctrl-C that is the cancel's: a failed Spark stage, or an error of no
    policy of its own. A refusal, a wrong commit or a changed dataset keeps its own meaning."""
    return _requested.is_set() and (isinstance(error, SparkStageError) or not isinstance(error, JobError))


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


def raise_if_requested() -> None:
    """At a step that must not start after Ctrl-C (a commit): the interrupt, now."""
    if _requested.is_set():
        _raise_interrupt()


def closing() -> None:
    """The run's cleanup begins: no press or resend interrupts it from here on."""
    global _deferred_since, _closing
    _deferred_since, _closing = None, True


def install() -> None:
    """Handle Ctrl-C as above in the main thread (the command line calls it once its session is
    up; `uninstall` restores the handler it replaced)."""
    global _previous, _installed
    if threading.current_thread() is threading.main_thread() and not _installed:
        _previous, _installed = signal.signal(signal.SIGINT, _interrupted), True


def uninstall() -> None:
    """The command is over: the handler it replaced, and no Ctrl-C remembered (a test or a
    notebook may call the command line again in this process)."""
    global _previous, _installed, _deferred_since, _raised_at, _closing
    if _installed and threading.current_thread() is threading.main_thread():
        # None: a handler set outside Python, which cannot be put back; Python's own instead
        signal.signal(signal.SIGINT, signal.default_int_handler if _previous is None else _previous)
    _previous, _installed, _deferred_since, _raised_at, _closing = None, False, None, None, False
    _requested.clear()
    logging.disable(logging.NOTSET)
    threading.excepthook = threading.__excepthook__


def _raise_interrupt() -> None:
    global _deferred_since, _raised_at
    _deferred_since, _raised_at = None, time.monotonic()
    raise KeyboardInterrupt from None


def _interrupted(signum: int, frame: Optional[FrameType]) -> None:
    global _deferred_since
    _requested.set()
    logging.disable(logging.CRITICAL)  # the cancelled tasks' errors are expected, not news
    if _closing:
        return  # the cleanup runs to its end
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
    """Cancel the session's Spark jobs, and again before each resend (a job submitted after the
    first cancel); each cancel in a thread of its own, so that a JVM slow to answer never holds
    the resends back."""
    while _deferred_since is not None:
        threading.Thread(target=_cancel_jobs, name="ctrl-c-cancel", daemon=True).start()
        time.sleep(_RESEND_SECONDS)  # the cancelled job's failure normally raises it first
        if _deferred_since is not None:
            os.kill(os.getpid(), signal.SIGINT)


def _cancel_jobs() -> None:
    from pyspark import SparkContext

    context = SparkContext._active_spark_context  # per process: getActiveSession is per thread
    if context is not None:
        cancel_context_jobs(context)


def cancel_context_jobs(context: Any) -> None:
    """Cancel every job of a classic SparkContext, quietly: the cancelled tasks' errors are
    expected (also `spark.cancel_jobs`)."""
    try:
        context.setLogLevel("OFF")
        context.cancelAllJobs()
    except Exception as e:  # the session may be going down already
        log.debug("cancelling the session's jobs: %s", e)
