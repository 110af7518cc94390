"""`update`: the index keeps up with a growing table, with its own model, in few segments.

Recall is measured against exact search over every live row, and compared with a full
rebuild that uses the same model (one segment over every live fragment).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import timedelta

import faults
import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import (
    committed_uuids,
    dataset_state,
    fsl,
    index_dirs,
    maxsim_topk,
    multivectors_in_parts,
    spark_job_count,
)

from spark_lance_index import phases, pipeline
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.errors import CommitCheckError, DatasetChangedError, InputError
from spark_lance_index.index_model import model_fingerprint, read_segment_model
from spark_lance_index.storage import locate
from spark_lance_index.update_plan import CommittedSegment, SegmentPolicy

DIM = 32
# one distribution: every append is drawn from POOL, the queries are held out of the same draw
# (another `rows` draws other projections: clustered_vectors(60_030)[60_000:] is not POOL's)
POOL, HELD_OUT = np.split(clustered_vectors(60_300, DIM, seed=7), [60_000])


class Table:
    """A Lance table that grows by appends of rows drawn from POOL, with an id per row."""

    def __init__(self, path, rows: int, rows_per_fragment: int = 2000):
        self.uri, self.next_id = str(path), 0
        self.append(rows, rows_per_fragment, mode="create")

    def append(self, rows: int, rows_per_fragment: int = 1000, mode: str = "append", vectors=None):
        ids = np.arange(self.next_id, self.next_id + rows)
        vectors = POOL[ids % len(POOL)] if vectors is None else vectors
        lance.write_dataset(pa.table({"id": pa.array(ids), "vector": fsl(vectors)}), self.uri, mode=mode,
                            max_rows_per_file=rows_per_fragment)
        self.next_id += rows

    def upsert(self, ids: np.ndarray):
        """Rewrite the vectors of `ids` with other rows of POOL (Lance deletes the old rows and
        writes new fragments)."""
        vectors = POOL[(ids + len(POOL) // 2) % len(POOL)]
        table = pa.table({"id": pa.array(ids), "vector": fsl(vectors)})
        lance.dataset(self.uri).merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(table)


def update_config(uri, **kw):
    return make_config({}, {"uri": uri, "column": "vector", "mode": "update", "rows_per_task": 2000,
                            "verify_queries": 20, **kw})


def build_config(uri, **kw):
    return make_config({}, {"uri": uri, "column": "vector", "num_partitions": 16, "rows_per_task": 2000,
                            "verify_queries": 0, **kw})


def live_rows(uri):
    t = lance.dataset(uri).to_table(columns=["id", "vector"])
    return t.column("id").to_numpy(), t.column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)


def recall_against_exact(uri, queries, nprobes=8, refine=50) -> float:
    """recall@10 over every live row: the index's answers (fast_search, so only indexed rows)
    against numpy's exact top-10."""
    ids, vectors = live_rows(uri)
    ds = lance.dataset(uri)
    hits = 0
    for q in queries:
        exact = set(ids[np.argsort(((vectors - q) ** 2).sum(1))[:10]].tolist())
        found = ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": nprobes, "refine_factor": refine},
                            columns=["id"], fast_search=True).column("id").to_numpy()
        hits += len(exact & set(found.tolist()))
    return hits / (10 * len(queries))


def models(uri, name="vector_idx"):
    ds = lance.dataset(uri)
    return [read_segment_model(locate(uri), {}, s) for s in ds.stats.index_stats(name)["indices"]]


def rebuild_recall(uri, tmp_path, queries, refine=50) -> float:
    """recall of a full rebuild with the index's own model: one segment over every live
    fragment, on a copy of the table."""
    copy = str(tmp_path / f"rebuild-{time.monotonic_ns()}")
    shutil.copytree(uri, copy)
    model = models(copy)[0]
    ds = lance.dataset(copy)
    kwargs = {"num_bits": model.num_bits, "rabitq_model": model.artifacts.rq_model} if model.index_type == "IVF_RQ" else {}
    if model.artifacts.codebook is not None:
        kwargs = {"num_sub_vectors": model.num_sub_vectors, "pq_codebook": model.artifacts.codebook_arrow()}
    if "HNSW" in model.index_type:
        kwargs.update(zip(("m", "ef_construction", "max_level"), model.graph))
    segment = ds.create_index_uncommitted(
        "vector", model.index_type, name="vector_idx", replace=True, metric=model.metric,
        num_partitions=model.num_partitions, ivf_centroids=model.artifacts.centroids_arrow(),
        fragment_ids=[f.fragment_id for f in ds.get_fragments()], **kwargs)
    ds.commit_existing_index_segments("vector_idx", "vector", [segment])
    assert len(lance.dataset(copy).stats.index_stats("vector_idx")["indices"]) == 1
    try:
        return recall_against_exact(copy, queries, refine=refine)
    finally:
        shutil.rmtree(copy)


