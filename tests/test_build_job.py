"""The build job on real Spark and real Lance datasets, judged by recall against exact search."""

import dataclasses
import os

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state, fsl, write_vectors

from spark_lance_index import pipeline
from spark_lance_index.commit import check_segments
from spark_lance_index.config import make_config
from spark_lance_index.errors import InputError, SegmentCheckError
from spark_lance_index.segment_build import SegmentResult
from spark_lance_index.state import JobState
from spark_lance_index.storage import locate
from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

ROWS, DIM, PARTITIONS, NPROBES = 20_000, 32, 32, 8


def recall(uri, data, column="vector", nprobes=NPROBES, refine=None, k=10):
    truth = exact_topk(data.vectors, data.queries, k)  # ids are row positions
    found = ann_topk(lance.dataset(uri), column, data.queries, k, nprobes, refine)
    return recall_at_k(truth, found)


PARITY = {
    "IVF_RQ": ({"num_bits": 1}, 10),
    "IVF_PQ": ({"num_sub_vectors": 8}, 10),
    "IVF_FLAT": ({}, None),
}


@pytest.mark.parametrize("index_type", list(PARITY))
def test_recall_parity_with_single_process_create_index(spark, tmp_path, index_type):
    extra, refine = PARITY[index_type]
    job = write_vectors(tmp_path / "job", ROWS, DIM, rows_per_fragment=2500)
    single = write_vectors(tmp_path / "single", ROWS, DIM, rows_per_fragment=2500)

    config = make_config({}, {"uri": job.uri, "column": "vector", "index_type": index_type,
                              "num_partitions": PARTITIONS, "rows_per_task": 5000, **extra})
    result = pipeline.run(config, spark=spark)
    assert (result.num_tasks, result.num_segments, result.num_rows) == (4, 4, ROWS)

    a = result.artifacts
    kwargs = {"num_sub_vectors": 8, "pq_codebook": a.codebook_arrow()} if index_type == "IVF_PQ" else {}
    if index_type == "IVF_RQ":
        kwargs = {"num_bits": 1, "rabitq_model": a.rq_model}
    lance.dataset(single.uri).create_index(
        "vector", index_type, num_partitions=PARTITIONS, ivf_centroids=a.centroids_arrow(), **kwargs
    )
    for nprobes in (1, NPROBES):  # at 1 probe, partition assignment decides recall
        for r in {None, refine}:
            job_recall = recall(job.uri, job, nprobes=nprobes, refine=r)
            single_recall = recall(single.uri, single, nprobes=nprobes, refine=r)
            print(f"{index_type} nprobes={nprobes} refine={r}: job {job_recall:.3f} single {single_recall:.3f}")
            assert abs(job_recall - single_recall) <= 0.01
    # and the index is worth having: far above what a random IVF probe of 8/32 would find
    assert recall(job.uri, job, refine=refine) > 0.8


def test_every_segment_uses_one_rotation_and_a_foreign_one_is_refused(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, "rows_per_task": 2000})
    before = dataset_state(data.uri)
    insp = pipeline.inspect_inputs(config)
    snap, params = insp.snap, insp.params
    groups = pipeline.plan(config, snap, params, snap.live_fragments, 2)
    artifacts = pipeline.train(config, snap, params)
    tasks = pipeline.make_tasks(config, snap, params, groups, "test-job")

    state = JobState(locate(str(tmp_path)), "job", {})
    good = pipeline.build(spark, tasks[:-1], artifacts, state, "job")
    assert {r.fingerprints["rotation"] for r in good} == {artifacts.fingerprints()["rotation"]}

    from lance.lance import indices
    other = dataclasses.replace(artifacts, rq_model=indices.build_rq_model(DIM, num_bits=params.num_bits))
    assert other.fingerprints()["rotation"] != artifacts.fingerprints()["rotation"]
    foreign = pipeline.build(spark, tasks[-1:], other, state, "job")

    with pytest.raises(SegmentCheckError, match=f"segment {foreign[0].index_uuid} .* another rotation"):
        check_segments(groups, good + foreign, artifacts.fingerprints())
    after = dataset_state(data.uri)
    assert (after.version, after.index_names) == (before.version, before.index_names)


def _result(group_id, frags, fingerprints):
    return SegmentResult(group_id, f"uuid-{group_id}", tuple(frags), 10, fingerprints, None, 0.0, "h")


