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

from spark_lance_index.demo import clustered_vectors

# The fast tier (`make test-fast`) runs every test that needs no JVM: a test that asks for the
# `spark` fixture is marked `jvm` here, one that starts Spark otherwise (a CLI run, spark-submit,
# a Connect or standalone server, `pipeline.run`) carries `@pytest.mark.jvm` itself. The fast tier
# runs with no Java on PATH, so a test marked wrongly fails there instead of passing unseen.
JVM_FIXTURES = {"spark"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if JVM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.jvm)


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
    """The segment uuids of the committed index `name`, from the manifest."""
    return {str(s.uuid) for i in lance.dataset(uri).describe_indices() if i.name == name for s in i.segments}


def recall(uri: str, data: VectorData, nprobes: int = 4, refine: Optional[int] = 10) -> float:
    """recall@10 of the index on `uri` for the held-out queries, against brute force."""
    from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

    truth = exact_topk(data.vectors, data.queries, 10)
    return recall_at_k(truth, ann_topk(lance.dataset(uri), "vector", data.queries, 10, nprobes, refine))


@dataclass
class MultivectorData:
    """A multivector dataset on disk (`id`, `mv`: 1 to 5 vectors a row) and held-out queries of
    3 vectors each."""

    uri: str
    docs: list  # row i: (vectors, dim)
    queries: np.ndarray  # (queries, 3, dim)


def write_multivectors(path, rows: int, dim: int, *, rows_per_fragment: int, queries: int = 50,
                       seed: int = 0) -> MultivectorData:
    """Rows of 1 to 5 clustered vectors each, ColBERT-style; the queries are held out."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, rows)
    vectors = clustered_vectors(int(lengths.sum()) + queries * 3, dim, seed=seed + 1)
    held_out, vectors = vectors[: queries * 3].reshape(queries, 3, dim), vectors[queries * 3:]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), fsl(vectors))
    lance.write_dataset(pa.table({"id": np.arange(rows), "mv": column}), str(path), max_rows_per_file=rows_per_fragment)
    docs = [vectors[offsets[i]:offsets[i + 1]] for i in range(rows)]
    return MultivectorData(str(path), docs, held_out)


def multivectors_in_parts(path, rows: int, first: int, dim: int, *, rows_per_fragment: int,
                         queries: int = 50) -> tuple[MultivectorData, pa.Table]:
    """A multivector table at `path` holding the first `first` of `rows` rows drawn as
    `write_multivectors` draws them, and all the rows (an update test appends the rest later)."""
    source = write_multivectors(f"{path}-all", rows, dim, rows_per_fragment=rows_per_fragment, queries=queries)
    table = lance.dataset(source.uri).to_table()
    lance.write_dataset(table.slice(0, first), str(path), max_rows_per_file=rows_per_fragment)
    return source, table


def maxsim_topk(docs: list, queries: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the k rows nearest each query by Lance's multivector distance, the sum
    over the query's vectors of 1 - the best cosine similarity in the row; by brute force on
    padded rows (independent of the job's own exact search)."""
    unit = lambda m: m / np.linalg.norm(m, axis=-1, keepdims=True)  # noqa: E731
    longest = max(len(d) for d in docs)
    padded = np.zeros((len(docs), longest, queries.shape[-1]), np.float32)
    present = np.zeros((len(docs), longest), bool)
    for i, d in enumerate(docs):
        padded[i, :len(d)], present[i, :len(d)] = unit(d), True
    out = []
    for q in queries:
        sims = np.einsum("td,nld->tnl", unit(q), padded)
        sims[:, ~present] = -np.inf
        distance = (1 - sims.max(2)).sum(0)
        out.append(np.argsort(distance, kind="stable")[:k])
    return np.array(out)


def multivector_recall(uri: str, data: MultivectorData, nprobes: int, refine: Optional[int] = None, k: int = 10) -> float:
    """recall@k of the index on `uri` for the held-out multivector queries, against brute force."""
    truth = maxsim_topk(data.docs, data.queries, k)
    ds, hits = lance.dataset(uri), 0
    for q, true_ids in zip(data.queries, truth):
        nearest = {"column": "mv", "q": q, "k": k, "nprobes": nprobes, **({"refine_factor": refine} if refine else {})}
        hits += len(set(ds.to_table(nearest=nearest, columns=["id"]).column("id").to_pylist()) & set(true_ids.tolist()))
    return hits / truth.size