def assert_fully_indexed_with_one_model(uri, first_model, dirs_before):
    """Every live row indexed, every segment encoded with the first model, and nothing of the
    update's left behind: the only new directories are committed segments (a segment the
    update replaced stays, since older versions use it, until Lance's cleanup_old_versions)."""
    ds = lance.dataset(uri)
    stats = ds.stats.index_stats("vector_idx")
    assert stats["num_unindexed_rows"] == 0 and stats["num_indexed_rows"] == ds.count_rows()
    for m in models(uri):  # read back from every segment's files
        assert model_fingerprint(m) == model_fingerprint(first_model), m.uuid
    assert index_dirs(uri) - dirs_before == committed_uuids(uri) - dirs_before
    assert not os.path.exists(uri + ".index-jobs")


@pytest.mark.parametrize("index_type", ["IVF_RQ", "IVF_PQ"])
def test_append_delete_and_upsert_cycles_keep_every_row_indexed_at_rebuild_recall(spark, tmp_path, index_type):
    table = Table(tmp_path / "t", 16_000)
    pipeline.run(build_config(table.uri, index_type=index_type,
                              **({"num_sub_vectors": 8} if index_type == "IVF_PQ" else {})), spark=spark)
    first = models(table.uri)[0]
    queries = HELD_OUT[:30]
    cycles = [
        ("append", lambda: table.append(3000)),
        ("delete rows and append", lambda: (lance.dataset(table.uri).delete("id % 7 = 0"), table.append(2000))),
        ("upsert rows", lambda: table.upsert(np.arange(100, 1600, 3))),
        ("delete a whole new fragment and append", lambda: (
            lance.dataset(table.uri).delete(f"id >= {table.next_id - 1000}"), table.append(4000))),
    ]
    for what, change in cycles:
        change()
        dirs = index_dirs(table.uri)
        result = pipeline.run(update_config(table.uri), spark=spark)
        assert result.update["new_rows"] > 0, what
        assert result.drift.advice is None, (what, result.drift)  # the same distribution: no drift
        assert_fully_indexed_with_one_model(table.uri, first, dirs)
        got, rebuilt = recall_against_exact(table.uri, queries), rebuild_recall(table.uri, tmp_path, queries)
        assert got >= rebuilt - 0.02, (what, got, rebuilt)
        assert len(committed_uuids(table.uri)) <= 3, what


@pytest.mark.parametrize("index_type", ["IVF_SQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT"])
def test_unmerged_types_are_updated_with_their_own_centroids_at_rebuild_recall(spark, tmp_path, index_type):
    """SQ and HNSW segments are never merged (index_types): an update encodes the new rows with
    the committed centroids (and codebook, and graph parameters) into a segment of its own, each
    with its own SQ bounds, and folds the small segments of earlier updates into it."""
    table = Table(tmp_path / "t", 12_000)
    kw = {"num_sub_vectors": 8} if "PQ" in index_type else {}
    pipeline.run(build_config(table.uri, index_type=index_type, m=8, ef_construction=40, rows_per_task=None, **kw)
                 if "HNSW" in index_type else build_config(table.uri, index_type=index_type, rows_per_task=None),
                 spark=spark)
    first = models(table.uri)[0]
    assert first.graph == ((8, 40, 7) if "HNSW" in index_type else (0, 0, 0))
    # held out; 300, since two HNSW builds of the same rows differ by up to 0.02 over 100 queries
    queries = HELD_OUT
    cycles = [
        ("append", lambda: table.append(3000)),
        ("delete rows and append", lambda: (lance.dataset(table.uri).delete("id % 7 = 0"), table.append(2000))),
        ("compact, then append", lambda: (
            lance.dataset(table.uri).optimize.compact_files(target_rows_per_fragment=6000), table.append(1500))),
        ("compact with a deferred remap, then append", lambda: (
            lance.dataset(table.uri).optimize.compact_files(target_rows_per_fragment=8000, defer_index_remap=True),
            table.append(1500))),
    ]
    for what, change in cycles:
        change()
        dirs = index_dirs(table.uri)
        result = pipeline.run(update_config(table.uri, rows_per_task=None), spark=spark)
        assert result.update["new_rows"] > 0 and result.params.index_type == index_type, what
        assert_fully_indexed_with_one_model(table.uri, first, dirs)
        segments = lance.dataset(table.uri).stats.index_stats("vector_idx")["indices"]
        if "HNSW" in index_type:  # as Lance reports them, not as the job reads them
            graphs = {tuple(s["sub_index"]["params"][k] for k in ("m", "ef_construction", "max_level"))
                      for s in segments}
            assert graphs == {(8, 40, 7)}, (what, graphs)
        # no refine: the codes and graphs themselves are compared
        got, rebuilt = (recall_against_exact(table.uri, queries, refine=None),
                        rebuild_recall(table.uri, tmp_path, queries, refine=None))
        assert got >= rebuilt - 0.02, (what, got, rebuilt)
        assert len(committed_uuids(table.uri)) <= 3, (what, len(committed_uuids(table.uri)))


