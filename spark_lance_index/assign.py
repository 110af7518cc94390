"""Partition assignment as a blocked GEMM, handed to Lance (`precomputed_partition_dataset`).

Lance assigns each row to its nearest centroid with one vector-matrix product per row (its
k-means' `compute_membership_and_dist`: SIMD distances, no GEMM), so a segment build's time grows
with the partition count; past partitions x dimension of 1,000,000 it assigns through an HNSW over
the centroids instead, which is approximate (ENGINE_FACTS: 8% to 58% of rows outside their
nearest centroid's partition). Here the nearest centroid of a block of rows is one GEMM,
argmax over x.c - |c|^2 / 2, which BLAS runs near the machine's peak, and exact. Lance takes the
result as a Lance dataset of one fragment and one file (`row_id` uint64, `partition` uint32), and
still computes residuals, codes and files.

Lance's own rules are kept (measured on pylance 14.0.2): rows whose vector is null, or holds a
NaN or an infinity, are in no partition (Lance leaves them out whether or not the table lists
them, so they are not listed); cosine assigns unit vectors by l2 (Lance normalises before it
assigns; a zero vector becomes NaN and is left out); dot takes the largest inner product. A row
missing from the table is silently left out of the segment, so `check_segment` reads the
segment's partition lengths back from its file and compares them with what was assigned.

Plain numpy, pyarrow and Lance, no Spark: a build task calls `assign_fragments`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from .storage import Location

# A block's scores (rows x partitions float32) stay within about this many bytes: large enough
# for BLAS to run near its peak, small enough to stay in cache on the way to the argmax
# (measured at 128-d, 1,000 to 4,096 partitions: 4 MiB blocks 5-13% faster than 16 MiB).
BLOCK_BYTES = 4 * 1024 * 1024
MIN_BLOCK_ROWS, MAX_BLOCK_ROWS = 256, 4096
SCAN_BATCH_ROWS = 65_536


def block_rows(num_partitions: int) -> int:
    return int(np.clip(BLOCK_BYTES // (4 * max(1, num_partitions)), MIN_BLOCK_ROWS, MAX_BLOCK_ROWS))


@dataclass(frozen=True)
class CentroidOperand:
    """The centroids as one GEMM operand, (dim + 1) x partitions float32, and the shift both
    sides are moved by first.

    A row's score against a centroid is x.c - |c|^2 / 2 for l2 and cosine (the nearest centroid
    scores highest), x.c for dot; the last row holds the per-centroid term, which a column of ones
    beside the rows meets. One GEMM then gives the scores, with no two passes over them to scale
    and add the term (measured at 128-d, one thread, interleaved runs: 2.6 against 3.0 s per
    million rows at 1,000 partitions, 10.8 against 12.6 at 4,096; at 768-d the same within 3%).
    For l2 and cosine, rows and centroids are first moved by the centroids' mean (distances do not
    change): far from the origin, |c|^2 and 2 x.c are large and nearly equal, and float32 loses
    their difference (measured: rows and centroids offset by 1,000 put 45% of rows in another
    partition unshifted, none shifted)."""

    matrix: np.ndarray
    shift: Optional[np.ndarray]  # subtracted from every row first; None for dot

    @property
    def num_partitions(self) -> int:
        return int(self.matrix.shape[1])


def prepare_centroids(centroids: np.ndarray, metric: str) -> CentroidOperand:
    c = np.asarray(centroids, dtype=np.float32)
    if metric == "dot":
        return CentroidOperand(np.ascontiguousarray(np.vstack([c.T, np.zeros((1, len(c)), np.float32)])), None)
    shift = c.mean(axis=0, dtype=np.float64).astype(np.float32)
    moved = c - shift
    term = -0.5 * np.einsum("ij,ij->i", moved, moved)
    return CentroidOperand(np.ascontiguousarray(np.vstack([moved.T, term[None, :]])), shift)


def nearest(vectors: np.ndarray, operand: CentroidOperand, metric: str) -> np.ndarray:
    """The nearest centroid (uint32) of each row of `vectors` (float32, finite), blocked."""
    out = np.empty(len(vectors), np.uint32)
    if metric == "cosine":
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    dim, step = vectors.shape[1], block_rows(operand.num_partitions)
    rows = np.empty((min(step, len(vectors)), dim + 1), np.float32)
    rows[:, dim] = 1.0
    for start in range(0, len(vectors), step):
        block = vectors[start:start + step]
        if operand.shift is None:
            rows[:len(block), :dim] = block
        else:
            np.subtract(block, operand.shift, out=rows[:len(block), :dim])
        out[start:start + len(block)] = np.argmax(rows[:len(block)] @ operand.matrix, axis=1)  # the GEMM
    return out


def usable(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Rows Lance puts in a partition: finite vectors (a null vector arrives as NaN), and for
    cosine a nonzero one."""
    ok = np.isfinite(vectors).all(axis=1)
    if metric == "cosine":
        ok &= np.einsum("ij,ij->i", np.where(ok[:, None], vectors, 0), np.where(ok[:, None], vectors, 0)) > 0
    return ok


