"""The build phase: one segment of the index from one fragment group, run on an executor.

Plain Lance, no Spark: `build_segment` is what each Spark task calls, and what tests call
directly. It writes only `_indices/<index_uuid>/` and never changes the dataset version.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .assign import AssignmentLost, assign_fragments, check_segment, write_partition_table
from .dataset import IndexParams, open_dataset
from .lease import task_holds
from .plan import FragmentGroup
from .storage import index_dirs, locate
from .train import SharedArtifacts

if TYPE_CHECKING:
    from .state import JobState

# Namespace for the deterministic segment uuids (uuid5), so a retried task rewrites the same
# directory instead of leaving a second copy behind.
SEGMENT_NAMESPACE = uuid.UUID("5d1f3b8e-2f0c-4c1e-9a55-6c0de1ab1e10")


def segment_uuid(job_id: str, group: FragmentGroup, attempt: int, artifacts_key: str = "") -> str:
    """The uuid one attempt of one group writes its segment under.

    Each attempt gets its own directory: a speculative copy never writes into the directory
    of an attempt that is still running, and a rerun after a driver crash rewrites the
    directories of the crashed run's attempts instead of leaving more behind. The artifacts
    are part of the name: two runs that trained different artifacts (a lease lost to a
    network error) never write into one directory. `job_id` carries the run id too: a later run
    of the same job (the next update, a rebuild) never writes into a directory an index it
    committed still uses.
    """
    frags = ",".join(map(str, group.fragment_ids))
    return str(uuid.uuid5(SEGMENT_NAMESPACE, f"{job_id}/{group.group_id}/{frags}/{attempt}/{artifacts_key}"))


@dataclass(frozen=True)
class SegmentTask:
    """Everything one task needs besides the (broadcast) artifacts."""

    uri: str
    version: int
    column: str
    index_name: str
    params: IndexParams
    group: FragmentGroup
    job_id: str  # "<job id>:<run id>", the key of its segment uuids
    replace: bool
    storage_options: Mapping[str, str] = field(default_factory=dict)
    lance_log: str = "error"  # Lance's Rust log level in the task ("info" with --verbose)
    lease_owner: str = ""  # the run that holds the job; the task writes only while it does
    assignment: str = "lance"  # "gemm": rows assigned to partitions here (assign.py); "lance": by Lance

    @property
    def num_rows(self) -> int:
        return self.group.num_rows


@dataclass(frozen=True)
class SegmentResult:
    """What a task sends back: small, picklable, and enough to check and merge."""

    group_id: int
    index_uuid: str
    fragment_ids: tuple[int, ...]
    num_rows: int
    fingerprints: Mapping[str, str]  # of the artifacts this task actually used
    segment: Any  # lance.dataset.Index, the handle merge and commit take
    seconds: float
    host: str
    attempt: int = 0
    assign_seconds: float = 0.0  # of `seconds`, assigning rows to partitions (--assignment gemm)


# what builds one segment: build_segment, or a test's stand-in
BuildFn = Callable[[SegmentTask, SharedArtifacts, Optional[str], int], SegmentResult]


def run_task(task: SegmentTask, artifacts: SharedArtifacts, state: JobState, attempt: int,
             build: Optional[BuildFn] = None) -> SegmentResult:
    """One Spark task: record the directory about to be written, build, record the result.

    `state` is the job's JobState; the marker lets cleanup find this directory even if the
    task dies half-way, and the saved result lets a rerun skip this group. Where Lance picks the
    segment's uuid itself (BTREE, LABEL_LIST, NGRAM), the directory can only be marked once
    written: the task records its intent first, with the `_indices` entries that existed, so that
    a directory left by a task killed in between is named at cleanup, never deleted (as for an
    interrupted merge). `build` defaults to `build_segment` (tests stop a task right after it).
    """
    with task_holds(state.files, task.lease_owner, f"segment build of group {task.group.group_id}"):
        return _run_task(task, artifacts, state, attempt, build or build_segment)


def _run_task(task: SegmentTask, artifacts: SharedArtifacts, state: JobState, attempt: int,
              build: BuildFn) -> SegmentResult:
    if task.params.kind.takes_uuid:
        index_uuid = segment_uuid(task.job_id, task.group, attempt, artifacts.describe())
        state.mark_attempt(index_uuid, task.version)
        result = build(task, artifacts, index_uuid, attempt)
    else:
        key = hashlib.sha256(f"build/{task.job_id}/{task.group.group_id}/{attempt}".encode()).hexdigest()[:16]
        state.record_write(key, {"sources": [], "group": task.group.group_id, "attempt": attempt,
                                 "before": index_dirs(locate(task.uri), task.storage_options).entries(),
                                 "started": time.time()})
        result = build(task, artifacts, None, attempt)
        state.mark_attempt(result.index_uuid, task.version)
    state.save_segment(result)
    return result


def build_segment(
    task: SegmentTask, artifacts: SharedArtifacts, index_uuid: Optional[str], attempt: int = 0
) -> SegmentResult:
    """Build the uncommitted segment for `task.group` with the shared artifacts, under
    `index_uuid` (None: the uuid Lance picks)."""
    os.environ.setdefault("LANCE_LOG", task.lance_log)  # read when lance is first imported
    start = time.perf_counter()
    ds = open_dataset(task.uri, task.storage_options, task.version)
    p = task.params
    kwargs = dict(p.kind.segment_kwargs(p, artifacts), name=task.index_name, replace=task.replace,
                  fragment_ids=list(task.group.fragment_ids), **({"index_uuid": index_uuid} if index_uuid else {}))
    assigned = None
    if task.assignment == "gemm":
        assert artifacts.centroids is not None, "the GEMM assigns vector rows to the shared centroids"
        with tempfile.TemporaryDirectory(prefix="spark-lance-index-partitions-") as scratch:
            assigned = assign_fragments(ds, task.column, task.group.fragment_ids, artifacts.centroids, p.metric)
            if assigned.scanned_rows != task.group.num_rows:  # a row not scanned is in no table, so in no segment
                raise AssignmentLost(
                    f"the scan of group {task.group.group_id}'s fragments at version {task.version} read "
                    f"{assigned.scanned_rows} rows, but the plan counted {task.group.num_rows} live rows there")
            table = write_partition_table(assigned, scratch)
            segment = ds.create_index_uncommitted(task.column, p.index_type, **kwargs,
                                                  precomputed_partition_dataset=table)
        check_segment(locate(task.uri), task.storage_options, str(segment.uuid), assigned, p.num_partitions)
    else:
        segment = ds.create_index_uncommitted(task.column, p.index_type, **kwargs)
    return SegmentResult(
        group_id=task.group.group_id,
        index_uuid=str(segment.uuid),
        fragment_ids=tuple(sorted(segment.fragment_ids)),
        num_rows=task.group.num_rows,
        fingerprints=artifacts.fingerprints(),
        segment=segment,
        seconds=time.perf_counter() - start,
        host=f"{socket.gethostname()}:{os.getpid()}",
        attempt=attempt,
        assign_seconds=assigned.seconds if assigned is not None else 0.0,
    )
