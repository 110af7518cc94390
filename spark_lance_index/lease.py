"""One run of a job at a time, on local disk and on object stores alike: the lease.

An object store offers no create-if-absent through pyarrow, and a check-then-write lease lets
two runs both hold it when one write is delayed. So no file is ever contended: each run writes
a file of its own, `lease/<owner>.json`, and then lists the folder. A run holds the job when its
listing, made after its own write had landed, shows no other live run; otherwise it deletes its
file and stops. Two runs can never both win: whichever listed second saw the other's file
(S3, GCS, Azure and local disks list what was written, strongly consistent). Two that start
together may both back off; a rerun then goes through.

A winner rewrites its file as `holding`, and every HEARTBEAT_SECONDS after that. A run is live
while its file is younger than LEASE_TIMEOUT, measured on the store's clock (its modification
time against that of a file the reader just wrote, so no two hosts' clocks are compared), and,
when it ran on this host in this PID namespace, while its process exists. A run that has not refreshed its file for
half of LEASE_TIMEOUT stops itself (a long pause, a store it cannot reach) before anyone else
may take the job over.

Spark tasks that write (segment builds, merges) hold `lease/<owner>.task-<id>.json` while they
run: a run whose driver is gone is still live while its tasks run (a killed Spark Connect client
leaves its tasks running on the server), and a task starts only while its run holds the job, so
tasks of a run that lost the job, or whose driver stopped refreshing its file, stop before
writing.

Files that cannot be read (no run of this job writes a partial file: local writes are renamed
into place, object-store writes are atomic) are never a live run: they are reported and removed
with the dead runs' files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Optional

from .errors import JobBusyError, JobError
from .storage import Files

log = logging.getLogger("spark_lance_index")

FOLDER = "lease"
LEGACY = "lease.json"  # written by releases before 2026-12: one contended file
HEARTBEAT_SECONDS = 10.0
LEASE_TIMEOUT = 60.0
FUTURE_SKEW = 300.0  # a file written further in the future than this (store clock) is no run's


def _pid_namespace() -> str:
    """Processes are asked about only within one PID namespace (containers may share a host name)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


class LeaseLostError(JobBusyError):
    """This run no longer holds its job (another run took it over): it stops without writing."""


@dataclass(frozen=True)
class Entry:
    """One file of the lease folder: whose, written when (store clock), and what it says."""

    name: str
    owner: str
    mtime: float
    record: Optional[dict]  # None: unreadable
    task: bool = False

    def alive(self, now: float, ask_os: bool = True) -> bool:
        """Written less than LEASE_TIMEOUT ago (a time far in the future is no run's: a copied
        or restored file), and, when `ask_os` and the writer ran on this host in this PID
        namespace, its process still exists."""
        if self.record is None or not -FUTURE_SKEW < now - self.mtime <= LEASE_TIMEOUT:
            return False
        if ask_os and (self.record.get("host"), self.record.get("pidns")) == (socket.gethostname(), _pid_namespace()):
            try:
                os.kill(int(self.record.get("pid")), 0)  # type: ignore[arg-type]  # None: TypeError below
            except (ProcessLookupError, ValueError, TypeError, OverflowError):
                return False
            except PermissionError:
                return True
        return True


@dataclass
class Run:
    """Everything the lease folder holds of one run: its driver's file and its tasks' files."""

    owner: str
    driver: Optional[Entry] = None
    tasks: list[Entry] = field(default_factory=list)

    def alive(self, now: float) -> bool:
        return (self.driver is not None and self.driver.alive(now)) or any(t.alive(now) for t in self.tasks)

    def holding(self, now: float, ask_os: bool = True) -> bool:
        return (self.driver is not None and bool((self.driver.record or {}).get("holding"))
                and self.driver.alive(now, ask_os))

    def describe(self, now: float) -> str:
        d = self.driver
        if d is not None and d.alive(now):
            r = d.record or {}
            return (f"host {r.get('host')}, pid {r.get('pid')}, last heartbeat {max(0.0, now - d.mtime):.0f} s ago")
        live = [t for t in self.tasks if t.alive(now)]
        return (f"its driver is gone but {len(live)} of its Spark tasks still run (a Spark Connect client that was "
                f"killed leaves them on the server); a task of a run whose driver is gone stops before writing, "
                f"so they end within {LEASE_TIMEOUT:.0f} s and one task's time")

    def files(self) -> list[str]:
        return ([self.driver.name] if self.driver else []) + [t.name for t in self.tasks]


