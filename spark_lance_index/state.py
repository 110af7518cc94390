"""The job directory: what lets a job resume after its driver died, and clean up after itself.

The job owns exactly one directory, `<root>/<job id>/`, where root is `--job-dir` or, by default,
`<dataset>.index-jobs` beside the dataset. Nothing else under root is ever read or deleted, so a
root shared by many jobs (or holding a user's files) is safe. Layout:

    job.json                 identity, pinned version, parameters, plan, artifact fingerprints
    artifacts/centroids.npy  artifacts/codebook.npy  artifacts/rotation.json  artifacts/options.json
    lease.json               the run working on this job now, with a heartbeat
    attempts/<uuid>          one empty marker per segment directory the job writes, written
                             before the directory is: cleanup removes only what is listed here
    segments/<group>.pkl     one finished segment per group, written by the task that built it
    merges/<batch>.json      a merge about to run: its sources and the `_indices` it started from
    commit.json              the segments about to be committed, written before the commit
    shared/<digest>.pkl      a value shipped to Spark Connect tasks, too large for the plan

Executors write markers and segments themselves, so a driver that dies mid-build loses nothing
that finished. `job.json` is trusted only when its identity equals the running job's.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from .build import SegmentResult
from .errors import JobBusyError, JobError
from .plan import FragmentGroup
from .storage import Files, Location
from .train import SharedArtifacts

log = logging.getLogger("spark_lance_index")

JOBS_SUFFIX = ".index-jobs"
# The files the job writes, by folder; cleanup deletes these names and nothing else.
_ARTIFACTS = ("centroids.npy", "codebook.npy", "rotation.json", "options.json")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SEGMENT = re.compile(r"^\d+\.pkl$")
_MERGE = re.compile(r"^[0-9a-f]{16}\.json$")
_SHARED = re.compile(r"^[0-9a-f]{32}\.pkl$")  # transport.py: a value too large for a Connect plan

# A run refreshes its lease this often; a lease older than LEASE_TIMEOUT belongs to a dead run.
HEARTBEAT_SECONDS = 10.0
LEASE_TIMEOUT = 60.0


def default_jobs_root(dataset: Location) -> Location:
    """Beside the dataset, on the same storage: `<dataset>.index-jobs`."""
    return dataset.sibling(JOBS_SUFFIX)


class JobState:
    """Reads and writes one job directory. Cheap to pickle: tasks carry one to executors."""

    def __init__(self, root: Location, job_id: str, storage_options: Mapping[str, str], owns_root: bool = False):
        self.root = root
        self.owns_root = owns_root  # the default root is the job's to remove once empty
        self.job_id = job_id
        self.where = root.child(job_id)
        self.storage_options = dict(storage_options)
        self._files: Optional[Files] = None

    def __getstate__(self):
        return {**self.__dict__, "_files": None}

    @property
    def uri(self) -> str:
        return str(self.where)

    @property
    def files(self) -> Files:
        if self._files is None:
            self._files = Files(self.where, self.storage_options)
        return self._files

    # --- driver: the plan and the artifacts ---------------------------------------------

    def exists(self) -> bool:
        return self.files.exists("job.json")

    def save_job(
        self, job: Mapping, groups: Sequence[FragmentGroup], artifacts: SharedArtifacts
    ) -> None:
        """Write the artifacts first and job.json last: job.json marks a usable directory."""
        if artifacts.centroids is not None:
            self.files.write("artifacts/centroids.npy", _npy(artifacts.centroids))
        if artifacts.options:
            self.files.write("artifacts/options.json", artifacts.options.encode())
        if artifacts.codebook is not None:
            self.files.write("artifacts/codebook.npy", _npy(artifacts.codebook))
        if artifacts.rq_model is not None:
            self.files.write("artifacts/rotation.json", artifacts.rq_model.encode())
        record = {
            **job,
            "groups": [asdict(g) for g in groups],
            "fingerprints": artifacts.fingerprints(),
        }
        self.files.write("job.json", json.dumps(record, indent=1, default=str).encode())

    def load_job(self, identity: Mapping) -> Optional[dict]:
        """job.json if it belongs to the job with `identity`; JobError if it belongs to another.

        The directory name is a hash of the identity, so a mismatch means the directory was
        filled by something else (a copy, an edit, a hash collision): it is never reused.
        """
        if not self.exists():
            return None
        try:
            job = json.loads(self.files.read("job.json"))
        except (ValueError, OSError) as e:
            raise JobError(f"the job directory {self.uri} is damaged ({e}): delete it to start afresh") from None
        if job.get("identity") != json.loads(json.dumps(identity, default=str)):
            raise JobError(
                f"the job directory {self.uri} holds the state of another job "
                f"(job {job.get('job_id')!r} on {job.get('identity', {}).get('dataset')!r}): "
                "nothing was reused or deleted; delete that directory or choose another --job-dir"
            )
        return job

    def load_plan(self, job: Mapping) -> tuple[tuple[FragmentGroup, ...], SharedArtifacts]:
        """The saved plan and artifacts; the artifacts are checked against job.json."""
        try:
            groups = tuple(
                FragmentGroup(g["group_id"], tuple(g["fragment_ids"]), g["num_rows"]) for g in job["groups"]
            )
            names = set(self.files.list("artifacts"))
            artifacts = SharedArtifacts(
                centroids=_load_npy(self.files.read("artifacts/centroids.npy")) if "centroids.npy" in names else None,
                codebook=_load_npy(self.files.read("artifacts/codebook.npy")) if "codebook.npy" in names else None,
                rq_model=self.files.read("artifacts/rotation.json").decode() if "rotation.json" in names else None,
                options=self.files.read("artifacts/options.json").decode() if "options.json" in names else None,
            )
        except (ValueError, KeyError, OSError) as e:
            raise JobError(f"the job directory {self.uri} is damaged ({e}): delete it to start afresh") from None
        if artifacts.fingerprints() != job["fingerprints"]:
            raise JobError(f"the artifacts in {self.uri} do not match its job.json: delete it to start afresh")
        return groups, artifacts

    # --- executors: what they wrote ------------------------------------------------------

    def mark_attempt(self, index_uuid: str) -> None:
        self.files.write(f"attempts/{index_uuid}", b"")

    def save_segment(self, result: SegmentResult) -> None:
        self.files.write(f"segments/{result.group_id}.pkl", pickle.dumps(result))

    def record_merge(self, key: str, record: Mapping) -> None:
        self.files.write(f"merges/{key}.json", json.dumps(record).encode())

    # --- driver: resume, commit and cleanup ----------------------------------------------

    def finished_segments(self) -> dict[int, SegmentResult]:
        out = {}
        for name in self.files.list("segments"):
            if _SEGMENT.match(name):
                result = pickle.loads(self.files.read(f"segments/{name}"))
                out[result.group_id] = result
        return out

    def attempts(self) -> list[str]:
        return [n for n in self.files.list("attempts") if _UUID.match(n)]

    def merges(self) -> list[dict]:
        return [json.loads(self.files.read(f"merges/{n}")) for n in self.files.list("merges") if _MERGE.match(n)]

    def record_commit(self, segment_uuids: Sequence[str]) -> None:
        """Written before the commit: a rerun can tell whether the commit landed."""
        self.files.write("commit.json", json.dumps({"segments": sorted(segment_uuids)}).encode())

    def forget_commit(self) -> None:
        """The recorded commit was checked and found wrong: a rerun must not finish it."""
        self.files.delete_file("commit.json")

    def committing(self) -> Optional[list[str]]:
        """The segment uuids a run was about to commit, if it got that far."""
        if not self.files.exists("commit.json"):
            return None
        return json.loads(self.files.read("commit.json"))["segments"]

    def forget_segments(self) -> None:
        """Drop the saved results (their directories stay marked for cleanup)."""
        self.files.delete_many([f"segments/{name}" for name in self.files.list("segments") if _SEGMENT.match(name)])

    def forget_plan(self) -> None:
        """Drop the plan, the artifacts and the saved segments, so that a rerun starts afresh under
        a new run id; the attempt markers and merge records stay for that rerun's cleanup."""
        self.forget_segments()
        for name in _ARTIFACTS:
            self.files.delete_file(f"artifacts/{name}")
        self.files.delete_file("job.json")

    def discard(self) -> None:
        """Delete the files this job wrote, then its folders if nothing else is in them.

        Only names the job writes are deleted: a file anyone else put here survives, and so
        does its folder. The lease is the running job's to release.
        """
        f = self.files
        self.forget_plan()
        f.delete_many([f"attempts/{name}" for name in self.attempts()]
                      + [f"merges/{name}" for name in f.list("merges") if _MERGE.match(name)]
                      + [f"shared/{name}" for name in f.list("shared") if _SHARED.match(name)])
        f.delete_file("commit.json")
        self.tidy()

    def tidy(self) -> None:
        """Remove the job's folders that are empty (a lease still held keeps the job's own)."""
        for folder in ("attempts", "segments", "merges", "artifacts", "shared", ""):
            self.files.remove_if_empty(folder)
        if self.owns_root:
            Files(self.root, self.storage_options).remove_if_empty()

    # --- one run at a time ---------------------------------------------------------------

    def leased(self) -> bool:
        """Whether a run holds the job now (a live lease): a cheap look before any work."""
        try:
            record = Lease(self)._read()
        except OSError:
            return False
        return record is not None and record.alive(time.time())

    def acquire_lease(self) -> "Lease":
        """Hold the job for this run, or raise JobBusyError if another live run holds it."""
        lease = Lease(self)
        try:
            lease.acquire()
        except OSError as e:
            raise JobError(f"cannot write the job directory {self.uri}: {str(e).splitlines()[0][:300]} "
                           "(check --job-dir and its storage options)") from None
        return lease