def test_check_segments_refuses_gaps_overlaps_and_foreign_codebooks():
    from spark_lance_index.plan import FragmentGroup

    groups = [FragmentGroup(0, (0, 1), 20), FragmentGroup(1, (2,), 10)]
    fp = {"centroids": "c" * 64, "codebook": "b" * 64}
    assert len(check_segments(groups, [_result(0, [0, 1], fp), _result(1, [2], fp)], fp)) == 2
    # a retried task delivering the same segment twice is accepted once
    assert len(check_segments(groups, [_result(0, [0, 1], fp), _result(0, [0, 1], fp), _result(1, [2], fp)], fp)) == 2
    with pytest.raises(SegmentCheckError, match=r"no segment came back for fragment groups \[1\]"):
        check_segments(groups, [_result(0, [0, 1], fp)], fp)
    with pytest.raises(SegmentCheckError, match=r"covers fragments \[1, 2\], planned \[2\]"):
        check_segments(groups, [_result(0, [0, 1], fp), _result(1, [1, 2], fp)], fp)
    with pytest.raises(SegmentCheckError, match="uuid-1 \\(group 1\\) was built with another codebook"):
        check_segments(groups, [_result(0, [0, 1], fp), _result(1, [2], {**fp, "codebook": "x" * 64})], fp)


# --- messy tables: do what one-node create_index does ---------------------------------------

def _run(spark, uri, column="vector", **kw):
    config = make_config({}, {"uri": uri, "column": column, "num_partitions": 16, **kw})
    return pipeline.run(config, spark=spark)


@pytest.mark.parametrize("value_type", [pa.float16(), pa.float64()])
def test_float16_and_float64_columns(spark, tmp_path, value_type):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=2000, value_type=value_type)
    result = _run(spark, data.uri, rows_per_task=4000)
    assert (result.num_rows, result.num_segments) == (8000, 2)
    assert recall(data.uri, data, nprobes=4, refine=10) > 0.8


def test_vector_inside_a_struct_column(spark, tmp_path):
    uri = str(tmp_path / "ds")
    data = write_vectors(tmp_path / "flat", 6000, DIM)
    struct = pa.StructArray.from_arrays([fsl(data.vectors), pa.array(np.arange(6000))], names=["vector", "n"])
    lance.write_dataset(pa.table({"id": np.arange(6000), "emb": struct}), uri, max_rows_per_file=1500)
    result = _run(spark, uri, column="emb.vector", rows_per_task=3000)
    assert (result.num_rows, result.num_segments, result.index_name) == (6000, 2, "emb.vector_idx")
    assert recall(uri, data, column="emb.vector", nprobes=4, refine=10) > 0.8


def test_null_and_nan_vectors_and_deleted_rows(spark, tmp_path):
    """One-node create_index counts null and NaN rows as indexed and never returns them."""
    n = 8000
    data = write_vectors(tmp_path / "src", n, DIM)
    vectors = data.vectors.copy()
    vectors[5::50, 3] = np.nan
    nulls = np.zeros(n, bool)
    nulls[7::50] = True
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM, mask=pa.array(nulls))
    uri = str(tmp_path / "ds")
    lance.write_dataset(pa.table({"id": np.arange(n), "vector": column}), uri, max_rows_per_file=2000)
    lance.dataset(uri).delete("id % 10 = 0")
    live = lance.dataset(uri).count_rows()

    result = _run(spark, uri, rows_per_task=3000)
    assert result.num_rows == live

    valid = ~nulls & np.isfinite(vectors).all(1) & (np.arange(n) % 10 != 0)
    clean = vectors.copy()
    clean[~valid] = np.nan  # exact_topk never matches non-finite rows
    truth = exact_topk(clean, data.queries, 10)
    found = ann_topk(lance.dataset(uri), "vector", data.queries, 10, 8, 10)
    assert all(valid[f].all() for f in found)
    assert recall_at_k(truth, found) > 0.8


def test_tiny_and_very_uneven_fragments(spark, tmp_path):
    sizes = [1, 3000, 2, 5, 1500, 1, 1491]
    data = write_vectors(tmp_path / "ds", sum(sizes), DIM, fragment_sizes=sizes)
    result = _run(spark, data.uri, num_partitions=8, rows_per_task=2000)
    assert result.num_rows == sum(sizes)
    assert result.num_fragments == len(sizes)
    assert recall(data.uri, data, nprobes=4, refine=10) > 0.8


def test_existing_index_name_needs_replace(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 6000, DIM, rows_per_fragment=1500)
    lance.dataset(data.uri).create_index("vector", "IVF_PQ", num_partitions=4, num_sub_vectors=4)
    before = dataset_state(data.uri)
    with pytest.raises(InputError, match="already exists"):
        _run(spark, data.uri, rows_per_task=3000)
    assert dataset_state(data.uri) == before

    result = _run(spark, data.uri, rows_per_task=3000, replace=True)
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert stats["index_type"] == "IVF_RQ" and stats["num_indexed_rows"] == 6000
    assert len(stats["segments"]) == 1
    assert result.committed_version == before.version + 1
    assert recall(data.uri, data, nprobes=4, refine=10) > 0.8


