"""Distributed k-means in plain numpy: what an executor computes and what the driver adds up.

`--trainer distributed` trains the IVF centroids and the PQ codebook here instead of in Lance's
one-process k-means. The sample stays on the executors (one block per task, drawn from the
task's own fragments); each Lloyd round ships the current centroids out and brings back only
k x d partial sums and k counts per task, so the driver's memory depends on k x d, never on the
sample. Nothing here imports Spark: `train.py` runs these functions through `transport.py`.

The same code trains both artifacts. A *codebook* of `m` sub-spaces with `k` codes each holds
IVF centroids as m = 1, k = partitions, and a PQ codebook as m = sub-vectors, k = 256 (trained
on residuals to the IVF centroids, as Lance does for L2 and cosine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from .dataset import FragmentInfo

log = logging.getLogger("spark_lance_index")

CHUNK_ROWS = 8192  # rows assigned per GEMM: bounds the (rows x k) distance matrix an executor holds


@dataclass(frozen=True)
class SampleTask:
    """One executor's share of the training sample: `rows` rows drawn at random, without
    replacement, from the live rows of its fragments ((fragment id, live rows) pairs)."""

    uri: str
    version: int
    column: str
    fragments: tuple[tuple[int, int], ...]
    rows: int
    seed: int
    storage_options: Mapping[str, str] = field(default_factory=dict)
    multivector: bool = False
    normalize: bool = False  # cosine: train on unit vectors, as Lance does

    @property
    def num_rows(self) -> int:
        return self.rows


CACHE_RECORD_ROWS = 16384  # rows per cached record: 8 MiB at 128-d, 48 MiB at 768-d


def draw_sample(task: SampleTask, _shared: object = None) -> list[Block]:
    """The task's sample rows as float32 (n, dim), null, NaN and infinite vectors dropped (after
    normalising, for cosine: a zero vector is dropped too, as Lance does).

    Seeded by the task, so a block Spark recomputes (an evicted cache, a lost executor) is the
    same block. A multivector row contributes all its vectors, as Lance trains on them. Returned
    in records of CACHE_RECORD_ROWS rows, which is what the cache holds and a round reads."""
    from .dataset import open_dataset
    from .exact_search import as_matrix, take_at_random

    ds = open_dataset(task.uri, task.storage_options, task.version)
    parts = []
    for column in take_at_random(ds, task.fragments, task.rows, np.random.default_rng(task.seed), task.column):
        if task.multivector:
            column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
            column = column.flatten()
        parts.append(as_matrix(column))
    if not parts:
        return []
    rows = np.vstack(parts)
    if task.normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    rows = np.ascontiguousarray(rows[np.isfinite(rows).all(axis=1)], dtype=np.float32)
    return [Block(rows[i:i + CACHE_RECORD_ROWS].copy(), seed=task.seed * 65_537 + i)
            for i in range(0, len(rows), CACHE_RECORD_ROWS)]


def plan_sample(fragments: Sequence[FragmentInfo], total_rows: int, tasks: int, uri: str, version: int, column: str,
                storage_options: Mapping[str, str], seed: int, multivector: bool = False,
                normalize: bool = False) -> list[SampleTask]:
    """Split a sample of `total_rows` rows over about `tasks` tasks of contiguous fragments, each
    drawing its share in proportion to its live rows (so the sample is uniform over the table)."""
    live = [(f.fragment_id, f.num_rows) for f in sorted(fragments, key=lambda f: f.fragment_id) if f.num_rows > 0]
    table = sum(n for _, n in live)
    if not live or table == 0:
        return []
    per_task = max(1, -(-table // max(1, tasks)))
    chunks, current, size = [], [], 0
    for frag in live:
        current.append(frag)
        size += frag[1]
        if size >= per_task:
            chunks.append(current)
            current, size = [], 0
    if current:
        chunks.append(current)
    want = min(total_rows, table)
    # largest-remainder shares, so the task samples add up to exactly `want`
    exact = [want * sum(n for _, n in c) / table for c in chunks]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(chunks)), key=lambda i: exact[i] - shares[i], reverse=True)[: want - sum(shares)]:
        shares[i] += 1
    return [SampleTask(uri, version, column, tuple(c), s, seed * 1_000_003 + i, dict(storage_options), multivector,
                       normalize)
            for i, (c, s) in enumerate(zip(chunks, shares)) if s > 0]


# --- one Lloyd round ---------------------------------------------------------------------

@dataclass
class Partials:
    """What one task sends back per round: per sub-space and code, the sum of the rows assigned
    to it and their count, and the task's total distance (the loss)."""

    sums: np.ndarray  # (m, k, ds) float64
    counts: np.ndarray  # (m, k) int64
    loss: float

    def __add__(self, other: Partials) -> Partials:
        """Adds into this one's arrays (a task's running total is its own)."""
        self.sums += other.sums
        self.counts += other.counts
        self.loss += other.loss
        return self


