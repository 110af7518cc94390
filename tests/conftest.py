"""Shared fixtures: one real local[2,2] Spark session, and real Lance datasets on disk."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Executors must import the same Python (and this package) as the driver.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

from dataclasses import dataclass
from typing import Optional

import lance
import numpy as np
import pyarrow as pa
import pytest

from spark_lance_index.recall import clustered_vectors


@pytest.fixture(scope="session")
def spark():
    """local[2,2]: two cores, and a failed task is retried once (plain local[N] never retries)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2,2]")
        .appName("spark-lance-index-tests")
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def spark_job_count(spark) -> int:
    """Every Spark job this application has run so far."""
    return spark.sparkContext._jsc.sc().statusStore().jobsList(None).size()


def fsl(matrix: np.ndarray, value_type=pa.float32()) -> pa.FixedSizeListArray:
    values = pa.array(matrix.ravel().astype(value_type.to_pandas_dtype()), type=value_type)
    return pa.FixedSizeListArray.from_arrays(values, matrix.shape[1])


@dataclass
class VectorData:
    """A dataset written to disk, and the vectors and held-out queries behind it."""

    uri: str
    vectors: np.ndarray  # row i has id i
    queries: np.ndarray


def write_vectors(
    path, rows: int, dim: int, *, rows_per_fragment: Optional[int] = None,
    fragment_sizes: Optional[list[int]] = None, value_type=pa.float32(), seed: int = 0,
    queries: int = 100, column: str = "vector",
) -> VectorData:
    """Write clustered vectors with an `id` column; several fragments by size or by count."""
    everything = clustered_vectors(rows + queries, dim, seed=seed)
    vectors, held_out = everything[:rows], everything[rows:]
    uri = str(path)
    sizes = fragment_sizes or [rows_per_fragment or rows] * -(-rows // (rows_per_fragment or rows))
    start = 0
    for i, size in enumerate(sizes):
        size = min(size, rows - start)
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + size, dtype=np.int64)),
                column: fsl(vectors[start : start + size], value_type),
            }
        )
        lance.write_dataset(table, uri, mode="create" if i == 0 else "append")
        start += size
    return VectorData(uri, vectors, held_out)


@dataclass(frozen=True)
class DatasetState:
    version: int
    index_dirs: frozenset
    index_names: tuple


def dataset_state(uri: str) -> DatasetState:
    """What "the dataset is left exactly as it was" compares."""
    ds = lance.dataset(uri)
    path = os.path.join(uri, "_indices")
    dirs = frozenset(os.listdir(path)) if os.path.isdir(path) else frozenset()
    return DatasetState(ds.version, dirs, tuple(sorted(i.name for i in ds.describe_indices())))


def index_dirs(uri: str) -> set:
    """The directory names under the dataset's `_indices`."""
    path = os.path.join(uri, "_indices")
    return set(os.listdir(path)) if os.path.isdir(path) else set()


def committed_uuids(uri: str, name: str = "vector_idx") -> set:
    return {s["uuid"] for s in lance.dataset(uri).stats.index_stats(name)["segments"]}


def recall(uri: str, data: VectorData, nprobes: int = 4, refine: Optional[int] = 10) -> float:
    """recall@10 of the index on `uri` for the held-out queries, against brute force."""
    from spark_lance_index.recall import ann_topk, exact_topk, recall_at_k

    truth = exact_topk(data.vectors, data.queries, 10)
    return recall_at_k(truth, ann_topk(lance.dataset(uri), "vector", data.queries, 10, nprobes, refine))
