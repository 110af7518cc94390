"""Partition assignment as a GEMM in each task (issue 21): the segments it builds are Lance's.

For every IVF type, metric and float type, on tables with null and NaN vectors and deleted
rows, a segment built with the GEMM assignment holds the same rows in the same partitions as
one Lance assigned itself (up to ties closer than float rounding), and answers queries with
the same recall@10 against exact search. A partition table that misses rows is caught before
anything can be committed. Plain Lance and numpy: the tasks' own functions, called directly.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid

import lance
import numpy as np
import pyarrow as pa
import pytest

from spark_lance_index import pipeline
from spark_lance_index.assign import (
    AssignmentLost,
    assign_fragments,
    check_segment,
    nearest,
    prepare_centroids,
    segment_partition_lengths,
)
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.segment_build import build_segment
from spark_lance_index.storage import locate
from spark_lance_index.testing import exact_topk, recall_at_k

DIM, ROWS = 32, 6000
BAD = {"null": [3, 1500], "nan": [10, 2999], "inf": [4001]}


def write_table(path, value_type=pa.float32(), seed=0) -> tuple[str, np.ndarray, np.ndarray]:
    """Clustered rows in 4 fragments with null, NaN and infinite vectors and some deleted rows.
    -> (uri, the vectors by id with NaN for a null, held-out queries)"""
    everything = clustered_vectors(ROWS + 50, DIM, seed=seed)
    vectors, queries = everything[:ROWS].copy(), everything[ROWS:]
    vectors[BAD["nan"], 5] = np.nan
    vectors[BAD["inf"], 0] = np.inf
    nulls = np.zeros(ROWS, bool)
    nulls[BAD["null"]] = True
    values = pa.array(vectors.ravel().astype(value_type.to_pandas_dtype()), type=value_type)
    column = pa.FixedSizeListArray.from_arrays(values, DIM, mask=pa.array(nulls))
    uri = str(path)
    lance.write_dataset(pa.table({"id": np.arange(ROWS), "vector": column}), uri, max_rows_per_file=ROWS // 4)
    lance.dataset(uri).delete("id % 97 = 5")
    vectors[BAD["null"]] = np.nan
    return uri, vectors, queries


def build(uri, index_type, metric, assignment, artifacts=None, **kw):
    """One segment over every fragment with the given assignment, committed; -> (artifacts,
    partition lengths, uuid)."""
    config = make_config({}, {"uri": uri, "column": "vector", "index_type": index_type, "metric": metric,
                              "num_partitions": 16, "verify_queries": 0, **kw})
    insp = pipeline.inspect_inputs(config)
    if artifacts is None:
        artifacts = pipeline.train(config, insp.snap, insp.params)
    groups = pipeline.plan(config, insp.snap, insp.params, insp.snap.live_fragments, 1)
    groups = (dataclasses.replace(groups[0], fragment_ids=tuple(f.fragment_id for f in insp.snap.live_fragments),
                                  num_rows=sum(g.num_rows for g in groups)),)
    (task,) = pipeline.make_tasks(config, insp.snap, insp.params, groups, f"test:{assignment}")
    task = dataclasses.replace(task, assignment=assignment)
    result = build_segment(task, artifacts, str(uuid.uuid4()) if insp.params.kind.takes_uuid else None)
    ds = lance.dataset(uri)
    ds.commit_existing_index_segments("vector_idx", "vector", [result.segment])
    return artifacts, segment_partition_lengths(locate(uri), {}, result.index_uuid), result


def recall_of(uri, vectors, queries, metric, nprobes=4):
    ds = lance.dataset(uri)
    live = set(ds.to_table(columns=["id"]).column("id").to_pylist())
    # exact search over the live rows only (deleted rows are not in the table any more)
    gone = np.array([i not in live for i in range(len(vectors))])
    masked = vectors.copy()
    masked[gone] = np.nan
    truth = exact_topk(masked, queries, 10, metric)
    found = [ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": nprobes, "refine_factor": 10},
                         columns=["id"]).column("id").to_numpy() for q in queries]
    return recall_at_k(truth, found)


CASES = [(t, "l2", pa.float32()) for t in ("IVF_FLAT", "IVF_PQ", "IVF_SQ", "IVF_RQ", "IVF_HNSW_FLAT", "IVF_HNSW_SQ",
                                           "IVF_HNSW_PQ")]
CASES += [(t, m, pa.float32()) for t in ("IVF_FLAT", "IVF_RQ") for m in ("cosine", "dot")]
CASES += [(t, "l2", v) for t in ("IVF_FLAT", "IVF_PQ") for v in (pa.float16(), pa.float64())]


@pytest.mark.parametrize("index_type, metric, value_type", CASES,
                         ids=[f"{t}-{m}-{v}" for t, m, v in CASES])
def test_gemm_assigned_segments_are_lances(tmp_path, index_type, metric, value_type):
    uri, vectors, queries = write_table(tmp_path / "a", value_type)
    shutil.copytree(uri, tmp_path / "b")
    kw = {"num_sub_vectors": 4} if "PQ" in index_type else {"num_bits": 4} if index_type == "IVF_RQ" else {}
    artifacts, by_lance, _ = build(uri, index_type, metric, "lance", **kw)
    _, by_gemm, result = build(str(tmp_path / "b"), index_type, metric, "gemm", artifacts, **kw)
    live = lance.dataset(uri).count_rows()
    usable = live - sum(1 for rows in BAD.values() for r in rows if r % 97 != 5)
    assert by_lance.sum() == by_gemm.sum() == usable  # null, NaN and infinite rows in no partition
    moved = int(np.abs(by_lance - by_gemm).sum()) // 2
    assert moved <= 2, (by_lance, by_gemm)  # ties closer than float rounding, at most
    assert result.assign_seconds > 0
    if metric != "dot":  # dot recall against an exact top-k of unnormalised rows is not the point here
        a, b = recall_of(uri, vectors, queries, metric), recall_of(str(tmp_path / "b"), vectors, queries, metric)
        assert abs(a - b) <= 0.01, (a, b)


@pytest.mark.parametrize("offset", [0.0, 1000.0])  # far from the origin, float32 loses |c|^2 - 2 x.c
def test_the_kernel_is_exact_nearest_centroid_search(offset):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5000, 48)) + offset).astype(np.float32)
    c = (rng.standard_normal((700, 48)) + offset).astype(np.float32)
    for metric in ("l2", "cosine", "dot"):
        got = nearest(x, prepare_centroids(c, metric), metric)
        xx = x.astype(np.float64)
        xx = xx / np.linalg.norm(xx, axis=1, keepdims=True) if metric == "cosine" else xx
        want = (((xx[:, None, :] - c[None].astype(np.float64)) ** 2).sum(2).argmin(1) if metric != "dot"
                else (xx @ c.T.astype(np.float64)).argmax(1))
        assert (got != want).sum() <= 1, metric


def test_a_partition_table_that_misses_rows_is_caught_before_any_commit(tmp_path):
    """Lance leaves a row missing from the table out of the segment without a word: the task
    reads the segment's partition lengths back and refuses it."""
    import tempfile

    from spark_lance_index.assign import write_partition_table

    uri, _, _ = write_table(tmp_path / "a")
    config = make_config({}, {"uri": uri, "column": "vector", "index_type": "IVF_FLAT", "num_partitions": 16})
    insp = pipeline.inspect_inputs(config)
    artifacts = pipeline.train(config, insp.snap, insp.params)
    ds = lance.dataset(uri)
    frags = [f.fragment_id for f in ds.get_fragments()]
    assigned = assign_fragments(ds, "vector", frags, artifacts.centroids, "l2")
    half = dataclasses.replace(assigned, row_ids=assigned.row_ids[::2], partitions=assigned.partitions[::2])
    with tempfile.TemporaryDirectory() as scratch:
        segment = ds.create_index_uncommitted(
            "vector", "IVF_FLAT", name="vector_idx", fragment_ids=frags, num_partitions=16, metric="l2",
            ivf_centroids=artifacts.centroids_arrow(), precomputed_partition_dataset=write_partition_table(half, scratch))
    with pytest.raises(AssignmentLost, match="holds .* rows .* but .* rows .* were assigned"):
        check_segment(locate(uri), {}, str(segment.uuid), assigned, 16)
    assert not lance.dataset(uri).describe_indices()  # nothing committed


