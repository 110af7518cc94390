"""The train phase: the artifacts every segment must share, made once on the driver.

Segments built independently fit together only if they partition and encode vectors the
same way: the same IVF centroids, the same PQ codebook (IVF_PQ), the same RaBitQ rotation
(IVF_RQ). Lance refuses most mismatches only at merge time, after all the executor work, so
each artifact carries a sha256 fingerprint that every task reports back and the driver
checks before merging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import pyarrow as pa

from .config import BuildConfig
from .dataset import DatasetSnapshot, IndexParams, open_dataset

if TYPE_CHECKING:
    from .transport import Cached, Transport

log = logging.getLogger(__name__)


def array_fingerprint(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SharedArtifacts:
    """The trained pieces every segment build must use, and nothing else.

    Plain numpy and str so that it pickles small and cheaply into a Spark broadcast.
    """

    centroids: Optional[np.ndarray] = None  # vector types: (num_partitions, dim), the column's float type
    codebook: Optional[np.ndarray] = None  # IVF_PQ, IVF_HNSW_PQ: (256, dim)
    rq_model: Optional[str] = None  # IVF_RQ: the JSON from build_rq_model
    options: Optional[str] = None  # INVERTED: the tokenizer options every segment is built with (JSON)

    def fingerprints(self) -> dict[str, str]:
        """{artifact name: sha256} for the artifacts present."""
        out = {"centroids": array_fingerprint(self.centroids)} if self.centroids is not None else {}
        if self.options:
            out["options"] = text_fingerprint(self.options)
        if self.codebook is not None:
            out["codebook"] = array_fingerprint(self.codebook)
        if self.rq_model is not None:
            out["rotation"] = text_fingerprint(self.rq_model)
        return out

    def describe(self) -> str:
        """"centroids 1a2b3c4d5e6f, rotation ..." for logs: the first 12 hex digits of each."""
        return ", ".join(f"{k} {v[:12]}" for k, v in sorted(self.fingerprints().items()))

    @property
    def rotation_signs(self) -> Optional[list[int]]:
        """The RaBitQ fast-rotation sign bytes: the part of the rotation that differs per mint."""
        return json.loads(self.rq_model)["fast_rotation_signs"] if self.rq_model else None

    def centroids_arrow(self) -> pa.FixedSizeListArray:
        assert self.centroids is not None, "a scalar or text index has no centroids"
        return to_fixed_size_list(self.centroids)

    def codebook_arrow(self) -> Optional[pa.FixedSizeListArray]:
        return None if self.codebook is None else to_fixed_size_list(self.codebook)


def to_fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])


def to_matrix(array: pa.FixedSizeListArray) -> np.ndarray:
    dim = array.type.list_size
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, dim).copy()


MIN_ROWS_PER_CENTROID = 40  # fewer sample rows per partition than this: k-means fits noise
FLAT_MAX_PARTITIONS = 256  # above this, k-means runs in two levels (Lance: hierarchical past 256)


def capped_sample_rows(params: IndexParams, config: BuildConfig, bytes_per_vector: int,
                       table_rows: Optional[int] = None) -> int:
    """Sample rows for IVF training: sample_rate x partitions, as one-node Lance draws, capped
    by --max-sample-rows and by --max-sample-bytes (1M x 768 float32 would be 3 GiB), and by
    the rows the table has (`table_rows`, when known): a sample is never larger than its table."""
    cap = min(config.training.max_sample_rows, config.training.max_sample_bytes // max(1, bytes_per_vector))
    if table_rows is not None:
        cap = min(cap, table_rows)
    return max(1, min(params.sample_rate * params.num_partitions, cap))


def training_sample_rows(params: IndexParams, config: BuildConfig, bytes_per_vector: int,
                         table_rows: Optional[int] = None) -> int:
    """capped_sample_rows, saying when it was capped and when it is too thin to train on."""
    wanted = params.sample_rate * params.num_partitions
    rows = capped_sample_rows(params, config, bytes_per_vector, table_rows)
    if table_rows is not None and rows == table_rows and rows < wanted:
        log.info("training on every row of the table: %d rows (%d per partition; --sample-rate asks for %d)",
                 rows, rows // params.num_partitions, params.sample_rate)
    elif rows < wanted:
        log.info("training sample capped at %d rows (%d per partition instead of %d): --max-sample-rows %d, "
                 "--max-sample-bytes %d", rows, rows // params.num_partitions, params.sample_rate,
                 config.training.max_sample_rows, config.training.max_sample_bytes)
    if rows < MIN_ROWS_PER_CENTROID * params.num_partitions:
        log.warning("the training sample has %.0f rows per partition (%d rows for %d partitions), under %d: "
                    "the centroids fit noise. %s, or use fewer --num-partitions", rows / params.num_partitions,
                    rows, params.num_partitions, MIN_ROWS_PER_CENTROID, _what_limits(params, config, rows, table_rows))
    return rows


def _what_limits(params: IndexParams, config: BuildConfig, rows: int, table_rows: Optional[int] = None) -> str:
    """The advice for a thin sample names the setting that bounded it."""
    if rows == table_rows:
        return f"The table has only {rows} rows"
    if rows >= params.sample_rate * params.num_partitions:
        return f"Raise --sample-rate (now {params.sample_rate} rows per partition)"
    if rows >= config.training.max_sample_rows:
        return f"Raise --max-sample-rows (now {config.training.max_sample_rows})"
    return f"Raise --max-sample-bytes (now {config.training.max_sample_bytes})"


def sample_bytes(snap: DatasetSnapshot, rows: int) -> int:
    """What `rows` sampled rows hold: a multivector row brings all its vectors."""
    return rows * (snap.bytes_per_row if snap.multivector else snap.vector_bytes)


def pick_trainer(config: BuildConfig, params: IndexParams, sample_rows: int, snap: DatasetSnapshot,
                 connect: bool = False) -> str:
    """--trainer, or for `auto`: Lance's k-means on the driver while the sample is small enough
    to hold there comfortably (it is faster: one process, no rounds), distributed past that.
    Through Spark Connect `auto` stays on the driver: Databricks serverless refuses the
    DataFrame cache the distributed trainer keeps its sample in."""
    if config.training.trainer != "auto":
        return config.training.trainer
    if connect:
        return "lance"
    return "distributed" if sample_bytes(snap, sample_rows) > AUTO_DISTRIBUTED_BYTES else "lance"


# Measured on 2 cores, 2M x 128 (bench/training.py, docs/benchmarks.md): Lance's trainer holds
# about 170 MB + 2.5x its sample on the driver (0.6 GB for a 128 MiB sample, 1.4 GB for 512 MiB);
# the distributed one 0.2-0.3 GB whatever the sample, as fast as Lance's at 4,096 partitions
# (21.1 s against 21.7 s), 2x slower at 1,024 (5.9 s against 2.9 s, both small) and 2.5x at
# 16,384. Past this sample size the executors train: Lance's would need over a GB of driver.
AUTO_DISTRIBUTED_BYTES = 384 * 1024**2


def trains_on_driver(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams) -> bool:
    """A vector index trained by Lance's trainer: it needs no Spark, so it can start at once."""
    if not params.kind.is_vector:
        return False
    rows = capped_sample_rows(params, config, sample_bytes(snap, 1), snap.num_rows)
    return pick_trainer(config, params, rows, snap) == "lance"