@dataclass(frozen=True)
class LeaseRecord:
    owner: str
    host: str
    pid: int
    heartbeat: float

    def alive(self, now: float) -> bool:
        if now - self.heartbeat > LEASE_TIMEOUT:
            return False
        if self.host == socket.gethostname():  # on this machine we can ask the OS
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True


class Lease:
    """`lease.json`: one run works on a job at a time; a heartbeat thread keeps it fresh.

    A second run of the same command refuses while the first is alive. A lease whose run is
    dead (its process is gone on this host, or no heartbeat for LEASE_TIMEOUT) is taken over.
    """

    def __init__(self, state: JobState):
        self.state = state
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lost = False

    def _record(self) -> bytes:
        return json.dumps(asdict(LeaseRecord(self.owner, socket.gethostname(), os.getpid(), time.time()))).encode()

    def _read(self) -> Optional[LeaseRecord]:
        try:
            return LeaseRecord(**json.loads(self.state.files.read("lease.json")))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # a torn write: its writer is alive, or was just now
            return LeaseRecord("unreadable", "?", -1, time.time())

    def acquire(self) -> None:
        files = self.state.files
        if not files.create("lease.json", self._record()):
            held = self._read()
            if held is not None and held.alive(time.time()):
                raise JobBusyError(
                    f"another run of this job is active (host {held.host}, pid {held.pid}, last heartbeat "
                    f"{time.time() - held.heartbeat:.0f} s ago; state in {self.state.uri}): wait for it to "
                    f"finish; if it died on another machine, rerun after {LEASE_TIMEOUT:.0f} s"
                )
            log.info("taking over the lease of a run that is no longer alive (%s)", held)
            files.write("lease.json", self._record())
        time.sleep(0.05)  # an object store has no create-if-absent: last writer wins, so look again
        if not self.held():
            raise JobBusyError(f"another run of this job took its lease just now ({self.state.uri}): wait for it")
        self._thread = threading.Thread(target=self._beat, name="spark-lance-index-lease", daemon=True)
        self._thread.start()

    def held(self) -> bool:
        current = self._read()
        return current is not None and current.owner == self.owner

    def check(self) -> None:
        """Raise JobBusyError if another run took the lease (before anything irreversible)."""
        if self.lost or not self.held():
            self.lost = True
            raise JobBusyError(
                f"another run took over this job ({self.state.uri}) while this one ran: this run "
                "stops without committing or deleting anything"
            )

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if not self.held():
                    self.lost = True
                    return
                self.state.files.write("lease.json", self._record())
            except Exception as e:  # a flaky store: the next beat tries again
                log.debug("lease heartbeat failed: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.held():
                self.state.files.delete_file("lease.json")
                self.state.tidy()
        except OSError:
            pass


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