@pytest.mark.parametrize("index_type", ["IVF_PQ", "IVF_HNSW_SQ"])
def test_multivector_indexes_are_updated_with_their_own_model_at_rebuild_recall(spark, tmp_path, index_type):
    """A multivector column (1 to 5 vectors a row, cosine): new rows are encoded with the
    committed centroids and codebook, through appends, deletes and a compaction, and recall
    (brute-force MaxSim) stays that of a rebuild with the same model; the drift check splits
    its queries into new and older rows."""
    uri = str(tmp_path / "t")
    source, rows = multivectors_in_parts(uri, 10_500, 6000, DIM, rows_per_fragment=1000, queries=100)
    flags = {"num_sub_vectors": 8} if "PQ" in index_type else {}
    pipeline.run(make_config({}, {"uri": uri, "column": "mv", "metric": "cosine", "index_type": index_type,
                                  "num_partitions": 8, "rows_per_task": 2000, "verify_queries": 0, **flags}), spark=spark)
    first = models(uri, "mv_idx")[0]
    appended = iter(range(6000, 10_500, 1500))
    append = lambda: lance.write_dataset(rows.slice(next(appended), 1500), uri, mode="append",  # noqa: E731
                                         max_rows_per_file=750)
    cycles = [
        ("append", append),
        ("delete rows and append", lambda: (lance.dataset(uri).delete("id % 7 = 0"), append())),
        ("compact, then append", lambda: (
            lance.dataset(uri).optimize.compact_files(target_rows_per_fragment=3000), append())),
    ]
    for what, change in cycles:
        change()
        result = pipeline.run(make_config({}, {"uri": uri, "column": "mv", "mode": "update", "rows_per_task": 2000,
                                               "verify_queries": 40}), spark=spark)
        assert result.update["new_rows"] == 1500 and result.params.index_type == index_type, what
        assert result.drift.recall_new_rows is not None and result.drift.advice is None, (what, result.drift)
        ds = lance.dataset(uri)
        stats = ds.stats.index_stats("mv_idx")
        assert stats["num_unindexed_rows"] == 0 and stats["num_indexed_rows"] == ds.count_rows(), what
        assert all(model_fingerprint(m) == model_fingerprint(first) for m in models(uri, "mv_idx")), what
        copy = str(tmp_path / f"rebuild-{time.monotonic_ns()}")
        shutil.copytree(uri, copy)
        ds_copy = lance.dataset(copy)
        kwargs = {"num_sub_vectors": 8, "pq_codebook": first.artifacts.codebook_arrow()} if "PQ" in index_type else {}
        segment = ds_copy.create_index_uncommitted(
            "mv", index_type, name="mv_idx", replace=True, metric="cosine", num_partitions=8,
            ivf_centroids=first.artifacts.centroids_arrow(),
            fragment_ids=[f.fragment_id for f in ds_copy.get_fragments()], **kwargs)
        ds_copy.commit_existing_index_segments("mv_idx", "mv", [segment])
        got, rebuilt = (_live_multivector_recall(u, source.queries) for u in (uri, copy))
        shutil.rmtree(copy)
        assert got >= rebuilt - 0.02, (what, got, rebuilt)
    if index_type == "IVF_PQ":  # merged: few segments (an unmerged type keeps one per task's rows)
        assert len(committed_uuids(uri, "mv_idx")) <= 3
    # rows all near one old row: their vectors fall in few partitions, which the shift says
    rng = np.random.default_rng(3)
    near = source.docs[0][0] + 0.01 * rng.standard_normal((4000, DIM)).astype(np.float32)
    offsets = pa.array(np.arange(0, 4001, 2, dtype=np.int32))
    lance.write_dataset(pa.table({"id": np.arange(20_000, 22_000), "mv": pa.ListArray.from_arrays(offsets, fsl(near))}),
                        uri, mode="append")
    result = pipeline.run(make_config({}, {"uri": uri, "column": "mv", "mode": "update", "rows_per_task": 2000,
                                           "verify_queries": 40}), spark=spark)
    assert result.drift.shift_rows == 4000 and result.drift.advice, result.drift
    assert "of the 4,000 new vectors fall in other partitions" in result.drift.advice