def test_large_tables_commit_several_merged_segments(spark, tmp_path):
    """Merges run on executors in batches of max_segment_rows; the commit takes them all."""
    job = write_vectors(tmp_path / "job", 8000, DIM, rows_per_fragment=1000)
    single = write_vectors(tmp_path / "single", 8000, DIM, rows_per_fragment=1000)
    config = make_config({}, {"uri": job.uri, "column": "vector", "num_partitions": 16,
                              "rows_per_task": 2000, "max_segment_rows": 4000, "verify_queries": 0})
    result = pipeline.run(config, spark=spark)
    assert (result.num_segments, result.segments_committed, result.num_rows) == (4, 2, 8000)
    stats = lance.dataset(job.uri).stats.index_stats("vector_idx")
    assert len(stats["segments"]) == 2 and stats["num_indexed_rows"] == 8000
    assert sorted(os.listdir(os.path.join(job.uri, "_indices"))) == sorted(s["uuid"] for s in stats["segments"])
    assert "4 segments merged into 2" in result.summary()
    a = result.artifacts
    lance.dataset(single.uri).create_index("vector", "IVF_RQ", num_partitions=16, num_bits=result.params.num_bits,
                                           ivf_centroids=a.centroids_arrow(), rabitq_model=a.rq_model)
    for nprobes, refine in ((2, None), (2, 10), (8, 10)):
        assert abs(recall(job.uri, job, nprobes=nprobes, refine=refine)
                   - recall(single.uri, single, nprobes=nprobes, refine=refine)) <= 0.01


def test_an_index_of_many_merged_segments_is_told_what_gives_fewer(spark, tmp_path, caplog):
    """Every committed segment costs every query: past MANY_SEGMENTS the log says so and names
    --merge-memory (a multivector column's segments are sized from it by its vectors)."""
    import logging

    from spark_lance_index.plan import MANY_SEGMENTS

    data = write_vectors(tmp_path / "t", (MANY_SEGMENTS + 1) * 100, 8, rows_per_fragment=100)
    config = make_config({}, {"uri": data.uri, "column": "vector", "index_type": "IVF_FLAT", "num_partitions": 2,
                              "rows_per_task": 100, "max_segment_rows": 100, "verify_queries": 0})
    with caplog.at_level(logging.WARNING, logger="spark_lance_index"):
        result = pipeline.run(config, spark=spark)
    assert result.segments_committed == MANY_SEGMENTS + 1
    assert f"{MANY_SEGMENTS + 1} segments: every segment costs every query. A larger --merge-memory" in caplog.text


@pytest.mark.parametrize("index_type, nprobes", [("IVF_FLAT", 1), ("IVF_PQ", 4)])
def test_own_training_matches_one_node_create_index_training(spark, tmp_path, index_type, nprobes):
    """The parity tests above give one-node the job's artifacts, so a training defect could not
    show there. Here each side trains its own (the job on the driver's sample, one-node inside
    create_index): medians of 3 builds, since one k-means run differs from the next. 256
    partitions, as many as the data has clusters, keep that spread to about 0.01."""
    extra = {"num_sub_vectors": 8} if index_type == "IVF_PQ" else {}
    job_recalls, single_recalls = [], []
    for run in range(3):
        job = write_vectors(tmp_path / f"job{run}", ROWS, DIM, rows_per_fragment=2500, queries=300)
        single = write_vectors(tmp_path / f"single{run}", ROWS, DIM, rows_per_fragment=2500, queries=300)
        config = make_config({}, {"uri": job.uri, "column": "vector", "index_type": index_type,
                                  "num_partitions": 256, "rows_per_task": 5000, "verify_queries": 0, **extra})
        pipeline.run(config, spark=spark)
        lance.dataset(single.uri).create_index("vector", index_type, num_partitions=256, **extra)
        job_recalls.append(recall(job.uri, job, nprobes=nprobes))
        single_recalls.append(recall(single.uri, single, nprobes=nprobes))
    print(f"{index_type} nprobes {nprobes}: job {sorted(job_recalls)} one-node {sorted(single_recalls)}")
    gap = float(np.median(job_recalls)) - float(np.median(single_recalls))
    if index_type == "IVF_FLAT":  # centroids alone decide: the same k-means on both sides
        # A training defect makes the job worse. Medians of 3 still differ by up to ~0.03 at
        # 1 probe either way (seen on 2026-11-30: job 0.965 against one-node 0.938), so only
        # "not worse" is asserted.
        assert gap >= -0.02
    else:
        # Measured 2026-11-25: the job's own PQ codebook (train_pq_model) gives recall about
        # 0.10 above one-node create_index's here (0.83 vs 0.73). Not worse is the promise.
        assert gap >= -0.02