class TrainingInBackground:
    """Lance's trainer on a thread of the driver, started right after inspect: it trains while
    the Spark session starts and the preflight runs (both mostly waiting on the JVM and the
    executors' Python workers), instead of after them. `result()` waits for it."""

    def __init__(self, config: BuildConfig, snap: DatasetSnapshot, params: IndexParams):
        import threading

        self.seconds = 0.0
        self._done = threading.Event()
        self._artifacts: Optional[SharedArtifacts] = None
        self._error: Optional[BaseException] = None
        threading.Thread(target=self._run, args=(config, snap, params), name="train", daemon=True).start()

    def _run(self, config: BuildConfig, snap: DatasetSnapshot, params: IndexParams) -> None:
        import time

        started = time.perf_counter()
        try:
            self._artifacts = train_artifacts(config, snap, params)
        except BaseException as e:  # raised where the pipeline waits for it
            self._error = e
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def wait(self) -> None:
        self._done.wait()

    def result(self) -> SharedArtifacts:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._artifacts is not None
        return self._artifacts


def train_artifacts(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
                    transport: Optional[Transport] = None, parallelism: int = 1) -> SharedArtifacts:
    """Train IVF centroids (and the PQ codebook), and mint the RaBitQ rotation exactly once.

    What a type needs is said by its `IndexType` (index_types.py). SQ bounds are not among the
    shared artifacts: Lance takes them per segment from the segment's rows (see index_types).

    `--trainer lance` runs Lance's own k-means on the driver over a sample it draws; the centroids
    are what a one-node `create_index` would train. `--trainer distributed` keeps the sample on
    the executors and runs the k-means rounds there (`kmeans.py`), so the driver holds k x d.
    """
    if not params.kind.is_vector:  # scalar and text segments share their build options only
        return SharedArtifacts(options=params.options or None)
    from lance.lance import indices as lance_indices

    rows = training_sample_rows(params, config, sample_bytes(snap, 1), snap.num_rows)
    trainer = pick_trainer(config, params, rows, snap, getattr(transport, "connect", False))
    log.info("training %d partitions on a sample of %d rows with the %s trainer", params.num_partitions, rows, trainer)
    if trainer == "distributed":
        centroids, codebook = train_distributed(transport, config, snap, params, rows, parallelism)
    else:
        centroids, codebook = train_with_lance(config, snap, params, rows)
    rq_model = None
    if params.kind.rotation:
        # num_bits is passed explicitly on both sides (here and in every build): a mismatch fails.
        rq_model = lance_indices.build_rq_model(snap.dim, num_bits=params.num_bits)
    return SharedArtifacts(centroids=centroids, codebook=codebook, rq_model=rq_model)