def _live_multivector_recall(uri: str, queries: np.ndarray, k: int = 10) -> float:
    """recall@k of the index for `queries` over the table's live rows, against brute-force MaxSim
    (every partition searched, refine 10: the codes and segments are compared, not the probe)."""
    table = lance.dataset(uri).to_table(columns=["id", "mv"])
    ids = table.column("id").to_numpy()
    docs = [np.asarray(v, dtype=np.float32) for v in table.column("mv").to_pylist()]
    truth = ids[maxsim_topk(docs, queries, k)]
    ds, hits = lance.dataset(uri), 0
    for q, true_ids in zip(queries, truth):
        found = ds.to_table(nearest={"column": "mv", "q": q, "k": k, "nprobes": 8, "refine_factor": 10},
                            columns=["id"]).column("id").to_pylist()
        hits += len(set(found) & set(true_ids.tolist()))
    return hits / truth.size


def test_a_one_node_ivf_flat_index_is_updated_with_its_own_centroids(spark, tmp_path):
    table = Table(tmp_path / "t", 8000)
    lance.dataset(table.uri).create_index("vector", "IVF_FLAT", num_partitions=8)
    first = models(table.uri)[0]
    table.append(3000)
    dirs = index_dirs(table.uri)
    result = pipeline.run(update_config(table.uri), spark=spark)
    assert result.params.index_type == "IVF_FLAT" and result.update["new_rows"] == 3000
    assert_fully_indexed_with_one_model(table.uri, first, dirs)
    assert result.recall[0].recall > 0.9


def test_nothing_new_commits_nothing_and_starts_no_spark_job(spark, tmp_path):
    table = Table(tmp_path / "t", 8000)
    pipeline.run(build_config(table.uri), spark=spark)
    before, jobs = dataset_state(table.uri), spark_job_count(spark)
    lance.dataset(table.uri).delete("id < 100")  # deletes alone are nothing to index
    deleted = dataset_state(table.uri)
    started = time.perf_counter()
    result = pipeline.run(update_config(table.uri), spark=spark)
    took = time.perf_counter() - started
    assert result.outcome == "succeeded" and result.committed_version is None
    assert result.update["new_rows"] == 0 and "up to date" in result.summary()
    assert dataset_state(table.uri) == deleted and deleted.index_dirs == before.index_dirs
    assert spark_job_count(spark) == jobs and took < 10
    assert not os.path.exists(table.uri + ".index-jobs")


def test_segments_stay_few_over_many_updates(spark, tmp_path):
    table = Table(tmp_path / "t", 12_000)
    pipeline.run(build_config(table.uri), spark=spark)
    counts = []
    for _ in range(6):
        table.append(600, rows_per_fragment=600)
        result = pipeline.run(update_config(table.uri, verify_queries=0, segment_ratio=2), spark=spark)
        counts.append(len(committed_uuids(table.uri)))
        assert result.segments_committed == 1
    # each segment holds at least `ratio` times the next smaller one: at most 1 + log2(all / smallest)
    assert max(counts) <= 1 + int(np.log2(16_000 / 600)), counts
    sizes = sorted(sum(p["size"] for p in s["partitions"])
                   for s in lance.dataset(table.uri).stats.index_stats("vector_idx")["indices"])
    assert all(b >= 2 * a for a, b in zip(sizes, sizes[1:])), sizes


