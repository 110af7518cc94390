"""Every vector index type Lance builds, and multivector columns: each built by the job is as good
as one-node `create_index` given the same artifacts, by recall against exact search, and each
type's segments are committed the way its segment policy says (index_types.py)."""

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import VectorData, fsl, multivector_recall, recall, write_multivectors, write_vectors

from spark_lance_index import pipeline
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.index_types import INDEX_TYPES

ROWS, DIM, PARTITIONS = 20_000, 32, 16

# The types whose segments are committed as built (never merged), with flags that must reach them.
UNMERGED = {
    "IVF_SQ": {},
    "IVF_HNSW_FLAT": {"m": 12, "ef_construction": 100, "max_level": 5},
    "IVF_HNSW_SQ": {},
    "IVF_HNSW_PQ": {"num_sub_vectors": 8},
}


def run_job(spark, uri, **kw):
    return pipeline.run(make_config({}, {"uri": uri, "column": "vector", "num_partitions": PARTITIONS, **kw}), spark=spark)


def one_node(uri, index_type, artifacts, column="vector", **kw):
    """One-node create_index given the job's artifacts (the codebook too where the type has one)."""
    if artifacts.codebook is not None:
        kw["pq_codebook"] = artifacts.codebook_arrow()
    if artifacts.rq_model is not None:
        kw["rabitq_model"] = artifacts.rq_model
    lance.dataset(uri).create_index(column, index_type, num_partitions=PARTITIONS,
                                    ivf_centroids=artifacts.centroids_arrow(), **kw)


@pytest.mark.parametrize("index_type", list(UNMERGED))
def test_unmerged_types_match_one_node_given_the_same_artifacts(spark, tmp_path, index_type):
    job = write_vectors(tmp_path / "job", ROWS, DIM, rows_per_fragment=2500)
    single = write_vectors(tmp_path / "single", ROWS, DIM, rows_per_fragment=2500)
    flags = UNMERGED[index_type]
    result = run_job(spark, job.uri, index_type=index_type, rows_per_task=5000, **flags)
    # one committed segment per task: these segments are never merged
    assert (result.num_tasks, result.segments_committed, result.num_rows) == (4, 4, ROWS)
    one_node(single.uri, index_type, result.artifacts, **flags)
    stats = lance.dataset(job.uri).stats.index_stats("vector_idx")
    assert len(stats["indices"]) == 4 and stats["index_type"] == index_type
    if INDEX_TYPES[index_type].graph:  # the HNSW flags reached every segment's graph
        want = {"m": 20, "ef_construction": 150, "max_level": 7}
        want.update({k: v for k, v in flags.items() if k in want})
        for segment in stats["indices"]:
            assert {k: segment["sub_index"]["params"][k] for k in want} == want
    refines = {None} if INDEX_TYPES[index_type].exact_ranking else {None, 10}
    for nprobes in (1, 8):  # at 1 probe, partition assignment decides recall
        for refine in refines:
            ours, theirs = (recall(d.uri, d, nprobes=nprobes, refine=refine) for d in (job, single))
            print(f"{index_type} nprobes={nprobes} refine={refine}: job {ours:.3f} one-node {theirs:.3f}")
            # SQ segments take their bounds from their own rows, so they may encode a little
            # better than one-node's one set of bounds; never worse
            assert ours >= theirs - 0.01
    assert recall(job.uri, job, nprobes=8, refine=10) > 0.9


def test_sq_segments_keep_their_own_bounds(spark, tmp_path):
    """SQ bounds are not shared and a merge would keep the first segment's (measured: recall .968
    unmerged, .710 merged on this layout): the job commits the segments as built, each with the
    bounds of its own rows, and its recall is at least one-node's."""
    rng_rows = clustered_vectors(ROWS + 100, DIM, seed=3)
    vectors, queries = rng_rows[:ROWS].copy(), rng_rows[ROWS:]
    vectors[15_000:] *= 3  # the last task's rows span a wider range than the others'
    paths = []
    for name in ("job", "single"):
        uri = str(tmp_path / name)
        lance.write_dataset(pa.table({"id": np.arange(ROWS), "vector": fsl(vectors)}), uri, max_rows_per_file=2500)
        paths.append(VectorData(uri, vectors, queries))
    job, single = paths
    result = run_job(spark, job.uri, index_type="IVF_SQ", rows_per_task=5000)
    one_node(single.uri, "IVF_SQ", result.artifacts)
    bounds = [(s["sub_index"]["bounds"]["start"], s["sub_index"]["bounds"]["end"])
              for s in lance.dataset(job.uri).stats.index_stats("vector_idx")["indices"]]
    (whole,) = [(s["sub_index"]["bounds"]["start"], s["sub_index"]["bounds"]["end"])
                for s in lance.dataset(single.uri).stats.index_stats("vector_idx")["indices"]]
    assert len(set(bounds)) == 4  # each segment its own bounds
    assert sum(end - start < 0.5 * (whole[1] - whole[0]) for start, end in bounds) == 3
    ours, theirs = recall(job.uri, job, nprobes=8, refine=None), recall(single.uri, single, nprobes=8, refine=None)
    print(f"IVF_SQ, one wide task: job {ours:.3f} (4 segments), one-node {theirs:.3f}")
    assert ours >= theirs - 0.01


