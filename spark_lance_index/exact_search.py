"""Exact search, for the recall check: the true neighbours the committed index is measured against.

Exact search runs where the data is: each executor scans its fragment group and keeps only
the top-k per query; partial lists are merged pairwise (Spark's treeReduce), so the driver
never holds more than two (queries x k) lists, whatever the dataset size. The index itself is
queried from the driver, the way users will query it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa

from .dataset import open_dataset, vector_column
from .index_types import INDEX_TYPES


@dataclass(frozen=True)
class RecallSetting:
    """A query-time setting to measure recall at."""

    nprobes: int
    refine_factor: Optional[int] = None


@dataclass(frozen=True)
class RecallFigure:
    nprobes: int
    refine_factor: Optional[int]
    recall: float
    queries: int
    k: int


@dataclass(frozen=True)
class ExactSearchTask:
    """One executor's share of exact search: the fragments it scans."""

    uri: str
    version: int
    column: str
    metric: str
    fragment_ids: tuple[int, ...]
    k: int
    num_rows: int
    storage_options: Mapping[str, str] = field(default_factory=dict)
    multivector: bool = False  # rows hold lists of vectors; queries are lists of vectors too


@dataclass
class TopK:
    """Best k so far per query: row ids and distances, (queries, k) each, sorted by distance."""

    ids: np.ndarray
    distances: np.ndarray