def read_runs(files: Files, tasks: bool = True) -> dict[str, Run]:
    """The lease folder (and a legacy lease.json), by run. Without `tasks` the tasks' files are
    not read (one request each on an object store): they count as live by their age alone."""
    runs: dict[str, Run] = {}
    listing = files.listing(FOLDER)
    legacy = files.listing("").get(LEGACY)
    entries = [(f"{FOLDER}/{n}", m) for n, m in listing.items() if n.endswith(".json")]
    if legacy is not None:
        entries.append((LEGACY, legacy))
    for name, mtime in entries:
        base = name.rsplit("/", 1)[-1][: -len(".json")]
        owner, _, task = base.partition(".task-")
        if task and not tasks:
            runs.setdefault(owner, Run(owner)).tasks.append(Entry(name, owner, mtime, {}, task=True))
            continue
        try:
            record = json.loads(files.read(name))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # unreadable content
            record = None
        except OSError:
            if not files.exists(name):
                continue  # released meanwhile (an object store may not say FileNotFound)
            raise  # an I/O error (a throttled store) is no verdict on the run
        if name == LEGACY:
            owner = f"legacy:{(record or {}).get('owner', '?')}"
            record = {**record, "holding": True} if record is not None else None
        run = runs.setdefault(owner, Run(owner))
        entry = Entry(name, owner, mtime, record, task=bool(task))
        if task:
            run.tasks.append(entry)
        else:
            run.driver = entry
    return runs