def train_with_lance(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
                     rows: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Lance's k-means in this process over `rows` sampled rows. -> (centroids, codebook or None)"""
    from lance.lance import indices as lance_indices

    ds = open_dataset(snap.uri, config.dataset.storage_options, snap.version)
    # the whole table: Lance's own rate, so that it takes every row as a one-node build would
    rate = params.sample_rate if rows >= snap.num_rows else max(1, rows // params.num_partitions)
    centroids = lance_indices.train_ivf_model(
        ds._ds, snap.column, snap.dim, params.num_partitions, params.metric, rate, config.training.max_iters, None)
    codebook = None
    if params.kind.codebook:
        codebook = to_matrix(lance_indices.train_pq_model(
            ds._ds, snap.column, snap.dim, params.num_sub_vectors, params.metric, rate, config.training.max_iters,
            centroids, None))
    return to_matrix(centroids), codebook


def train_distributed(transport: Optional[Transport], config: BuildConfig, snap: DatasetSnapshot,
                      params: IndexParams, rows: int, parallelism: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """k-means on the executors, as Lance trains (kmeans.py): IVF centroids, then for PQ types the
    codebook on residuals. -> (centroids in the column's float type, codebook or None)"""
    from . import kmeans
    from .errors import InputError

    if transport is None:
        raise ValueError("the distributed trainer needs a Spark transport")
    metric = "dot" if params.metric == "dot" else "l2"  # cosine: l2 on unit vectors, as Lance
    seed = _seed(snap)
    tasks = kmeans.plan_sample(snap.live_fragments, rows, max(1, parallelism), snap.uri, snap.version, snap.column,
                               config.dataset.storage_options, seed=seed, multivector=snap.multivector,
                               normalize=params.metric == "cosine")
    cached = transport.cache(tasks, kmeans.draw_sample)
    derived = []
    try:
        n = transport.map_reduce_cached(cached, lambda b, _: len(b.rows), operator.add) or 0  # None: no rows
        k = params.num_partitions
        if n < k or (params.kind.codebook and n < 256):
            raise InputError(f"the training sample has {n} usable vectors (not null, not NaN) for {k} partitions"
                             + (" and 256 PQ codes" if params.kind.codebook else "") + ": use fewer --num-partitions")
        run = lambda source: lambda r: transport.map_reduce_cached(source, kmeans.round_partials,  # noqa: E731
                                                                   operator.add, r)
        if k <= FLAT_MAX_PARTITIONS:
            init = _draw(transport, cached, np.array([k]), seed)
            top, _ = kmeans.lloyd(run(cached), init[None], metric, config.training.max_iters,
                                  f"IVF k-means ({k} centroids)")
        else:
            top = _two_levels(transport, cached, n, k, metric, config.training.max_iters, seed)
        centroids = top[0]
        codebook = None
        if params.kind.codebook:
            m = params.num_sub_vectors
            fraction = min(1.0, 256 * params.sample_rate / n)  # Lance trains PQ on 256 x sample_rate rows
            residual = transport.derive(cached, kmeans.residual_block,
                                        (None if metric == "dot" else centroids, fraction))
            derived.append(residual)
            init = _draw(transport, residual, np.array([256]), seed + 2)
            sub = snap.dim // m
            initial = init.reshape(len(init), m, sub).transpose(1, 0, 2)
            book, _ = kmeans.lloyd(run(residual), initial, "l2", config.training.max_iters,
                                   f"PQ k-means ({m} x 256 codes)")
            codebook = book.reshape(-1).reshape(256, snap.dim)  # Lance's layout: sub-vector major
    finally:
        for c in [*derived, cached]:
            transport.release(c)
    # Lance's trainer returns both in the column's float type; a float32 codebook for a float16
    # or float64 column makes every segment build panic (measured).
    dtype = np.dtype(snap.value_type)
    return centroids.astype(dtype), None if codebook is None else codebook.astype(dtype)


FIRST_LEVEL_ROWS_PER_CODE = 256  # the first level trains on this many sampled rows per coarse centroid


def _two_levels(transport: Transport, cached: Cached, n: int, k: int, metric: str, max_iters: int,
                seed: int) -> np.ndarray:
    """Past 256 partitions, as Lance's hierarchy: sqrt(k) coarse centroids, then each coarse
    cluster's share of the k centroids trained on its own rows. -> (1, k, d) codebook

    The first level has sqrt(k) centroids: it trains on the driver, from a uniform draw of 256
    sample rows per centroid (a few MiB, one Spark job), instead of a Spark job per round. The
    second level's clusters are independent: one shuffle brings each cluster's rows to one task,
    which trains its codes to convergence there."""
    import math

    from . import kmeans

    top_k = math.ceil(math.sqrt(k))
    drawn = _draw(transport, cached, np.array([min(n, FIRST_LEVEL_ROWS_PER_CODE * top_k)]), seed)
    _, first_level = kmeans.train_cluster(0, [(0, drawn)], kmeans.ClusterJob(np.array([top_k]), metric, max_iters,
                                                                             seed))
    log.info("IVF k-means, first level: %d centroids from %d sampled rows, on the driver", top_k, len(drawn))
    first = kmeans.Round(first_level[None], metric)
    sizes = transport.map_reduce_cached(cached, kmeans.count_groups, operator.add, first)
    quota = kmeans.quotas(k, sizes)
    trained = dict(transport.group_map(cached, kmeans.split_by_group, kmeans.train_cluster,
                                       kmeans.ClusterJob(quota, metric, max_iters, seed + 1, first), keys=top_k))
    log.info("IVF k-means, second level: %d centroids in %d clusters, each trained in one task",
             int(quota.sum()), int((quota > 0).sum()))
    missing = [g for g in range(top_k) if quota[g] > 0 and g not in trained]
    codes = np.concatenate([trained[g] for g in range(top_k) if quota[g] > 0 and g not in missing])
    if missing or len(codes) != k:  # a cluster the shuffle lost, or fewer rows than its quota: never a short codebook
        raise RuntimeError(f"the distributed trainer produced {len(codes)} centroids for {k} partitions")
    return codes[None]


def _draw(transport: Transport, cached: Cached, quota: np.ndarray, seed: int) -> np.ndarray:
    """Initial codes: `quota[g]` rows of each cluster g drawn uniformly from the cached sample."""
    from . import kmeans

    _, _, rows = transport.map_reduce_cached(cached, kmeans.draw_rows, kmeans.merge_draws(quota),
                                             kmeans.Draw(quota, seed))
    return rows


def _seed(snap: DatasetSnapshot) -> int:
    """Deterministic per dataset version: a rerun draws the same sample."""
    return int(hashlib.sha256(f"{snap.uri}@{snap.version}/{snap.column}".encode()).hexdigest()[:8], 16)
