"""The plan phase: split the pinned fragments into balanced groups, one Spark task each.

Groups hold *contiguous* fragment ids, so each segment covers one run of the table, and are
balanced by live row count (deleted rows cost nothing to index). A fragment is never split:
a fragment larger than the target simply gets a group of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from .config import BuildConfig
from .dataset import DatasetSnapshot, FragmentInfo, IndexParams
from .index_types import IndexType

# Default task size: about this much vector data per task. Large enough that per-task
# overhead (~30 ms in Spark, plus opening the dataset) vanishes, small enough that one
# executor core builds it in memory.
TARGET_TASK_BYTES = 512 * 1024 * 1024
# Below this many rows a task costs more in overhead than it saves.
MIN_ROWS_PER_TASK = 16_384
TASKS_PER_CORE = 2  # a little slack so a slow task does not hold up the whole stage
# A task that builds a whole committed segment (types whose segments are not merged) may hold
# this much vector data: a build task peaks at about 100 MiB plus 1.06x its vector bytes
# (measured for IVF types; HNSW builds 1M x 128 rows, 488 MiB, peaked 490-725 MiB above the
# process's base), so about 2.3 GB of executor memory per task.
UNMERGED_TASK_BYTES = 2 * 1024**3
MANY_SEGMENTS = 32  # more segments than this in one index: say what each costs
# Spreading a table over more task slots never cuts segments below this (one-node Lance's rows
# per partition for the HNSW types: a segment of at least one default partition).
MIN_UNMERGED_SEGMENT_ROWS = 1 << 20


@dataclass(frozen=True)
class FragmentGroup:
    """The fragments one task indexes: one segment of the index."""

    group_id: int
    fragment_ids: tuple[int, ...]
    num_rows: int


# Every segment a task builds carries a full copy of the IVF centroids (partitions x dim, in its
# index.idx), written, merged and deleted: a task has at least this many rows per partition, so
# the copy stays under a tenth of the segment's vectors (at 1B x 768 and 32,768 partitions, 512
# MiB tasks would write 576 GB of centroid copies).
ROWS_PER_CENTROID_COPY = 10


def default_rows_per_task(total_rows: int, bytes_per_row: int, parallelism: int, num_partitions: int = 0) -> int:
    """Rows per task when the user gives no size: ~512 MiB, but use every core on small data,
    and never so few rows that the segment's copy of the centroids outweighs a tenth of it."""
    by_memory = max(1, TARGET_TASK_BYTES // max(1, bytes_per_row))
    spread = math.ceil(total_rows / max(1, parallelism * TASKS_PER_CORE))
    rows = max(1, min(by_memory, max(spread, MIN_ROWS_PER_TASK)))
    return max(rows, ROWS_PER_CENTROID_COPY * num_partitions)


# A merge holds the merged segment in its Python worker. Measured (bench/merge_memory.py, 16
# segments, 128-d): IVF_RQ grew the process by 118 MiB at 1M rows and 461 MiB at 10M (stored: 33 B
# per row), IVF_PQ by 91 MiB at 1M (stored: 22 B per row), IVF_FLAT by 73 MiB at 1M (stored: 518 B
# per row: it streams). So about 100 MiB plus 1.5x the stored bytes; MERGE_OVERHEAD leaves room.
# The default segment is as large as a merge task may hold (--merge-memory, default MERGE_TASK_BYTES:
# merges are few, one per segment, so each may take more than a build task), within the bounds
# below: every segment costs every query (docs/benchmarks.md, segment latency), so fewer, larger
# segments are faster to search, and large executors should be given a larger --merge-memory.
MERGE_TASK_BYTES = 4 * 1024**3
MERGE_OVERHEAD = 2.0
MIN_DEFAULT_SEGMENT_ROWS, MAX_DEFAULT_SEGMENT_ROWS = 1 << 20, 250_000_000


# Where the merged size was not measured (IVF_FLAT streams its merge; scalar and text types),
# for the types whose segments are not merged, and for `update`'s segment
# policy (its layout was designed and simulated at this size), segments keep this size.
FIXED_SEGMENT_ROWS = 10_000_000


def default_max_segment_rows(kind: IndexType, params: IndexParams, dim: int, vector_bytes: int,
                             merge_bytes: int = MERGE_TASK_BYTES) -> int:
    """Rows per merged segment when --max-segment-rows is not given: for IVF_RQ and IVF_PQ, what
    one merge holds in `merge_bytes`, from the index's stored bytes per row (IVF_RQ 5 bits at
    128-d: 104 B, 20.6M rows; at 768-d: 504 B, 4.3M rows; IVF_PQ with 16 sub-vectors: 24 B, 89M
    rows); FIXED_SEGMENT_ROWS for the others."""
    stored = kind.encoded_bytes_per_row(params, dim, vector_bytes)
    if not stored:
        return FIXED_SEGMENT_ROWS
    return rows_one_merge_holds(merge_bytes, stored, MIN_DEFAULT_SEGMENT_ROWS, MAX_DEFAULT_SEGMENT_ROWS)


def rows_one_merge_holds(merge_bytes: int, stored_per_row: float, least: float, most: int) -> int:
    """The rows whose stored bytes one merge holds in `merge_bytes` (MERGE_OVERHEAD times what
    they store), within [least, most]."""
    rows = merge_bytes // max(1, int(MERGE_OVERHEAD * stored_per_row))
    return int(min(most, max(least, rows, 1)))


def max_segment_rows(config: BuildConfig, params: IndexParams, snap: DatasetSnapshot) -> int:
    """--max-segment-rows, or its default: from the merge's memory for IVF_RQ and IVF_PQ builds
    and for their multivector updates, FIXED_SEGMENT_ROWS otherwise and for other updates (an
    unmerged type's segment is a build task, and `segment_rows` bounds it further by the task's
    memory)."""
    if config.sizing.max_segment_rows:
        return config.sizing.max_segment_rows
    if not params.kind.mergeable:
        return FIXED_SEGMENT_ROWS
    if snap.multivector:  # build and update alike: the update's policy must see the build's segments as full
        return multivector_segment_rows(params, snap, config.sizing.merge_memory)
    if config.runtime.mode == "update":
        return FIXED_SEGMENT_ROWS
    return default_max_segment_rows(params.kind, params, snap.dim, snap.vector_bytes, config.sizing.merge_memory)


def multivector_segment_rows(params: IndexParams, snap: DatasetSnapshot, merge_bytes: int) -> int:
    """Rows per merged segment of a multivector column: what one merge holds in `merge_bytes`,
    a code per vector (300 vectors a row of IVF_RQ 5 bits at 128-d: 31 kB a row, 68,829 rows in
    4 GiB), at least a million vectors and at most FIXED_SEGMENT_ROWS rows; FIXED_SEGMENT_ROWS
    where the merged size was not measured."""
    per_vector = params.kind.encoded_bytes_per_row(params, snap.dim, snap.vector_bytes)
    if not per_vector:
        return FIXED_SEGMENT_ROWS
    return rows_one_merge_holds(merge_bytes, per_vector * snap.vectors_per_row,
                                MIN_DEFAULT_SEGMENT_ROWS // snap.vectors_per_row, FIXED_SEGMENT_ROWS)


def policy_segment_rows(config: BuildConfig, params: IndexParams, snap: DatasetSnapshot) -> int:
    """The largest segment `update`'s segment policy aims at: max_segment_rows, or for a type whose
    segments are not merged what one task may build (`segment_rows`), so that its full segments
    are the ones a task can build and an update never folds more rows than one task holds."""
    limit = max_segment_rows(config, params, snap)
    return limit if params.kind.mergeable else segment_rows(limit, snap.bytes_per_row)


def segment_rows_origin(config: BuildConfig, params: IndexParams, snap: DatasetSnapshot) -> str:
    """Where max_segment_rows's figure comes from, for the log: the flag, a fixed default, or
    --merge-memory (the same branches as max_segment_rows)."""
    measured = params.kind.mergeable and params.kind.encoded_bytes_per_row(params, snap.dim, snap.vector_bytes)
    if config.sizing.max_segment_rows:
        return "--max-segment-rows"
    if config.runtime.mode == "update" and not (snap.multivector and measured):
        return "the default for an update"
    if not measured:
        return f"the default for {params.index_type}"  # FIXED_SEGMENT_ROWS: a merge not measured
    per_row = f" and {snap.vectors_per_row:.0f} vectors a row" if snap.multivector else ""
    return f"the default, from --merge-memory {config.sizing.merge_memory / 2**30:.1f} GiB{per_row}"


def merge_peak_bytes(config: BuildConfig, params: IndexParams, snap: DatasetSnapshot,
                     rows: Optional[int] = None) -> int:
    """What one merge task holds at most, counted like a build task's vector bytes (a multivector
    row stores a code per vector), when the run encodes `rows` rows (default: the table's)."""
    per_vector = params.kind.encoded_bytes_per_row(params, snap.dim, snap.vector_bytes)
    stored = per_vector * snap.vectors_per_row if per_vector else snap.bytes_per_row
    rows = snap.num_rows if rows is None else rows
    return int(MERGE_OVERHEAD * stored * min(max_segment_rows(config, params, snap), rows))


def largest_task_bytes(fragments: Sequence[FragmentInfo], bytes_per_row: int, mergeable: bool,
                       max_segment_rows: int, rows_per_task: Optional[int] = None, num_partitions: int = 0,
                       merge_bytes: int = 0) -> int:
    """Vector bytes of the largest task the plan can make: what executors must hold. A fragment
    is never split, so the largest fragment is a floor; a merge task (`merge_bytes`, what it
    holds) counts like a build task."""
    total = sum(f.num_rows for f in fragments)
    if rows_per_task:
        rows = rows_per_task
    elif mergeable:
        rows = max(TARGET_TASK_BYTES // max(1, bytes_per_row), ROWS_PER_CENTROID_COPY * num_partitions)
    else:
        rows = segment_rows(max_segment_rows, bytes_per_row)
    rows = max(rows, max((f.num_rows for f in fragments), default=0))
    return max(min(total, rows) * bytes_per_row, merge_bytes)


def segment_rows(max_segment_rows: int, bytes_per_row: int) -> int:
    """The largest segment one task may build: --max-segment-rows, or fewer if a task could not
    hold them (UNMERGED_TASK_BYTES)."""
    return max(1, min(max_segment_rows, UNMERGED_TASK_BYTES // max(1, bytes_per_row)))


def unmerged_rows_per_task(total_rows: int, max_segment_rows: int, bytes_per_row: int, parallelism: int) -> int:
    """Rows per task when each task is one committed segment (types whose segments are not merged).

    As few segments as the largest task allows (`segment_rows`), since every segment costs every
    query; but a table that fits in a few segments is spread over the task slots, so that its
    build runs in parallel, while each segment keeps at least MIN_UNMERGED_SEGMENT_ROWS rows and
    the spread adds no more than MANY_SEGMENTS segments."""
    fewest = math.ceil(total_rows / segment_rows(max_segment_rows, bytes_per_row))
    spread = min(parallelism, total_rows // MIN_UNMERGED_SEGMENT_ROWS, MANY_SEGMENTS)
    return max(1, math.ceil(total_rows / max(1, fewest, spread)))


def plan_groups(
    fragments: Sequence[FragmentInfo],
    *,
    rows_per_task: Optional[int] = None,
    fragments_per_task: Optional[int] = None,
) -> tuple[FragmentGroup, ...]:
    """Cut the fragments, in id order, into contiguous groups.

    With `fragments_per_task`, every group has that many fragments (the last may have fewer).
    Otherwise the number of groups is ceil(rows / rows_per_task) and the cuts fall where the
    running row count crosses each multiple of rows/groups, which balances rows as well as
    whole fragments allow.
    """
    ordered = sorted(fragments, key=lambda f: f.fragment_id)
    if not ordered:
        return ()
    if fragments_per_task:
        chunks = [
            ordered[i : i + fragments_per_task] for i in range(0, len(ordered), fragments_per_task)
        ]
    else:
        chunks = _balanced_chunks(ordered, rows_per_task or MIN_ROWS_PER_TASK)
    return tuple(
        FragmentGroup(i, tuple(f.fragment_id for f in chunk), sum(f.num_rows for f in chunk))
        for i, chunk in enumerate(chunks)
    )


def _balanced_chunks(ordered: Sequence[FragmentInfo], rows_per_task: int) -> list[list[FragmentInfo]]:
    total = sum(f.num_rows for f in ordered)
    n_groups = max(1, min(len(ordered), math.ceil(total / rows_per_task)))
    chunks: list[list[FragmentInfo]] = []
    last_slot = -1
    done = 0
    for frag in ordered:
        # A fragment belongs to the slot its midpoint falls in; slots are monotone, so each
        # chunk is a contiguous run. Empty slots (a fragment bigger than a slot) just vanish.
        midpoint = done + frag.num_rows / 2
        slot = min(n_groups - 1, int(midpoint * n_groups / total)) if total else 0
        if slot != last_slot or not chunks:
            chunks.append([])
            last_slot = slot
        chunks[-1].append(frag)
        done += frag.num_rows
    return chunks