@dataclass(frozen=True)
class Block:
    """A cached piece of the sample: its rows and, in the second level of the hierarchy, the
    first-level cluster each row belongs to (its codes are only those of that cluster)."""

    rows: np.ndarray  # (n, d) float32
    groups: Optional[np.ndarray] = None  # (n,) int64
    seed: int = 0  # of the record: draws from it are its own


@dataclass(frozen=True)
class Round:
    """What a round ships to the executors: the codes (per sub-space) and the distance."""

    codebook: np.ndarray  # (m, k, ds) float32
    metric: str  # "l2" or "dot" (cosine trains l2 on unit vectors, as Lance does)


def assign(rows: np.ndarray, codes: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(nearest code, its distance) of each row, one GEMM per chunk of rows: squared l2
    (|x|^2 - 2 x.c + |c|^2), or Lance's dot distance 1 - x.c."""
    labels = np.empty(len(rows), np.int64)
    dist = np.empty(len(rows), np.float64)
    code_norms = np.einsum("ij,ij->i", codes, codes)
    for start in range(0, len(rows), CHUNK_ROWS):
        x = rows[start:start + CHUNK_ROWS]
        scores = x @ codes.T  # (n, k)
        scores = (-scores) if metric == "dot" else (code_norms[None, :] - 2 * scores)
        best = scores.argmin(axis=1)
        got = scores[np.arange(len(x)), best].astype(np.float64)
        labels[start:start + len(x)] = best
        dist[start:start + len(x)] = 1 + got if metric == "dot" else np.maximum(got + np.einsum("ij,ij->i", x, x), 0)
    return labels, dist


def _sum_by_label(rows: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the sum of its rows (float64 across chunks) and their count: a one-hot GEMM per
    chunk, k x rows x d flops like the assignment itself (codes per call are at most a few hundred:
    one level of the hierarchy, or a PQ sub-space's 256)."""
    sums = np.zeros((k, rows.shape[1]), np.float64)
    for start in range(0, len(rows), CHUNK_ROWS):
        lab = labels[start:start + CHUNK_ROWS]
        onehot = np.zeros((k, len(lab)), rows.dtype)
        onehot[lab, np.arange(len(lab))] = 1
        sums += onehot @ rows[start:start + CHUNK_ROWS]
    return sums, np.bincount(labels, minlength=k)


def round_partials(block: Block, r: Round) -> Partials:
    """Assign every row of the block to its nearest code (per sub-space) and sum the rows of
    each code."""
    m, k, ds = r.codebook.shape
    loss = 0.0
    rows = block.rows
    sums = np.zeros((m, k, ds), np.float64)
    counts = np.zeros((m, k), np.int64)
    if not len(rows):
        return Partials(sums, counts, loss)
    for j in range(m):
        sub = rows[:, j * ds:(j + 1) * ds] if m > 1 else rows
        labels, dist = assign(sub, r.codebook[j], r.metric)
        sums[j], counts[j] = _sum_by_label(sub, labels, k)
        loss += float(dist.sum())
    return Partials(sums, counts, loss)


def count_groups(block: Block, r: Round) -> np.ndarray:
    """Rows per code of the (first-level) codebook: what the second level's quotas follow."""
    labels, _ = assign(block.rows, r.codebook[0], r.metric)
    return np.bincount(labels, minlength=r.codebook.shape[1])


def with_groups(block: Block, r: Round) -> Block:
    """The block with each row's first-level cluster attached, rows sorted by it (so that each
    round takes a cluster's rows as one slice)."""
    labels, _ = assign(block.rows, r.codebook[0], r.metric)
    order = np.argsort(labels, kind="stable")
    return Block(np.ascontiguousarray(block.rows[order]), labels[order], block.seed)


# --- the second level: each first-level cluster trained to convergence in one task ---------

@dataclass(frozen=True)
class ClusterJob:
    """What the second level ships: each cluster's number of codes, and how to train them."""

    quota: np.ndarray  # codes per first-level cluster
    metric: str
    max_iters: int
    seed: int
    first: Optional[Round] = None  # the first level, which `split_by_group` assigns rows with


def split_by_group(block: Block, job: ClusterJob) -> Iterator[tuple[int, tuple[int, np.ndarray]]]:
    """(cluster, (the block's seed, its rows of that cluster)) for each first-level cluster with
    rows in the block: the pieces the shuffle brings together."""
    if job.first is not None:
        block = with_groups(block, job.first)
    groups = block.groups if block.groups is not None else np.zeros(len(block.rows), np.int64)
    present = np.unique(groups)
    starts = np.searchsorted(groups, present, side="left")
    stops = np.searchsorted(groups, present, side="right")
    for g, start, stop in zip(present, starts, stops):
        yield int(g), (block.seed, block.rows[start:stop])


def train_cluster(g: int, pieces: list, job: ClusterJob) -> tuple[int, np.ndarray]:
    """Lloyd's iterations over one cluster's rows, in this process, to convergence (the same
    initial draw, update and stopping rule as the distributed rounds). The pieces are put in the
    order of their blocks, so a rerun trains the same codes. -> (g, its codes (quota[g], d))"""
    rows = np.concatenate([r for _, r in sorted(pieces, key=lambda p: p[0])])
    quota = int(job.quota[g])
    if quota == 0 or not len(rows):
        return g, np.empty((0, rows.shape[1]), np.float32)
    _, _, initial = draw_rows(Block(rows, seed=g), Draw(np.array([quota]), job.seed))
    whole = Block(rows)
    codes, _ = lloyd(lambda r: round_partials(whole, r), initial[None], job.metric, job.max_iters,
                     f"cluster {g} ({quota} codes, {len(rows)} rows)", quiet=True)
    return g, codes[0]


# --- initial codes: a uniform draw of sample rows ------------------------------------------

@dataclass(frozen=True)
class Draw:
    """How many rows to draw: `quota[g]` rows of each cluster g (one group: `quota[0]` rows of the
    whole sample), with random keys from `seed`."""

    quota: np.ndarray
    seed: int


def draw_rows(block: Block, d: Draw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, groups, rows): the rows of this block with the smallest random keys per group.
    Keeping the smallest keys per group over all blocks is a uniform draw without replacement."""
    rows = block.rows
    groups = block.groups if block.groups is not None else np.zeros(len(rows), np.int64)
    keys = np.random.default_rng([d.seed, block.seed]).random(len(rows))
    return _keep_smallest(keys, groups, rows, d.quota)


def _keep_smallest(keys: np.ndarray, groups: np.ndarray, rows: np.ndarray,
                   quota: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((keys, groups))
    keys, groups, rows = keys[order], groups[order], rows[order]
    first = np.searchsorted(groups, groups, side="left")
    keep = (np.arange(len(keys)) - first) < quota[groups]
    return keys[keep], groups[keep], rows[keep]


def merge_draws(quota: np.ndarray) -> Callable:
    def combine(a: tuple[np.ndarray, np.ndarray, np.ndarray],
                b: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _keep_smallest(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]),
                              np.concatenate([a[2], b[2]]), quota)
    return combine


def quotas(k: int, sizes: np.ndarray) -> np.ndarray:
    """Split k codes over clusters in proportion to their rows (largest remainder), at least one
    per non-empty cluster and never more than its rows."""
    sizes = np.asarray(sizes, np.float64)
    out = np.zeros(len(sizes), np.int64)
    nonempty = sizes > 0
    out[nonempty] = 1
    left = k - int(out.sum())
    if left > 0 and sizes.sum() > 0:
        exact = left * sizes / sizes.sum()
        out += np.floor(exact).astype(np.int64)
        short = k - int(out.sum())
        out[np.argsort(-(exact - np.floor(exact)))[:short]] += 1
    out = np.minimum(out, sizes.astype(np.int64))
    while out.sum() < min(k, sizes.sum()):  # a capped cluster's codes go to those with rows to spare
        out[int(np.argmax(sizes - out))] += 1
    return out


# --- the driver's loop ---------------------------------------------------------------------

def update_codebook(total: Partials, previous: np.ndarray, metric: str) -> tuple[np.ndarray, int]:
    """New codes = the mean of their rows (unit length for dot, as Lance's spherical k-means). An
    empty code takes half of the largest code: both become that code scaled by 1 +- 1/1024 in
    alternating dimensions, as Lance's `split_clusters` does. (At the second level of the
    hierarchy each cluster is trained alone, so a code is only ever split within its own
    first-level cluster.) -> (codes, empty)"""
    counts = total.counts
    new = np.where(counts[..., None] > 0, total.sums / np.maximum(counts, 1)[..., None], previous).astype(np.float32)
    ds = new.shape[2]
    eps = np.where(np.arange(ds) % 2 == 0, 1.0, -1.0).astype(np.float32) / 1024
    empty = 0
    for j in range(new.shape[0]):
        sizes = counts[j].astype(np.float64)
        for e in np.flatnonzero(sizes == 0):
            big = int(np.argmax(sizes))
            if sizes[big] < 2:
                break
            centre = new[j, big].copy()
            new[j, e], new[j, big] = centre * (1 + eps), centre * (1 - eps)
            sizes[e] = sizes[big] / 2
            sizes[big] -= sizes[e]
            empty += 1
    if metric == "dot":
        new /= np.maximum(np.linalg.norm(new, axis=2, keepdims=True), 1e-30)
    return new, empty


TOLERANCE = 1e-4  # Lance's: stop once the loss changes by less than this fraction


def lloyd(run_round: Callable[[Round], Partials], initial: np.ndarray, metric: str, max_iters: int,
          label: str, quiet: bool = False) -> tuple[np.ndarray, list[float]]:
    """Lloyd's iterations, each a round over the cached sample (`run_round` returns the summed
    partials). Stops after `max_iters` rounds or once the loss changes by less than TOLERANCE.
    -> (codebook, loss per round)"""
    codebook, losses = initial.astype(np.float32), []
    if metric == "dot":
        codebook /= np.maximum(np.linalg.norm(codebook, axis=2, keepdims=True), 1e-30)
    for it in range(max_iters):
        total = run_round(Round(codebook, metric))
        codebook, empty = update_codebook(total, codebook, metric)
        losses.append(total.loss)
        log.debug("%s: round %d, loss %.6g, %d empty codes split", label, it + 1, total.loss, empty)
        if len(losses) > 1 and abs(losses[-2] - losses[-1]) < TOLERANCE * abs(losses[-2]):
            break
    (log.debug if quiet else log.info)("%s: %d rounds, loss %.6g", label, len(losses),
                                       losses[-1] if losses else float("nan"))
    return codebook, losses


def residual_block(block: Block, shared: tuple[np.ndarray, float]) -> Block:
    """About `fraction` of the block's rows, drawn at random, each minus its nearest IVF centroid
    (l2, as Lance assigns for l2 and cosine): what the PQ codebook encodes. Centroids None: the
    rows themselves (dot, which Lance's PQ encodes without residuals)."""
    centroids, fraction = shared
    keep = np.random.default_rng([block.seed, 2]).random(len(block.rows)) < fraction  # not a prefix: tables are sorted
    rows = block.rows[keep]
    if centroids is None:
        return Block(rows, seed=block.seed)
    labels, _ = assign(rows, centroids, "l2")
    return Block((rows - centroids[labels]).astype(np.float32), seed=block.seed)