def as_matrix(column: pa.Array) -> np.ndarray:
    """float32 (rows, dim) from a fixed-size-list column; null vectors become NaN rows."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    # the slice's own values, null rows' included (flatten() would drop those and misalign rows)
    flat = column.values.slice(column.offset * dim, len(column) * dim)
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    if column.null_count:
        matrix = matrix.copy()
        matrix[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return matrix


def distances(data: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """(queries, rows) distances as Lance ranks them; rows that are not finite never match."""
    if metric == "cosine":
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    finite = np.isfinite(data).all(1)
    if not finite.all():
        data = np.where(finite[:, None], data, 0)
    dots = queries @ data.T  # one GEMM per batch
    if metric == "l2":
        dist = np.einsum("ij,ij->i", data, data)[None, :] - 2 * dots + np.einsum("ij,ij->i", queries, queries)[:, None]
    elif metric == "cosine":
        dist = 1 - dots
    else:  # dot: larger inner product is nearer
        dist = -dots
    dist[:, ~finite] = np.inf
    return dist


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=-1, keepdims=True), 1e-30)


def multivector_distances(lists: pa.Array, queries: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
    """(queries, rows) multivector distances as Lance ranks them: for each vector of the query,
    1 - its best cosine similarity among the row's vectors, summed over the query's vectors
    (measured: Lance's `_distance` on a multivector column equals this). A row with no vectors,
    or with a vector that is not finite, never matches."""
    import pyarrow.compute as pc

    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full((len(queries), len(lists)), np.inf, dtype=np.float64)
    rows = np.flatnonzero(lengths > 0)
    if len(rows) == 0:
        return out
    vectors = as_matrix(lists.flatten())  # the vectors of the non-null rows, in row order
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[rows]
    broken = np.add.reduceat((~np.isfinite(vectors).all(1)).astype(np.int64), starts) > 0
    unit = _unit(np.nan_to_num(vectors, nan=0.0, posinf=0.0, neginf=0.0))
    for i, q in enumerate(queries):
        best = np.maximum.reduceat(_unit(np.asarray(q, dtype=np.float32)) @ unit.T, starts, axis=1)
        out[i, rows] = (1.0 - best).sum(0)
    out[:, rows[broken]] = np.inf
    return out


def merge_topk(a: TopK, b: TopK) -> TopK:
    """The best k of two partial lists, per query."""
    k = a.ids.shape[1]
    ids = np.concatenate([a.ids, b.ids], axis=1)
    dist = np.concatenate([a.distances, b.distances], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return TopK(np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1))


def empty_topk(queries: int, k: int) -> TopK:
    return TopK(np.full((queries, k), -1, np.int64), np.full((queries, k), np.inf, np.float32))


def exact_topk_of_fragments(task: ExactSearchTask, queries: np.ndarray) -> TopK:
    """Scan the task's fragments once and keep the k nearest rows per query."""
    ds = open_dataset(task.uri, task.storage_options, task.version)
    best = empty_topk(len(queries), task.k)
    scanner = ds.scanner(
        columns=[task.column], with_row_id=True, batch_size=8192 if task.multivector else 32768,
        fragments=[ds.get_fragment(f) for f in task.fragment_ids],
    )
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        column = vector_column(batch, task.column)
        dist = (multivector_distances(column, queries) if task.multivector
                else distances(as_matrix(column), queries, task.metric))
        row_ids = batch.column("_rowid").to_numpy().astype(np.int64)
        # Only rows nearer than some query's k-th best so far can enter a list: once the lists
        # are full, few rows of a batch are, and the selection below runs on those alone.
        worst = best.distances[:, -1]
        useful = np.flatnonzero(((dist < worst[:, None]) | ~np.isfinite(worst)[:, None]).any(axis=0))
        if not len(useful):
            continue
        if len(useful) < batch.num_rows:
            dist, row_ids = dist[:, useful], row_ids[useful]
        k = min(task.k, len(row_ids))
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        chunk = TopK(row_ids[part], np.take_along_axis(dist, part, 1).astype(np.float32))
        if k < task.k:  # pad a tiny batch to k columns
            pad = empty_topk(len(queries), task.k - k)
            chunk = TopK(np.hstack([chunk.ids, pad.ids]), np.hstack([chunk.distances, pad.distances]))
        best = merge_topk(best, chunk)
    return best


def sample_multivector_queries(ds: Any, column: str, n: int, seed: int = 0,
                               fragment_ids: Optional[Iterable[int]] = None) -> tuple[list[np.ndarray], np.ndarray]:
    """n rows of a multivector column drawn at random (from the fragments `fragment_ids`, if
    given), each a (vectors, dim) float32 query, with their row ids; rows with no vectors, or a
    vector that is not finite, skipped."""
    rng = np.random.default_rng(seed)
    offsets = _draw_offsets(ds, max(n * 2, n + 16), rng, fragment_ids)
    if not len(offsets):
        return [], np.empty(0, np.int64)
    table = ds.take(offsets, columns=[column, "_rowid"])
    lists, ids = vector_column(table, column).to_pylist(), table.column("_rowid").to_numpy().astype(np.int64)
    kept = [(np.asarray(v, dtype=np.float32), i) for v, i in zip(lists, ids) if v]
    kept = [(q, i) for q, i in kept if np.isfinite(q).all()]
    order = rng.permutation(len(kept))[:n]
    return [kept[i][0] for i in order], np.array([kept[i][1] for i in order], dtype=np.int64)


def _draw_offsets(ds: Any, n: int, rng: np.random.Generator, fragment_ids: Optional[Iterable[int]]) -> np.ndarray:
    """Up to n row offsets (in the dataset's order, as `take` reads them), drawn uniformly
    without replacement from the live rows of the dataset, or of the fragments `fragment_ids`."""
    counts = [(f.fragment_id, f.count_rows()) for f in ds.get_fragments()]
    starts = dict(zip((f for f, _ in counts), np.concatenate([[0], np.cumsum([c for _, c in counts])[:-1]]).tolist()))
    chosen = None if fragment_ids is None else set(fragment_ids)
    wanted = [(f, c) for f, c in counts if chosen is None or f in chosen]
    pool = np.array([c for _, c in wanted], dtype=np.int64)
    if not pool.sum():
        return np.empty(0, np.int64)
    picked = np.sort(rng.choice(int(pool.sum()), size=min(int(pool.sum()), n), replace=False))
    ends = np.cumsum(pool)
    owner = np.searchsorted(ends, picked, side="right")
    return np.array([starts[wanted[o][0]] for o in owner], dtype=np.int64) + picked - (ends[owner] - pool[owner])


def take_at_random(ds: Any, fragments: Sequence[tuple[int, int]], n: int, rng: np.random.Generator,
                   column: str) -> list:
    """The `column` of n rows drawn uniformly, without replacement, from the live rows of
    `fragments` ((fragment id, live rows) pairs): one array per fragment drawn from, in table order."""
    counts = np.array([rows for _, rows in fragments], dtype=np.int64)
    total = int(counts.sum())
    if not total:
        return []
    picked = np.sort(rng.choice(total, size=min(n, total), replace=False))
    ends = np.cumsum(counts)
    owner = np.searchsorted(ends, picked, side="right")
    return [vector_column(ds.get_fragment(fragments[i][0]).take((picked[owner == i] - (ends[i] - counts[i])).tolist(),
                                                                columns=[column]), column)
            for i in np.unique(owner)]


def sample_queries(ds: Any, column: str, n: int, seed: int = 0,
                   fragment_ids: Optional[Iterable[int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """n vectors drawn uniformly from the live rows of the dataset, or of the fragments
    `fragment_ids`, with their row ids: a query drawn from the table is its own nearest
    neighbour, and the recall check leaves that row out (`drop_own_rows`). Null and NaN vectors
    are skipped."""
    rng = np.random.default_rng(seed)
    offsets = _draw_offsets(ds, max(n * 2, n + 16), rng, fragment_ids)
    if not len(offsets):
        return np.empty((0, resolve_list_size(ds, column)), np.float32), np.empty(0, np.int64)
    table = ds.take(offsets, columns=[column, "_rowid"])
    vectors = as_matrix(vector_column(table, column))
    ids = table.column("_rowid").to_numpy().astype(np.int64)
    finite = np.isfinite(vectors).all(1)
    vectors, ids = vectors[finite], ids[finite]
    order = rng.permutation(len(vectors))[:n]
    return vectors[order], ids[order]


def resolve_list_size(ds: Any, column: str) -> int:
    from .dataset import resolve_vector_field, vector_shape

    return vector_shape(resolve_vector_field(ds.schema, column), column)[0]


def drop_own_rows(ids: np.ndarray, own: Optional[np.ndarray], k: int) -> np.ndarray:
    """Each query's first k row ids (of k + 1) without the query's own row (-1 pads)."""
    if own is None:
        return ids[:, :k]
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for i, (row, me) in enumerate(zip(ids, own)):
        rest = row[row != me][:k]
        out[i, :len(rest)] = rest
    return out


@dataclass(frozen=True)
class QueryRun:
    """The committed index queried once per query at one setting: the true neighbours each
    query found, and how long each query took."""

    setting: RecallSetting
    k: int
    hits: np.ndarray  # per query
    valid: np.ndarray  # per query: exact neighbours there are (k, fewer on a tiny table)
    seconds: np.ndarray  # per query

    def figure(self, part: Union[slice, np.ndarray] = slice(None)) -> RecallFigure:
        """recall@k over the queries `part` selects."""
        return RecallFigure(self.setting.nprobes, self.setting.refine_factor,
                            int(self.hits[part].sum()) / max(1, int(self.valid[part].sum())),
                            len(self.hits[part]), self.k)

    def standard_error(self, part: Union[slice, np.ndarray] = slice(None)) -> float:
        """The standard error of `figure(part).recall` from the spread of per-query recall."""
        valid = self.valid[part]
        per_query = self.hits[part][valid > 0] / valid[valid > 0]
        return float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 1.0


def query_index(ds: Any, column: str, queries: np.ndarray, truth: np.ndarray, setting: RecallSetting,
                warmup: int = 0, own: Optional[np.ndarray] = None) -> QueryRun:
    """Query the committed index at one setting, one query at a time, against the exact row ids
    `truth` (queries x k). `warmup` queries run first, untimed and uncounted. `own`: each
    query's own row (queries drawn from the table), which is not counted: the index is asked for
    k + 1 rows and that one is dropped, as it was from the truth.

    `fast_search`: only indexed rows are searched, so the figure is the index's own."""
    k = truth.shape[1]
    nearest = {"column": column, "k": k + (own is not None), "nprobes": setting.nprobes}
    if setting.refine_factor:
        nearest["refine_factor"] = setting.refine_factor
    for q in queries[:warmup]:
        ds.to_table(nearest={**nearest, "q": q}, with_row_id=True, columns=[], fast_search=True,
                    disable_scoring_autoprojection=True)  # no `_distance`, and no warning per query
    hits, seconds = np.zeros(len(queries), np.int64), np.zeros(len(queries))
    for i, (q, true_ids) in enumerate(zip(queries, truth)):
        started = time.perf_counter()
        found = ds.to_table(nearest={**nearest, "q": q}, with_row_id=True, columns=[], fast_search=True,
                            disable_scoring_autoprojection=True)
        seconds[i] = time.perf_counter() - started
        ids = found.column("_rowid").to_numpy().astype(np.int64)
        if own is not None:
            ids = ids[ids != own[i]][:k]
        hits[i] = len(set(ids.tolist()) & set(true_ids[true_ids >= 0].tolist()))
    return QueryRun(setting, k, hits, (truth >= 0).sum(1), seconds)


def ann_recall(
    ds: Any, column: str, queries: np.ndarray, truth: np.ndarray, settings: Sequence[RecallSetting],
    own: Optional[np.ndarray] = None,
) -> list[QueryRun]:
    """Query the committed index at each setting; recall@k against the exact row ids
    (`run.figure()`), and per query for any subset of the queries (`run.figure(part)`)."""
    return [query_index(ds, column, queries, truth, s, own=own) for s in settings]


def default_refine_factors(index_type: str) -> tuple[int, ...]:
    """The refine factors the check measures when none are given: the ones a user would query
    the type with. Quantized codes (RQ, PQ, SQ) are usually queried with a refine, which
    re-ranks refine_factor x k candidates by exact distance; IVF_FLAT and IVF_HNSW_FLAT rank by
    exact distance already."""
    return (0,) if INDEX_TYPES[index_type].exact_ranking else (0, 10)


def recall_advice(figures: Sequence[RecallFigure], minimum: float, index_type: str,
                  swept: bool = False, diagnosis: Optional[str] = None) -> Optional[str]:
    """None if some measured setting reaches `minimum` (the index can be queried at that
    recall), else a one-line message with what to try: `diagnosis` when the recall check read
    what limits recall off its figures (recall_advice.py), else the usual levers."""
    if not figures or max(f.recall for f in figures) >= minimum:
        return None
    best = max(figures, key=lambda f: f.recall)
    measured = (f"{best.recall:.3f} at nprobes {best.nprobes}"
                + (f" refine {best.refine_factor}" if best.refine_factor else ""))
    below = f"the best measured recall@{best.k}, {measured}, is below --min-recall {minimum}"
    if diagnosis:
        return f"{below}: {diagnosis}"
    tips = ["query with a larger nprobes", "a refine_factor (e.g. 10)", *INDEX_TYPES[index_type].rebuild_tips()]
    if not swept:
        tips.append("--target-recall to find the setting")
    return f"{below}: try " + ", ".join(tips)