def test_a_later_update_never_writes_into_a_segment_an_older_version_uses(spark, tmp_path):
    """Every update of an index is the same job; without a run id in the segment uuids, the
    second update's first group (the first update's fragments, re-encoded) would write into,
    and then delete, the directory the first update committed."""
    table = Table(tmp_path / "t", 20_000)
    pipeline.run(build_config(table.uri), spark=spark)
    table.append(2000)  # fragments 10 and 11: one group, committed as built
    pipeline.run(update_config(table.uri, verify_queries=0), spark=spark)
    first = lance.dataset(table.uri)
    (small,) = committed_uuids(table.uri) - {s["uuid"] for s in first.checkout_version(first.version - 1)
                                            .stats.index_stats("vector_idx")["indices"]}
    folder = os.path.join(table.uri, "_indices", small)
    written = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}
    table.append(2000)  # re-encodes fragments 10 and 11 (group 0 again) with 12 and 13
    result = pipeline.run(update_config(table.uri, verify_queries=0), spark=spark)
    assert result.update["segments_reencoded"] == 1 and small not in committed_uuids(table.uri)
    assert small in index_dirs(table.uri)  # the version the first update committed still has it
    # and nothing wrote into it (cleanup's guard alone would keep a directory overwritten in place)
    assert {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)} == written
    older = lance.dataset(table.uri, version=first.version)
    assert older.to_table(nearest={"column": "vector", "q": POOL[0], "k": 5}, columns=["id"]).num_rows == 5


def test_the_segment_policy_re_encodes_the_fewest_small_segments():
    seg = lambda name, rows: CommittedSegment(name, (), rows)  # noqa: E731
    policy = SegmentPolicy(max_segment_rows=3000, ratio=3)  # full: 2,250 rows and more
    full, big, small = seg("full", 2500), seg("big", 1000), seg("small", 100)
    assert policy.to_reencode([full, big, small], 33) == ()  # 100 >= 3 x 33: a new segment
    assert policy.to_reencode([full, big, small], 40) == (small,)  # 100 < 3 x 40; 1000 >= 3 x 140
    assert policy.to_reencode([full, big, small], 300) == (small, big)  # 1000 < 3 x 400
    assert policy.to_reencode([full], 100_000) == ()  # a full segment is never re-encoded
    assert policy.to_reencode([full, big, small], 0) == ()  # nothing new: nothing to do
    # never more than max_segment_rows in one update: equal segments from an older layout stay
    many = [seg(f"s{i}", 1400) for i in range(10)]
    assert policy.to_reencode(many, 500) == (many[0],)  # 500 + 1400 fits, 1900 + 1400 does not
    assert policy.to_reencode(many, 10) == ()  # 1400 >= 3 x 10