# Multivector columns: the types one-node Lance builds on them (cosine only), with the job's
# artifacts trained by Lance on the column as one-node does.
MULTIVECTOR = {
    "IVF_FLAT": {},
    "IVF_PQ": {"num_sub_vectors": 8},
    "IVF_RQ": {"num_bits": 1},
    "IVF_HNSW_SQ": {},
}


@pytest.mark.parametrize("index_type", list(MULTIVECTOR))
def test_multivector_columns_match_one_node_given_the_same_artifacts(spark, tmp_path, index_type):
    job = write_multivectors(tmp_path / "job", 6000, DIM, rows_per_fragment=1000)
    single = write_multivectors(tmp_path / "single", 6000, DIM, rows_per_fragment=1000)
    np.save(tmp_path / "q.npy", job.queries)  # (queries, 3 vectors, dim)
    flags = MULTIVECTOR[index_type]
    result = pipeline.run(make_config({}, {
        "uri": job.uri, "column": "mv", "metric": "cosine", "index_type": index_type, "num_partitions": 8,
        "rows_per_task": 2000, "query_file": str(tmp_path / "q.npy"), "nprobes": [4], **flags}), spark=spark)
    kind = INDEX_TYPES[index_type]
    assert (result.num_tasks, result.num_rows) == (3, 6000)
    assert result.segments_committed == (1 if kind.mergeable else 3)
    lance.dataset(single.uri).create_index(
        "mv", index_type, metric="cosine", num_partitions=8, ivf_centroids=result.artifacts.centroids_arrow(),
        **({"pq_codebook": result.artifacts.codebook_arrow()} if kind.codebook else {}),
        **({"rabitq_model": result.artifacts.rq_model} if kind.rotation else {}), **flags)
    for nprobes in (2, 8):
        for refine in (None, 10):
            ours, theirs = (multivector_recall(d.uri, d, nprobes, refine) for d in (job, single))
            print(f"multivector {index_type} nprobes={nprobes} refine={refine}: job {ours:.3f} one-node {theirs:.3f}")
            assert ours >= theirs - 0.02
    # the job's own figure (exact search on the executors) agrees with brute force here
    for figure in result.recall:
        independent = multivector_recall(job.uri, job, figure.nprobes, figure.refine_factor)
        assert abs(figure.recall - independent) <= 0.02, (figure, independent)


def test_multivector_rows_with_nulls_empty_lists_and_nan_are_indexed_as_one_node_does(spark, tmp_path):
    """One-node create_index counts null rows, rows with no vectors and rows with a NaN vector
    as indexed (measured); the job does the same, and its recall check skips them as queries."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 4, 3000)  # about a quarter of the rows have no vectors
    vectors = clustered_vectors(int(lengths.sum()), DIM, seed=2)
    vectors[5, 3] = np.nan
    nulls = np.zeros(3000, bool)
    nulls[10::100] = True
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), fsl(vectors), mask=pa.array(nulls))
    uri = str(tmp_path / "ds")
    lance.write_dataset(pa.table({"id": np.arange(3000), "mv": column}), uri, max_rows_per_file=500)
    result = pipeline.run(make_config({}, {"uri": uri, "column": "mv", "metric": "cosine", "index_type": "IVF_FLAT",
                                           "num_partitions": 4, "rows_per_task": 1000}), spark=spark)
    stats = lance.dataset(uri).stats.index_stats("mv_idx")
    assert (result.num_rows, stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (3000, 3000, 0)
    assert result.recall and all(f.queries == 100 for f in result.recall)


def test_an_unmerged_type_resumes_only_the_plan_of_the_same_task_sizes(spark, tmp_path):
    """Each task is a committed segment of IVF_SQ: a rerun with other task sizes would make
    another index from the old plan, so it is refused; with the same sizes it resumes."""
    import faults

    from spark_lance_index.errors import JobError

    faults.ship()
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = {"index_type": "IVF_SQ", "rows_per_task": 2000}
    with pytest.raises(JobError, match="job state kept in"):
        pipeline.run(make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, **config}), spark=spark,
                     task_fn=faults.always_fail(1))
    with pytest.raises(JobError, match="a plan made with other task sizes.*rows_per_task.: 2000"):
        pipeline.run(make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, **config,
                                      "rows_per_task": 4000}), spark=spark)
    result = pipeline.run(make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, **config}),
                          spark=spark)
    assert result.segments_reused >= 1 and result.segments_committed == 4