@dataclass(frozen=True)
class Assignment:
    """A task's rows and the partition of each, and what it took."""

    row_ids: np.ndarray  # uint64
    partitions: np.ndarray  # uint32
    scanned_rows: int  # rows read, usable or not
    seconds: float

    def counts(self, num_partitions: int) -> np.ndarray:
        return np.bincount(self.partitions, minlength=num_partitions)


def assign_fragments(ds: Any, column: str, fragment_ids: Sequence[int], centroids: np.ndarray, metric: str,
                     threads: Optional[int] = None) -> Assignment:
    """Read the fragments' vectors with their row ids and assign each usable row, with at most
    `threads` BLAS threads (default: the task's share of the cores, `task_threads`)."""
    import time

    from .dataset import vector_column
    from .exact_search import as_matrix

    started = time.perf_counter()
    operand = prepare_centroids(centroids, metric)
    ids, parts, scanned = [], [], 0
    scanner = ds.scanner(columns=[column], with_row_id=True, batch_size=SCAN_BATCH_ROWS,
                         fragments=[ds.get_fragment(f) for f in fragment_ids])
    with _blas_threads(threads or task_threads()):
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            scanned += batch.num_rows
            vectors = as_matrix(vector_column(batch, column))
            ok = usable(vectors, metric)
            row_ids = batch.column("_rowid").to_numpy()
            if not ok.all():
                vectors, row_ids = vectors[ok], row_ids[ok]
            ids.append(row_ids.astype(np.uint64, copy=False))
            parts.append(nearest(vectors, operand, metric))
    row_ids = np.concatenate(ids) if ids else np.empty(0, np.uint64)
    partitions = np.concatenate(parts) if parts else np.empty(0, np.uint32)
    if len(np.unique(row_ids)) != len(row_ids):
        raise AssertionError("the scan returned a row twice: the partition table would be ambiguous")
    return Assignment(row_ids, partitions, scanned, time.perf_counter() - started)


def _blas_threads(limit: int) -> AbstractContextManager[Any]:
    """BLAS bounded to `limit` threads while the assignment runs (threadpoolctl, a dependency; a
    node without it runs unbounded rather than failing its task)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def task_threads() -> int:
    """The cores this task may use: Spark's `spark.task.cpus` inside a task (else LANCE_CPU_THREADS,
    else every core). A Python worker's BLAS otherwise starts a thread per core of the
    executor in every task: 16 tasks on 16 cores, 256 threads."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:
        pass
    return max(1, int(os.environ.get("LANCE_CPU_THREADS") or os.cpu_count() or 1))


def write_partition_table(assignment: Assignment, folder: str) -> str:
    """The table Lance reads: one fragment, one data file, `row_id` uint64 and `partition`
    uint32. -> its URI."""
    import lance
    import pyarrow as pa

    uri = os.path.join(folder, "partitions.lance")
    table = pa.table({"row_id": pa.array(assignment.row_ids, pa.uint64()),
                      "partition": pa.array(assignment.partitions, pa.uint32())})
    rows = max(1, table.num_rows)
    lance.write_dataset(table, uri, max_rows_per_file=rows + 1, max_rows_per_group=min(rows, 1 << 20))
    return uri


def segment_partition_lengths(dataset: Location, storage_options: Mapping[str, str], index_uuid: str) -> np.ndarray:
    """Rows per partition of a segment as stored, read from its `auxiliary.idx` (the codes or
    vectors, by partition: the IVF message's field 3; `index.idx` of a segment not yet merged
    has no lengths, and an HNSW graph has more rows than the segment)."""
    from lance.file import LanceFileReader

    from .index_model import _global_buffer, repeated_uint

    reader = LanceFileReader(str(dataset.child(f"_indices/{index_uuid}/auxiliary.idx")),
                             storage_options=dict(storage_options) or None)
    return np.array(repeated_uint(_global_buffer(reader, b"lance:ivf"), 3), dtype=np.int64)


class AssignmentLost(RuntimeError):
    """Lance's segment does not hold the rows the partition table assigned: never committed."""


def check_segment(dataset: Location, storage_options: Mapping[str, str], index_uuid: str, assignment: Assignment,
                  num_partitions: int) -> None:
    """The segment holds, partition by partition, exactly the rows that were assigned."""
    lengths = segment_partition_lengths(dataset, storage_options, index_uuid)
    wanted = assignment.counts(num_partitions)
    if len(lengths) != num_partitions or not np.array_equal(lengths, wanted):
        raise AssignmentLost(
            f"segment {index_uuid} holds {int(lengths.sum())} rows in {len(lengths)} partitions, but "
            f"{len(assignment.row_ids)} rows in {num_partitions} partitions were assigned to it"
            + ("" if len(lengths) != num_partitions else
               f" ({int((lengths != wanted).sum())} partitions differ)"))