def test_the_segment_policy_of_unmerged_types_aims_at_what_one_task_builds():
    """An SQ or HNSW segment is one task (at most UNMERGED_TASK_BYTES of vectors), never merged:
    the policy's full segments are that size, so an update never folds more than a task holds."""
    from types import SimpleNamespace

    from spark_lance_index.dataset import IndexParams
    from spark_lance_index.plan import FIXED_SEGMENT_ROWS, UNMERGED_TASK_BYTES, policy_segment_rows

    config = make_config({}, {"uri": "/nowhere", "column": "vector", "mode": "update"})
    snap = SimpleNamespace(bytes_per_row=768 * 4 + 8, dim=768, vector_bytes=4, multivector=False)
    sq = IndexParams("IVF_SQ", "l2", 100, 0, 0, 256)
    rq = IndexParams("IVF_RQ", "l2", 100, 1, 0, 256)
    assert policy_segment_rows(config, sq, snap) == UNMERGED_TASK_BYTES // snap.bytes_per_row < FIXED_SEGMENT_ROWS
    assert policy_segment_rows(config, rq, snap) == FIXED_SEGMENT_ROWS
    limit = policy_segment_rows(config, sq, snap)
    tail = [CommittedSegment(str(i), (i,), rows, ()) for i, rows in enumerate((limit // 2, limit // 3, 20_000))]
    folded = SegmentPolicy(limit).to_reencode(tail, 10_000)
    assert sum(s.num_rows for s in folded) + 10_000 <= limit


def test_the_index_changing_during_the_update_is_refused_and_nothing_is_committed(spark, tmp_path, monkeypatch):
    table = Table(tmp_path / "t", 8000)
    pipeline.run(build_config(table.uri), spark=spark)
    table.append(2000)
    real_merge = phases.merge

    def rebuild_then_merge(*args, **kwargs):  # another writer replaces the index meanwhile
        lance.dataset(table.uri).create_index("vector", "IVF_FLAT", num_partitions=4, replace=True, name="vector_idx")
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(phases, "merge", rebuild_then_merge)
    before = index_dirs(table.uri)
    with pytest.raises(DatasetChangedError, match="segments of index 'vector_idx' changed"):
        pipeline.run(update_config(table.uri), spark=spark)
    assert lance.dataset(table.uri).stats.index_stats("vector_idx")["index_type"] == "IVF_FLAT"
    assert index_dirs(table.uri) - before == committed_uuids(table.uri)  # the update's own segments are gone
    assert not os.path.exists(table.uri + ".index-jobs")


def test_a_driver_dead_after_the_update_commit_is_finished_by_the_rerun(spark, tmp_path, monkeypatch):
    table = Table(tmp_path / "t", 8000)
    pipeline.run(build_config(table.uri), spark=spark)
    table.append(4000)
    dirs = index_dirs(table.uri)

    faults.die_after_commit(monkeypatch, pipeline, lambda: pipeline.run(update_config(table.uri), spark=spark))
    version = lance.dataset(table.uri).version
    result = pipeline.run(update_config(table.uri), spark=spark)
    assert result.committed_version == version and result.segments_built == 0
    assert lance.dataset(table.uri).stats.index_stats("vector_idx")["num_unindexed_rows"] == 0
    assert index_dirs(table.uri) - dirs == committed_uuids(table.uri) - dirs  # the merge sources are gone
    assert not os.path.exists(table.uri + ".index-jobs")


@pytest.mark.parametrize("then", ["old versions cleaned up", "a new fragment deleted"])
def test_a_dead_drivers_landed_update_is_finished_even_after_the_table_moved_on(spark, tmp_path, monkeypatch, then):
    table = Table(tmp_path / "t", 8000)
    pipeline.run(build_config(table.uri), spark=spark)
    table.append(4000)
    faults.die_after_commit(monkeypatch, pipeline, lambda: pipeline.run(update_config(table.uri), spark=spark))
    ds = lance.dataset(table.uri)
    if then == "old versions cleaned up":  # the version the dead run pinned is gone
        ds.cleanup_old_versions(older_than=timedelta(0), delete_unverified=True)
    else:  # all rows of a fragment the dead run indexed: Lance drops the fragment
        ds.delete(f"id >= {table.next_id - 1000}")
    result = pipeline.run(update_config(table.uri), spark=spark)
    assert result.outcome == "succeeded"
    stats = lance.dataset(table.uri).stats.index_stats("vector_idx")
    assert stats["num_unindexed_rows"] == 0 and stats["num_indexed_rows"] == lance.dataset(table.uri).count_rows()
    assert index_dirs(table.uri) >= committed_uuids(table.uri)
    assert not os.path.exists(table.uri + ".index-jobs")


def test_an_update_whose_commit_fails_its_check_keeps_failing_until_rebuilt(spark, tmp_path, monkeypatch):
    """A commit found wrong is never forgotten: the rerun checks it again, instead of finding
    nothing new and calling the index up to date."""
    table = Table(tmp_path / "t", 8000)
    pipeline.run(build_config(table.uri), spark=spark)
    table.append(2000)
    monkeypatch.setattr(phases, "committed_model_mismatch", lambda *a: "segment x holds other centroids")
    for _ in range(2):
        with pytest.raises(CommitCheckError, match="holds other centroids.*build --replace"):
            pipeline.run(update_config(table.uri), spark=spark)


@pytest.mark.jvm  # starts Spark itself
def test_a_driver_killed_mid_update_is_finished_by_rerunning_the_command(tmp_path):
    table = Table(tmp_path / "t", 8000)
    lance.dataset(table.uri).create_index("vector", "IVF_RQ", num_partitions=16, num_bits=1)
    first = models(table.uri)[0]
    table.append(40_000, rows_per_fragment=2000)
    version, dirs = lance.dataset(table.uri).version, index_dirs(table.uri)
    cmd = [sys.executable, "-m", "spark_lance_index", "update", "--uri", table.uri, "--column", "vector",
           "--rows-per-task", "2000", "--master", "local[1]", "--verify-queries", "0"]
    segments_dir = faults.kill_driver_after_segments(cmd, table.uri + ".index-jobs")
    done_before = len([n for n in os.listdir(segments_dir) if n.endswith(".json")])
    assert lance.dataset(table.uri).version == version  # nothing committed
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    reused = int(re.search(r"reused from an earlier run (\d+)", rerun.stdout).group(1))
    assert done_before <= reused <= done_before + 2, rerun.stdout  # a worker may finish one more
    assert_fully_indexed_with_one_model(table.uri, first, dirs)


def test_an_index_whose_model_cannot_be_read_is_refused_in_one_line(spark, tmp_path):
    table = Table(tmp_path / "t", 8000)
    ds = lance.dataset(table.uri)
    # Two segments trained apart: no one model encodes new rows like both of them.
    for i, frags in enumerate(([0, 1], [2, 3])):
        centroids = pa.FixedSizeListArray.from_arrays(
            pa.array(clustered_vectors(8, DIM, seed=20 + i).ravel()), DIM)
        segment = ds.create_index_uncommitted("vector", "IVF_FLAT", name="vector_idx", replace=i > 0,
                                              num_partitions=8, ivf_centroids=centroids, fragment_ids=frags)
        ds = ds.commit_existing_index_segments("vector_idx", "vector", [segment])
    table.append(1000)
    before = dataset_state(table.uri)
    with pytest.raises(InputError) as err:
        pipeline.run(update_config(table.uri), spark=spark)
    message = str(err.value)
    assert "different models (centroids differ)" in message and "\n" not in message
    assert dataset_state(table.uri) == before

    pq4 = Table(tmp_path / "pq4", 4000)
    lance.dataset(pq4.uri).create_index("vector", "IVF_PQ", num_partitions=2, num_sub_vectors=4, num_bits=4)
    pq4.append(1000)
    with pytest.raises(InputError, match="4-bit PQ codes; this job builds 8-bit PQ"):
        pipeline.run(update_config(pq4.uri), spark=spark)

    graphs = Table(tmp_path / "graphs", 4000)
    ds = lance.dataset(graphs.uri)
    centroids = POOL[:4]
    made = [ds.create_index_uncommitted("vector", "IVF_HNSW_FLAT", name="vector_idx", num_partitions=4,
                                        ivf_centroids=fsl(centroids), m=m, fragment_ids=[f.fragment_id],
                                        replace=True)
            for m, f in zip((8, 16), ds.get_fragments())]
    ds.commit_existing_index_segments("vector_idx", "vector", made)
    graphs.append(1000)
    before = dataset_state(graphs.uri)
    with pytest.raises(InputError, match=r"different models \(graph differ\)"):
        pipeline.run(update_config(graphs.uri), spark=spark)
    assert dataset_state(graphs.uri) == before


def test_a_one_node_multivector_index_is_updated_with_its_own_centroids(spark, tmp_path):
    uri = str(tmp_path / "mv")
    _, rows = multivectors_in_parts(uri, 900, 600, DIM, rows_per_fragment=300)
    lance.dataset(uri).create_index("mv", "IVF_FLAT", metric="cosine", num_partitions=2)
    first = models(uri, "mv_idx")[0]
    lance.write_dataset(rows.slice(600), uri, mode="append")
    result = pipeline.run(update_config(uri, column="mv", index_name="mv_idx"), spark=spark)
    stats = lance.dataset(uri).stats.index_stats("mv_idx")
    assert result.update["new_rows"] == 300 and (stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (900, 0)
    assert all(model_fingerprint(m) == model_fingerprint(first) for m in models(uri, "mv_idx"))


def test_a_one_node_hnsw_index_is_updated_with_its_graph_parameters(spark, tmp_path):
    table = Table(tmp_path / "t", 6000)
    lance.dataset(table.uri).create_index("vector", "IVF_HNSW_SQ", num_partitions=4)  # m 20, ef 150, 7 levels
    first = models(table.uri)[0]
    table.append(2000)
    dirs = index_dirs(table.uri)
    result = pipeline.run(update_config(table.uri), spark=spark)
    assert result.update["new_rows"] == 2000 and (result.params.m, result.params.ef_construction) == (20, 150)
    assert_fully_indexed_with_one_model(table.uri, first, dirs)
    assert {m.graph for m in models(table.uri)} == {(20, 150, 7)}


@pytest.mark.jvm  # starts Spark itself
def test_update_runs_through_the_cli_and_reports_its_drift(tmp_path):
    table = Table(tmp_path / "t", 8000)
    lance.dataset(table.uri).create_index("vector", "IVF_RQ", num_partitions=8, num_bits=2)
    # rows from elsewhere: the model no longer fits them
    table.append(4000, vectors=clustered_vectors(4000, DIM, seed=99) + 5.0)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "spark_lance_index", "update", "--uri", table.uri, "--column", "vector",
         "--master", "local[2]", "--verify-queries", "40", "--target-recall", "0.8", "--report", str(report)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    drift = doc["update"]["drift"]
    assert doc["update"]["new_rows"] == 4000 and drift["partition_shift"] > 0.25
    assert "REBUILD ADVISED" in proc.stdout and drift["advice"]
    assert doc["query_settings"]["target"] == 0.8 and doc["query_settings"]["grid"]  # --target-recall on update
    from jsonschema import validate

    from spark_lance_index.report import report_schema
    validate(doc, report_schema())


def test_the_committed_model_is_read_back_and_a_foreign_one_is_named(tmp_path):
    """After every commit the job reads each segment's model back from its files and compares
    it with the one it encoded with (no Spark needed to check the check)."""
    from lance.lance import indices

    from spark_lance_index.index_model import committed_model_mismatch
    from spark_lance_index.train import SharedArtifacts, to_matrix

    table = Table(tmp_path / "t", 4000)
    ds = lance.dataset(table.uri)
    centroids = indices.train_ivf_model(ds._ds, "vector", DIM, 4, "l2", 256, 10, None)
    rq = indices.build_rq_model(DIM, num_bits=2)
    segment = ds.create_index_uncommitted("vector", "IVF_RQ", name="vector_idx", num_partitions=4, num_bits=2,
                                          ivf_centroids=centroids, rabitq_model=rq, fragment_ids=[0, 1])
    ds = ds.commit_existing_index_segments("vector_idx", "vector", [segment])
    stats, where = ds.stats.index_stats("vector_idx"), locate(table.uri)
    mine = SharedArtifacts(centroids=to_matrix(centroids), rq_model=rq)
    assert committed_model_mismatch(where, {}, stats, mine) is None
    moved = SharedArtifacts(centroids=mine.centroids + 1e-3, rq_model=rq)
    assert "holds other centroids" in committed_model_mismatch(where, {}, stats, moved)
    rotated = SharedArtifacts(centroids=mine.centroids, rq_model=indices.build_rq_model(DIM, num_bits=2))
    assert "another RaBitQ rotation" in committed_model_mismatch(where, {}, stats, rotated)


def test_the_partition_shift_of_the_new_rows_allows_for_rows_deleted_from_re_encoded_segments():
    """The new rows are the segments not kept minus what the re-encoded ones held; rows deleted
    from a re-encoded segment (Lance counted them) only widen the uncertainty, never warn."""
    from spark_lance_index.update_plan import DriftFigures, partition_shift

    before = {"base": [1000] * 4, "tail": [1000, 0, 0, 0]}
    same = {"base": [1000] * 4, "new": [2000, 1000, 1000, 1000]}  # the tail + 4,000 like the base
    shift, uncertainty, rows = partition_shift(before, same, ["base"], {"tail": 1000})
    assert rows == 4000 and shift < 0.2 and uncertainty == 0 and DriftFigures(shift, rows).advice is None
    moved = {"base": [1000] * 4, "new": [1000, 0, 0, 4000]}  # 4,000 new rows all in one partition
    shift, uncertainty, rows = partition_shift(before, moved, ["base"], {"tail": 1000})
    assert rows == 4000 and shift > 0.5 and uncertainty == 0 and DriftFigures(shift, rows, uncertainty).advice
    # 800 of the tail's rows deleted before: its 200 live rows and 4,000 like the base re-encoded
    deleted = {"base": [1000] * 4, "new": [1200, 1000, 1000, 1000]}
    shift, uncertainty, rows = partition_shift(before, deleted, ["base"], {"tail": 200})
    assert uncertainty == 800 / rows and DriftFigures(shift, rows, uncertainty).advice is None
    assert partition_shift(before, {"base": [1000] * 4, "new": [1001, 1, 1, 1]}, ["base"], {"tail": 1000})[0] is None
