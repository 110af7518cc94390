"""The job directory: what lets a job resume after its driver died, and clean up after itself.

The job owns exactly one directory, `<root>/<job id>/`, where root is `--job-dir` or, by default,
`<dataset>.index-jobs` beside the dataset. Nothing else under root is ever read or deleted, so a
root shared by many jobs (or holding a user's files) is safe. Layout:

    job.json                 identity, pinned version, parameters, plan, artifact fingerprints
    artifacts/centroids.npy  artifacts/codebook.npy  artifacts/rotation.json  artifacts/options.json
    lease/<owner>.json       the run working on this job now, with a heartbeat (lease.py)
    attempts/<uuid>@<v>      one empty marker per segment directory the job writes, written
                             before the directory is: cleanup removes only what is listed here;
                             v is the dataset version the writing run pinned (no version after
                             it can reference the directory)
    created-root             this job created --job-dir: it removes it once empty
    index.json               the dataset, column and index name (what `discard` matches), last to go
    segments/<group>.json    one finished segment per group, written by the task that built it
                             (records.py: JSON, no pickled engine objects; a `.pkl` of an older
                             version of the job is removed, never read)
    writes/<key>.json        a write about to run whose segment uuid Lance picks (a merge, or a build of a
                             type Lance names itself): its sources and the `_indices` it started from
    commit.json              the segments about to be committed, written before the commit
    shared/<digest>.pkl      a value shipped to Spark Connect tasks, too large for the plan

Executors write markers and segments themselves, so a driver that dies mid-build loses nothing
that finished. `job.json` is trusted only when its identity equals the running job's.

Cleanup deletes in an order a kill at any point leaves something a rerun finishes: `job.json`
and the saved segments first (cleanup runs only after every check passed; without `job.json` a
rerun never reuses a segment whose directory is half deleted), then the segment directories
(their markers name them), the markers and records, and `commit.json` last (without `job.json`,
a `commit.json` whose segments are the committed index says only cleanup was left).
A kill after that leaves at most the dead run's lease file and empty folders, which the next
run of the job, or `discard`, removes.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Optional

import numpy as np

from . import lease as lease_module
from .errors import JobError
from .plan import FragmentGroup
from .records import segment_from_json, segment_to_json
from .segment_build import SegmentResult
from .storage import Files, Location
from .train import SharedArtifacts

log = logging.getLogger("spark_lance_index")

JOBS_SUFFIX = ".index-jobs"
# The files the job writes, by folder; cleanup deletes these names and nothing else.
_ARTIFACTS = ("centroids.npy", "codebook.npy", "rotation.json", "options.json")
_MARKER = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:@(\d+))?$")
ROOT_CREATED = "created-root"
INDEX_KEY = "index.json"  # the dataset, column and index the job is for: `discard` matches on it
_FOLDERS = ("attempts", "segments", "writes", "artifacts", "shared")
_SEGMENT = re.compile(r"^\d+\.(json|pkl)$")  # .pkl: written by versions before records.py
_WRITE = re.compile(r"^[0-9a-f]{16}\.json$")  # writes/<key>.json
_SHARED = re.compile(r"^[0-9a-f]{32}\.pkl$")  # transport.py: a value too large for a Connect plan

def default_jobs_root(dataset: Location) -> Location:
    """Beside the dataset, on the same storage: `<dataset>.index-jobs`."""
    return dataset.sibling(JOBS_SUFFIX)


class JobState:
    """Reads and writes one job directory. Cheap to pickle: tasks carry one to executors."""

    def __init__(self, root: Location, job_id: str, storage_options: Mapping[str, str], owns_root: bool = False,
                 index_key: Optional[Mapping[str, str]] = None):
        self.root = root
        self.index_key = dict(index_key or {})
        self.owns_root = owns_root  # the default root is the job's to remove once empty
        self.job_id = job_id
        self.where = root.child(job_id)
        self.storage_options = dict(storage_options)
        self._files: Optional[Files] = None

    def __getstate__(self) -> dict:
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
            raise JobError(f"the job directory {self.uri} is damaged ({e}): `spark-lance-index discard` with this "
                           "command's flags starts afresh") from None
        if job.get("identity") != json.loads(json.dumps(identity, default=str)):
            raise JobError(
                f"the job directory {self.uri} holds the state of another job "
                f"(job {job.get('job_id')!r} on {job.get('identity', {}).get('dataset')!r}): "
                "nothing was reused or deleted; choose another --job-dir"
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
            raise JobError(f"the job directory {self.uri} is damaged ({e}): `spark-lance-index discard` with this "
                           "command's flags starts afresh") from None
        if artifacts.fingerprints() != job["fingerprints"]:
            raise JobError(f"the artifacts in {self.uri} do not match its job.json: `spark-lance-index discard` with "
                           "this command's flags starts afresh")
        return groups, artifacts

    # --- executors: what they wrote ------------------------------------------------------

    def mark_attempt(self, index_uuid: str, pinned_version: int) -> None:
        """Before a segment directory is written (or right after, where Lance picks its uuid)."""
        self.files.write(f"attempts/{index_uuid}@{pinned_version}", b"")

    def save_segment(self, result: SegmentResult) -> None:
        self.files.write(f"segments/{result.group_id}.json", segment_to_json(result))

    def record_write(self, key: str, record: Mapping) -> None:
        self.files.write(f"writes/{key}.json", json.dumps(record).encode())

    # --- driver: resume, commit and cleanup ----------------------------------------------

    def finished_segments(self) -> dict[int, SegmentResult]:
        out = {}
        for name in self.files.list("segments"):
            if _SEGMENT.match(name) and name.endswith(".json"):
                data = self.files.read(f"segments/{name}")
                try:
                    result = segment_from_json(data)
                except Exception as e:  # not a record this version wrote, whatever is wrong with it: rebuilt
                    log.warning("segments/%s of job %s is not a segment record (%s): its group is built again",
                                name, self.job_id, e)
                    continue
                out[result.group_id] = result
        return out

    def attempts(self) -> dict[str, Optional[int]]:
        """The segment directories the job marked: {uuid: the version its run pinned (None in a
        marker of an older release: any version may reference it)}."""
        out: dict[str, Optional[int]] = {}
        for name in self.files.list("attempts"):
            m = _MARKER.match(name)
            if m:
                version = int(m.group(2)) if m.group(2) else None
                out[m.group(1)] = version if m.group(1) not in out else _min_version(out[m.group(1)], version)
        return out

    def has_leftovers(self) -> bool:
        """Files of this job's without a plan: a run stopped during its cleanup, or after its
        commit was found wrong."""
        return bool(self.attempts() or self.files.exists("commit.json") or self.pending_writes() or
                    self.files.list("segments") or self.files.list("artifacts") or self.files.exists(INDEX_KEY))

    def pending_writes(self) -> list[dict]:
        return [json.loads(self.files.read(f"writes/{n}")) for n in self.files.list("writes") if _WRITE.match(n)]

    def record_commit(self, segment_uuids: Sequence[str]) -> None:
        """Written before the commit: a rerun can tell whether the commit landed."""
        self.files.write("commit.json", json.dumps({"segments": sorted(segment_uuids)}).encode())

    def forget_commit(self) -> None:
        """The recorded commit was checked and found wrong: a rerun must never finish it. The
        record is first marked wrong (one atomic write), so a kill before it is gone leaves
        nothing a rerun would take for its own index."""
        own = self.committing()
        if own is not None:
            self.files.write("commit.json", json.dumps({"segments": own, "wrong": True}).encode())
        self.forget_plan()
        self.files.delete_file("commit.json")

    def committing(self) -> Optional[list[str]]:
        """The segment uuids a run was about to commit, if it got that far (None also for a
        commit found wrong)."""
        if not self.files.exists("commit.json"):
            return None
        record = json.loads(self.files.read("commit.json"))
        return None if record.get("wrong") else record["segments"]

    def forget_segments(self) -> None:
        """Drop the saved results (their directories stay marked for cleanup)."""
        self.files.delete_many([f"segments/{name}" for name in self.files.list("segments") if _SEGMENT.match(name)])

    def forget_plan(self) -> None:
        """Drop the plan, the artifacts and the saved segments, so that a rerun starts afresh under
        a new run id; the attempt markers and merge records stay for that rerun's cleanup.
        job.json goes first: without it the rest is never resumed."""
        self.files.delete_file("job.json")
        self.forget_segments()
        self.files.delete_many([f"artifacts/{name}" for name in _ARTIFACTS])

    def discard(self) -> None:
        """Delete the files this job wrote, then its folders if nothing else is in them, in the
        order of the module docstring (the caller removed the plan, then the marked directories).

        Only names the job writes are deleted: a file anyone else put here survives, and so
        does its folder. The lease is the running job's to release.
        """
        f = self.files
        marked = [n for n in f.list("attempts") if _MARKER.match(n)]
        f.delete_many([f"attempts/{name}" for name in marked]
                      + [f"writes/{name}" for name in f.list("writes") if _WRITE.match(name)]
                      + [f"shared/{name}" for name in f.list("shared") if _SHARED.match(name)])
        self.forget_plan()
        for folder in _FOLDERS:
            f.remove_if_empty(folder)
        f.delete_file("commit.json")  # until here a rerun finishes this cleanup
        f.delete_file(INDEX_KEY)  # what `discard` finds the folder by
        self.tidy()

    def tidy(self) -> None:
        """Remove the job's folders that are empty (a lease still held keeps the job's own), and
        the root when the job created it (the default root, or a --job-dir that did not exist)."""
        for folder in (*_FOLDERS, "lease"):
            self.files.remove_if_empty(folder)
        created = self.owns_root or self.files.exists(ROOT_CREATED)
        if set(self.files.entries("")) <= {ROOT_CREATED}:  # nothing else left, of the job's or anyone's
            self.files.delete_file(ROOT_CREATED)
            self.files.remove_if_empty("")
            if created:
                Files(self.root, self.storage_options).remove_if_empty()

    # --- one run at a time ---------------------------------------------------------------

    def leased(self) -> bool:
        """Whether a run holds the job now (a live lease): a cheap look before any work."""
        return lease_module.leased(self.files)

    def acquire_lease(self) -> lease_module.Lease:
        """Hold the job for this run, or raise JobBusyError if another live run holds it. The
        first write of a job under a --job-dir that does not exist yet marks the root as the
        job's own, to remove once empty."""
        new_root = not self.owns_root and not Files(self.root, self.storage_options).exists()
        lease = lease_module.Lease(self.files, self.uri, on_release=self.tidy)
        lease.acquire()
        if new_root:
            self.files.write(ROOT_CREATED, b"")
        if self.index_key and not self.files.exists(INDEX_KEY):
            self.files.write(INDEX_KEY, json.dumps(self.index_key).encode())
        return lease

    def index_of(self) -> Optional[dict]:
        """The dataset, column and index this job is for (`index.json`, else its job.json)."""
        for name, pick in ((INDEX_KEY, lambda d: d), ("job.json", lambda d: d.get("identity", {}))):
            if self.files.exists(name):
                try:
                    found = pick(json.loads(self.files.read(name)))
                    return {k: found.get(k) for k in ("dataset", "column", "index_name")}
                except (ValueError, AttributeError):
                    return None
        return None


def _min_version(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return None if a is None or b is None else min(a, b)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