class Lease:
    """This run's hold on its job (see the module docstring)."""

    def __init__(self, files: Files, where: str, on_release: Optional[Callable[[], None]] = None):
        self.files, self.where, self.on_release = files, where, on_release
        self.owner = uuid.uuid4().hex
        self.name = f"{FOLDER}/{self.owner}.json"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_ok = 0.0  # time.monotonic() of the last write of our file that landed
        self.lost = False

    def _record(self, holding: bool) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "pidns": _pid_namespace(), "holding": holding, "written": time.time()}).encode()

    def acquire(self) -> None:
        """Hold the job, or raise JobBusyError (a live run holds it, or is starting now)."""
        try:
            self.files.write(self.name, self._record(holding=False))
            runs = read_runs(self.files)
        except OSError as e:
            self._withdraw()
            raise JobError(f"cannot write the job directory {self.where}: {str(e).splitlines()[0][:300]} "
                           "(check --job-dir and its storage options)") from None
        mine = runs.pop(self.owner, None)
        if mine is None or mine.driver is None:
            self._withdraw()
            raise JobError(f"the lease file this run wrote in {self.where} is not there when listed: the store "
                           "does not list what was just written, and one run at a time cannot be promised on it")
        now = mine.driver.mtime
        live = [r for r in runs.values() if r.alive(now)]
        if live:
            self.files.delete_file(self.name)
            raise JobBusyError(
                f"another run of this job is active ({live[0].describe(now)}; state in {self.where}): wait for "
                f"it to finish; a run that died on another machine stops counting {LEASE_TIMEOUT:.0f} s after "
                "its last heartbeat, and `spark-lance-index discard` with this command's flags clears the job")
        for run in runs.values():
            unreadable = [e.name for e in ([run.driver] if run.driver else []) + run.tasks if e.record is None]
            if unreadable:
                log.warning("removing lease files that cannot be read (no run of this job writes a partial file): %s",
                            ", ".join(unreadable))
            else:
                log.info("taking over the job from a run that is no longer alive (owner %s)", run.owner)
            self.files.delete_many(run.files())
        sent = time.monotonic()
        self.files.write(self.name, self._record(holding=True))
        self._last_ok = sent
        self._thread = threading.Thread(target=self._beat, name="spark-lance-index-lease", daemon=True)
        self._thread.start()

    def _withdraw(self) -> None:
        """A claim that could not be judged: this run's own file goes (a file left behind would
        keep the next run out until it ages out); if the store refuses that too, it ages out."""
        try:
            self.files.delete_file(self.name)
        except OSError as e:
            log.warning("could not remove this run's lease file %s/%s: %s", self.where, self.name, e)

    def _fenced(self) -> bool:
        """No heartbeat has landed for half the timeout: another run may soon take over."""
        return time.monotonic() - self._last_ok > LEASE_TIMEOUT / 2

    def check(self) -> None:
        """Raise LeaseLostError unless this run still holds the job (before anything irreversible)."""
        if not self.lost and not self._fenced():
            try:
                runs = read_runs(self.files, tasks=False)
            except OSError:  # the store cannot say: nothing irreversible on a guess
                runs = {}
            mine = runs.pop(self.owner, None)
            if mine is not None and mine.driver is not None:
                now = mine.driver.mtime + (time.monotonic() - self._last_ok)
                if not any(r.holding(now) for r in runs.values()):
                    return
        self.lost = True
        raise LeaseLostError(f"another run took over this job ({self.where}) while this one ran, or this run could "
                             "not refresh its lease: it stops without committing or deleting anything")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if self._fenced():
                self.lost = True
                return
            try:
                sent = time.monotonic()  # a slow write counts from when it was sent
                if not self.files.exists(self.name):  # taken over: never write it back
                    self.lost = True
                    return
                self.files.write(self.name, self._record(holding=True))
                self._last_ok = sent
            except Exception as e:  # a flaky store: the next beat tries again
                log.debug("lease heartbeat failed: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if not self.lost:
                self.files.delete_file(self.name)
                if self.on_release is not None:
                    self.on_release()  # the job's folders, now that the lease's is empty


def leased(files: Files) -> bool:
    """Whether some run holds the job now: a cheap look before work (this host's clock)."""
    try:
        return any(r.alive(time.time()) for r in read_runs(files, tasks=False).values())
    except OSError:
        return False


@contextlib.contextmanager
def task_holds(files: Files, owner: str, what: str) -> Iterator[None]:
    """Around a Spark task that writes: start only while run `owner` holds the job, and keep a
    heartbeat file of the task's own while it runs. Raises LeaseLostError otherwise (before the
    task writes anything). `owner` "" (tests calling tasks directly): no lease."""
    if not owner:
        yield
        return
    name = f"{FOLDER}/{owner}.task-{uuid.uuid4().hex[:12]}.json"
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_namespace(),
                         "task": what}).encode()
    files.write(name, record)
    try:
        runs = read_runs(files, tasks=False)
        mine = runs.pop(owner, Run(owner))
        now = next((t.mtime for t in mine.tasks if t.name == name), time.time())
        # The driver is judged by its file's age alone: an executor may share its host name
        # but not its processes (containers), and a dead driver's file ages out in LEASE_TIMEOUT.
        if not mine.holding(now, ask_os=False) or any(r.holding(now, ask_os=False) for r in runs.values()):
            raise LeaseLostError(f"{what}: the run that started this task no longer holds its job (its driver is "
                                 "gone, or another run took over): the task stops before writing anything")
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(Exception):
                    files.write(name, record)

        thread = threading.Thread(target=beat, name="spark-lance-index-task-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
    finally:
        with contextlib.suppress(OSError, ValueError):
            files.delete_file(name)
