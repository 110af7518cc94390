"""Reference answers for the tests and benchmarks: the k nearest rows by brute force, the ids an
index returns, and recall@k between the two. The job never uses these (its own recall check
runs exact search on the executors, exact_search.py); they are the yardstick it is held to."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> np.ndarray:
    """Row positions of the k nearest rows per query, by brute force. NaN rows never match."""
    data = np.asarray(data, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if metric == "cosine":
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        q = queries[start : start + 64]
        if metric == "l2":
            dist = (data**2).sum(1)[None, :] - 2 * q @ data.T
        else:  # cosine on normalised vectors and dot both rank by the largest inner product
            dist = -(q @ data.T)
        dist[:, ~np.isfinite(data).all(1)] = np.inf
        part = np.argpartition(dist, k, axis=1)[:, :k]
        order = np.take_along_axis(dist, part, 1).argsort(1)
        out[start : start + len(q)] = np.take_along_axis(part, order, 1)
    return out


def ann_topk(
    ds: Any, column: str, queries: np.ndarray, k: int, nprobes: int, refine_factor: Optional[int] = None,
    id_column: str = "id",
) -> list[np.ndarray]:
    """The ids the index returns for each query."""
    results = []
    for q in queries:
        nearest = {"column": column, "q": q, "k": k, "nprobes": nprobes}
        if refine_factor:
            nearest["refine_factor"] = refine_factor
        tbl = ds.to_table(nearest=nearest, columns=[id_column], disable_scoring_autoprojection=True)
        results.append(tbl.column(id_column).to_numpy())
    return results


def recall_at_k(truth: np.ndarray, found: list[np.ndarray]) -> float:
    """Mean fraction of the true k nearest that the index returned."""
    k = truth.shape[1]
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / (k * len(truth))