def test_a_task_whose_scan_reads_other_rows_than_the_plan_counted_writes_nothing(tmp_path):
    """Rows the assignment's scan does not read are in no partition table, so in no segment:
    the task compares the rows it read with the plan's live rows before Lance writes anything."""
    uri, _, _ = write_table(tmp_path / "a")
    config = make_config({}, {"uri": uri, "column": "vector", "index_type": "IVF_FLAT", "num_partitions": 16})
    insp = pipeline.inspect_inputs(config)
    artifacts = pipeline.train(config, insp.snap, insp.params)
    groups = pipeline.plan(config, insp.snap, insp.params, insp.snap.live_fragments, 1)
    (task, *_) = pipeline.make_tasks(config, insp.snap, insp.params, groups, "test:gemm")
    task = dataclasses.replace(task, assignment="gemm",
                               group=dataclasses.replace(task.group, num_rows=task.group.num_rows + 1))
    with pytest.raises(AssignmentLost, match="read .* rows, but the plan counted .* live rows"):
        build_segment(task, artifacts, str(uuid.uuid4()))
    indices = tmp_path / "a" / "_indices"
    assert not indices.exists() or not any(indices.iterdir())  # nothing written


def test_a_sliced_vector_column_with_null_rows_keeps_its_rows_aligned():
    """A batch can be a slice of a larger array: its null rows still hold values in the child
    array, so they are skipped by position, not dropped (flatten() dropped them and the rows after
    a null read their neighbours' vectors or failed)."""
    from spark_lance_index.exact_search import as_matrix

    values = np.arange(12, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values), 2,
                                               mask=pa.array([False, True, False, True, False, False]))
    expected = values.reshape(6, 2).copy()
    expected[[1, 3]] = np.nan
    for start, length in ((0, 6), (1, 4), (2, 3), (5, 1)):
        np.testing.assert_array_equal(as_matrix(column.slice(start, length)), expected[start:start + length])
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(3, 3)])
    np.testing.assert_array_equal(as_matrix(chunked), expected[[0, 1, 3, 4, 5]])
