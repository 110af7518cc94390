"""`spark-lance-index demo`: generate a dataset, index it with local Spark, measure recall."""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .config import make_config

if TYPE_CHECKING:
    from .report import JobResult

log = logging.getLogger("spark_lance_index")

QUERIES = 100
K = 10


def clustered_vectors(rows: int, dim: int, clusters: int = 256, seed: int = 0) -> np.ndarray:
    """Embedding-like test data: Gaussian clusters in a 16-d latent space, projected to `dim`
    with a little noise. Real embeddings have a low intrinsic dimension; isotropic noise in
    `dim` dimensions has no neighbours worth finding, and any index scores badly on it."""
    rng = np.random.default_rng(seed)
    latent_dim = min(16, dim)
    centers = rng.standard_normal((clusters, latent_dim)).astype(np.float32) * 3
    latent = centers[rng.integers(0, clusters, rows)]
    latent += rng.standard_normal((rows, latent_dim)).astype(np.float32)
    projection = rng.standard_normal((latent_dim, dim)).astype(np.float32) / 4
    return latent @ projection + 0.05 * rng.standard_normal((rows, dim)).astype(np.float32)


def write_demo_dataset(
    path: str, rows: int, dim: int, fragments: int, queries: int = QUERIES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write `rows` clustered float32 vectors in `fragments` fragments.

    Returns (the vectors written, `queries` more from the same distribution, held out)."""
    import lance

    everything = clustered_vectors(rows + queries, dim, seed=seed)
    vectors, held_out = everything[:rows], everything[rows:]
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    if os.path.exists(path):
        shutil.rmtree(path)
    lance.write_dataset(table, path, max_rows_per_file=-(-rows // fragments))
    return vectors, held_out


def run_demo(path: str, rows: int, dim: int, fragments: int, master: str) -> JobResult:
    """Build IVF_RQ at one-node Lance's defaults (5 bits) over a generated dataset; the job
    reports recall@10 on 100 held-out queries at several query settings, against exact search
    on the executors, and the fastest query setting that reaches recall@10 0.95."""
    from .pipeline import run

    log.info("writing %d x %d clustered vectors in %d fragments to %s", rows, dim, fragments, path)
    _, queries = write_demo_dataset(path, rows, dim, fragments)
    query_file = path.rstrip("/") + ".queries.npy"
    np.save(query_file, queries)
    config = make_config({}, {
        "uri": path, "column": "vector", "index_type": "IVF_RQ", "master": master,
        "query_file": query_file, "nprobes": (2, 5, 10), "refine_factor": (0, 10), "recall_k": K,
        "target_recall": 0.95, "report": path.rstrip("/") + ".report.json",
    })
    result = run(config)
    print(result.summary())
    print(f"report: {config.runtime.report}")
    return result
