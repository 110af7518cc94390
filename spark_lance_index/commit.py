"""Check, merge, commit and read back: the executors' segments become one index.

`check_segments` refuses anything that would make a wrong index before a byte is committed;
`read_back_index` checks afterwards that what Lance committed is what was planned, because some
failures (a compaction between build and commit) commit "successfully" with nothing indexed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .dataset import FragmentInfo, IndexInfo, _ids, fragment_infos, index_conflict, index_infos, open_dataset
from .errors import CommitCheckError, DatasetChangedError, IndexConflictError, JobError, SegmentCheckError
from .index_types import INDEX_TYPES
from .lease import task_holds
from .plan import FragmentGroup
from .report import short
from .segment_build import SegmentResult
from .storage import Location, index_dirs

if TYPE_CHECKING:
    from .state import JobState

log = logging.getLogger(__name__)



def check_segments(
    groups: Sequence[FragmentGroup],
    results: Iterable[SegmentResult],
    expected_fingerprints: Mapping[str, str],
) -> list[SegmentResult]:
    """One result per planned group, covering exactly its fragments, built with our artifacts.

    Returns the results in group order. Raises SegmentCheckError naming the segment and the
    artifact at the first problem.
    """
    by_group: dict[int, SegmentResult] = {}
    planned = {g.group_id: g for g in groups}
    for r in results:
        if r.group_id not in planned:
            raise SegmentCheckError(f"segment {r.index_uuid} is for group {r.group_id}, which was not planned")
        # Spark may deliver a retried or speculative attempt too; they wrote the same uuid.
        if r.group_id in by_group and by_group[r.group_id].index_uuid != r.index_uuid:
            raise SegmentCheckError(
                f"group {r.group_id} returned two different segments "
                f"({by_group[r.group_id].index_uuid}, {r.index_uuid})"
            )
        by_group[r.group_id] = r
    missing = sorted(set(planned) - set(by_group))
    if missing:
        raise SegmentCheckError(f"no segment came back for fragment groups {missing}")
    seen: dict[int, int] = {}
    for gid in sorted(by_group):
        r, g = by_group[gid], planned[gid]
        if tuple(sorted(r.fragment_ids)) != tuple(sorted(g.fragment_ids)):
            raise SegmentCheckError(
                f"segment {r.index_uuid} (group {gid}) covers fragments {list(r.fragment_ids)}, "
                f"planned {list(g.fragment_ids)}"
            )
        for frag in r.fragment_ids:
            if frag in seen:
                raise SegmentCheckError(f"fragment {frag} is in groups {seen[frag]} and {gid}")
            seen[frag] = gid
        for name, want in expected_fingerprints.items():
            got = r.fingerprints.get(name)
            if got != want:
                raise SegmentCheckError(
                    f"segment {r.index_uuid} (group {gid}) was built with another {name} "
                    f"({short(got) if got else 'none'} instead of {short(want)}): its codes cannot "
                    "be merged with the others; nothing was committed, rerun the job"
                )
    return [by_group[g] for g in sorted(by_group)]


@dataclass(frozen=True)
class MergeTask:
    """Segments one executor merges into one: contiguous groups, at most max_segment_rows rows."""

    uri: str
    dataset: Location  # where the dataset is, for its `_indices`
    version: int
    segments: tuple  # lance.dataset.Index values, in group order
    num_rows: int
    storage_options: Mapping[str, str] = field(default_factory=dict)
    lease_owner: str = ""  # the run that holds the job; the merge writes only while it does


def merge_batches(results: Sequence[SegmentResult], max_rows: int) -> list[list[SegmentResult]]:
    """Contiguous runs of segments of at most `max_rows` rows (a bigger segment stays alone).

    Merging holds a merged segment in memory (measured: about 100 MiB plus 1.5x its stored bytes),
    so it runs on executors, in pieces a single process can hold.
    """
    batches: list[list[SegmentResult]] = [[]]
    rows = 0
    for r in sorted(results, key=lambda r: r.group_id):
        if batches[-1] and rows + r.num_rows > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(r)
        rows += r.num_rows
    return batches


def merge_key(task: MergeTask) -> str:
    """One name per merge batch, the same for every attempt and rerun of it."""
    sources = ",".join(sorted(str(seg.uuid) for seg in task.segments))
    return hashlib.sha256(sources.encode()).hexdigest()[:16]


def merge_segments(task: MergeTask, state: JobState) -> object:
    """Merge one batch on an executor. Returns the merged segment (the input if only one).

    Lance picks the merged directory's uuid itself and offers no way to choose it, so the
    marker cannot come before the write. What comes before is the intent: the sources and the
    `_indices` entries that existed before. If the merge dies mid-write, the rerun knows a
    directory may have been left and names the candidates (see `interrupted_write_leftovers`).
    """
    if len(task.segments) == 1:
        return task.segments[0]
    with task_holds(state.files, task.lease_owner, f"merge of {len(task.segments)} segments"):
        return _merge(task, state)


def _merge(task: MergeTask, state: JobState) -> object:
    indices = index_dirs(task.dataset, task.storage_options)
    state.record_write(merge_key(task), {
        "sources": sorted(str(seg.uuid) for seg in task.segments),
        "before": indices.entries(), "started": time.time(),
    })
    ds = open_dataset(task.uri, task.storage_options, task.version)
    merged = ds.merge_existing_index_segments(list(task.segments))
    state.mark_attempt(str(merged.uuid), task.version)  # a new directory of ours, for cleanup
    return merged


def check_fragments_unchanged(latest: Any, column: str, planned: Sequence[FragmentInfo], pinned_version: int) -> None:
    """Refuse to commit if a planned fragment was removed, or its vector data rewritten, since
    the pinned version.

    Lance would commit anyway and prune the index's coverage to nothing (compaction) or to a
    stale subset (overwrite, deleted fragments). What leaves a segment valid passes: appended
    fragments (they stay unindexed, as after any index build), deleted rows (a deletion file;
    Lance filters them at query time) and new columns (a data file beside the vector's).
    """
    now = {f.fragment_id: f for f in fragment_infos(latest, column)}
    gone = [f.fragment_id for f in planned if f.fragment_id not in now]
    rewritten = [
        f.fragment_id for f in planned if f.fragment_id in now and now[f.fragment_id].segment_inputs != f.segment_inputs
    ]
    if gone or rewritten:
        what = []
        if gone:
            what.append(f"fragments {_ids(gone)} were removed")
        if rewritten:
            what.append(f"the vectors of fragments {_ids(rewritten)} were rewritten")
        raise DatasetChangedError(
            f"the dataset changed under the job: {' and '.join(what)} after version "
            f"{pinned_version} (compaction, overwrite or delete, now at version {latest.version}); "
            "nothing was committed and the existing index is unchanged: rerun the job to index "
            "the current version"
        )


COMMIT_ATTEMPTS = 5


def build_conflict(index_name: str, column: str, replace: bool, planned: Sequence[FragmentInfo],
                   index_type: str = "IVF_RQ") -> Callable[[Sequence[IndexInfo]], Optional[str]]:
    """A build's check of the latest indexes: an index of this name (without --replace), or
    another index serving the same queries on the column, that appeared while the job ran."""
    planned_ids = [f.fragment_id for f in planned]
    return lambda indexes: index_conflict(index_name, column, replace, indexes, planned=planned_ids,
                                          index_type=index_type)


def commit_segments(
    open_latest: Callable[[], Any], index_name: str, column: str, merged: Sequence, planned: Sequence[FragmentInfo],
    pinned_version: int, conflict_of: Callable[[Sequence[IndexInfo]], Optional[str]],
) -> Any:
    """Commit the merged segments, in one commit, on the latest version, retrying conflicts.

    Before every attempt the latest version is checked again: the planned fragments (a retry
    never commits over a compaction that caused the conflict), and the indexes, with
    `conflict_of(indexes)` (a reason not to commit, or None).
    """
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        latest = open_latest()
        check_fragments_unchanged(latest, column, planned, pinned_version)
        conflict = conflict_of(index_infos(latest))
        if conflict:
            raise IndexConflictError(
                f"while the job ran, the dataset changed (now version {latest.version}): {conflict}; "
                "nothing was committed"
            )
        try:
            return latest.commit_existing_index_segments(index_name, column, list(merged))
        except Exception as e:  # Lance raises OSError or RuntimeError depending on the path
            if not is_retryable_conflict(e) or attempt == COMMIT_ATTEMPTS:
                raise JobError(f"the commit failed: {str(e).splitlines()[0][:300]}; nothing was committed") from e
            log.warning("commit conflict (attempt %d of %d), retrying: %s", attempt, COMMIT_ATTEMPTS,
                        str(e).splitlines()[0][:200])
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def is_retryable_conflict(e: BaseException) -> bool:
    """Lance's own verdict that a commit lost a race it may retry. pylance 14.0.2 raises it as an
    OSError or RuntimeError whose text is the only mark (no exception type of its own)."""
    return "retryable commit conflict" in str(e).lower()


def interrupted_write_leftovers(dataset: Location, storage_options: Mapping[str, str], writes: Sequence[Mapping],
                                written: Iterable[str], keep: Iterable[str]) -> list[str]:
    """Directories under `_indices` that appeared after one of this job's writes whose uuid Lance
    picks (merges, scalar builds) started and that nobody accounts for: not there before, not
    marked by the job, not in `keep` (the committed indexes). A merge killed mid-write leaves
    one; so may another writer. The job cannot prove which, so these are reported, never deleted."""
    if not writes:
        return []
    known = set(written) | set(keep)
    before = set.intersection(*(set(m["before"]) for m in writes))
    return sorted(set(index_dirs(dataset, storage_options).entries()) - before - known)


@dataclass(frozen=True)
class CommitReport:
    """What the committed index covers, read back from Lance."""

    version: int
    num_indexed_rows: int
    num_unindexed_rows: int
    num_indexed_fragments: int
    num_unindexed_fragments: int
    num_segments: int
    num_deleted_rows: int  # planned rows deleted after the pinned version


def read_back_index(
    ds: Any, index_name: str, index_type: str, merged_uuids: Sequence[str], planned: Sequence[FragmentInfo],
    model_mismatch: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None,
    encoded: Optional[Sequence[FragmentInfo]] = None,
) -> CommitReport:
    """Read the committed index back and check it covers exactly the planned fragments.

    Rows deleted since the pinned version are accounted for: the index covers the planned
    fragments, and Lance counts their live rows, so live rows now = indexed rows. For an update,
    `planned` is every fragment the index should cover (the kept segments' and the new ones),
    `merged_uuids` every segment it should have; a fragment removed since the pin, that a kept
    segment still lists, is not counted on either side. Every fragment the job encoded
    (`encoded`, default `planned`) must still exist. `model_mismatch(stats)` says why the
    committed segments were not all encoded with the job's model (read back from their files),
    or None.
    """
    stats = ds.stats.index_stats(index_name)
    (info,) = [i for i in index_infos(ds) if i.name == index_name]
    live_now = {f.fragment_id: f.num_rows for f in fragment_infos(ds, info.columns[0])}
    planned_ids = {f.fragment_id for f in planned if f.fragment_id in live_now}
    covered = {f for f in info.fragment_ids if f in live_now}
    expected_rows = sum(live_now.get(f, 0) for f in planned_ids)
    report = CommitReport(
        version=ds.version,
        num_indexed_rows=stats["num_indexed_rows"],
        num_unindexed_rows=stats["num_unindexed_rows"],
        num_indexed_fragments=stats["num_indexed_fragments"],
        num_unindexed_fragments=stats["num_unindexed_fragments"],
        num_segments=len(info.segments),
        num_deleted_rows=sum(f.num_rows for f in planned) - expected_rows,
    )
    uuids = list(info.segments)  # the manifest's segments (a scalar index's statistics carry no uuids)
    problems = []
    removed = sorted(f.fragment_id for f in (planned if encoded is None else encoded) if f.fragment_id not in live_now)
    if removed:
        problems.append(f"fragments {_ids(removed)} it indexes were removed before the commit landed")
    if sorted(uuids) != sorted(merged_uuids):
        problems.append(f"segments {uuids} instead of the merged segments {sorted(merged_uuids)}")
    if stats.get("index_type") != (INDEX_TYPES[index_type].stats_name if index_type in INDEX_TYPES else index_type):
        problems.append(f"type {stats.get('index_type')} instead of {index_type}")
    if covered != planned_ids:
        missing, extra = sorted(planned_ids - covered), sorted(covered - planned_ids)
        problems.append(f"it covers fragments {_ids(sorted(covered))} instead of the planned "
                        f"ones (missing {_ids(missing)}, extra {_ids(extra)})")
    elif report.num_indexed_rows != expected_rows:
        problems.append(f"{report.num_indexed_rows} rows indexed instead of the {expected_rows} live rows "
                        "of the planned fragments")
    mismatch = model_mismatch(stats) if model_mismatch is not None else None
    if mismatch:
        problems.append(mismatch)
    if problems:
        raise CommitCheckError(
            f"index {index_name!r} was committed at version {ds.version} but is wrong: "
            + "; ".join(problems)
            + " (was the dataset compacted or rewritten during the build? rerun the job)"
        )
    return report

