"""Distributed training (--trainer distributed): k-means on the executors, as Lance trains.

The pure-numpy pieces (kmeans.py) are checked without a JVM; the trainer end to end on
real Spark and real Lance datasets, by recall against exact search next to Lance's own trainer.
"""

import logging

import lance
import numpy as np
import pytest
from conftest import recall, write_vectors

from spark_lance_index import kmeans
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.errors import InputError
from spark_lance_index.pipeline import run


def rounds_over(blocks):
    """A run_round over in-memory blocks: what the transport does on a cluster."""
    def run_round(r):
        out = None
        for b in blocks:
            p = kmeans.round_partials(b, r)
            out = p if out is None else out + p
        return out
    return run_round


def test_partials_of_blocks_add_up_to_the_partials_of_the_whole():
    rows = clustered_vectors(3000, 16, seed=1)
    codes = rows[np.random.default_rng(0).choice(3000, 40, replace=False)][None]
    whole = kmeans.round_partials(kmeans.Block(rows), kmeans.Round(codes, "l2"))
    split = rounds_over([kmeans.Block(rows[:1000]), kmeans.Block(rows[1000:2500]), kmeans.Block(rows[2500:])])(
        kmeans.Round(codes, "l2"))
    np.testing.assert_allclose(split.sums, whole.sums, rtol=1e-5, atol=1e-3)  # float32 within a chunk
    assert (split.counts == whole.counts).all() and whole.counts.sum() == 3000
    # the assignment is the brute-force nearest code
    truth = ((rows[:, None, :] - codes[0][None]) ** 2).sum(-1).argmin(1)
    assert (np.bincount(truth, minlength=40) == whole.counts[0]).all()
    assert whole.loss == pytest.approx(((rows - codes[0][truth]) ** 2).sum(), rel=1e-4)


def test_dot_codes_are_unit_vectors_and_rows_go_to_the_largest_inner_product():
    rows = clustered_vectors(2000, 8, seed=2)
    codes, _ = kmeans.lloyd(rounds_over([kmeans.Block(rows)]), rows[:16][None], "dot", 10, "test")
    np.testing.assert_allclose(np.linalg.norm(codes[0], axis=1), 1, atol=1e-5)
    labels, dist = kmeans.assign(rows, codes[0], "dot")
    assert (labels == (rows @ codes[0].T).argmax(1)).all()
    np.testing.assert_allclose(dist, 1 - (rows * codes[0][labels]).sum(1), rtol=1e-4, atol=1e-4)


def test_an_empty_code_takes_half_of_the_largest_code():
    sums = np.zeros((1, 3, 2))
    sums[0, 0], sums[0, 2] = [3, 3], [100, 0]
    total = kmeans.Partials(sums, np.array([[3, 0, 10]]), 0.0)
    new, empty = kmeans.update_codebook(total, np.zeros((1, 3, 2), np.float32), "l2")
    assert empty == 1
    np.testing.assert_allclose(new[0, 0], [1, 1], rtol=1e-6)  # a code with rows is their mean
    # code 1 split from code 2 (10 rows), not from code 0 (3 rows): the two straddle (10, 0)
    np.testing.assert_allclose(new[0, 1] + new[0, 2], 2 * np.array([10, 0]), rtol=1e-6)
    assert not np.allclose(new[0, 1], new[0, 2])


def test_the_second_level_trains_each_first_level_cluster_on_its_own_rows_only():
    rng = np.random.default_rng(5)
    first = np.array([[0, 0], [100, 0], [0, 100]], np.float32)
    rows = (first[rng.integers(0, 3, 900)] + rng.normal(0, 5, (900, 2))).astype(np.float32)
    job = kmeans.ClusterJob(np.array([4, 2, 0]), "l2", 20, 3, kmeans.Round(first[None], "l2"))
    blocks = [kmeans.Block(rows[i::2], seed=i) for i in range(2)]
    pieces: dict = {}
    for b in blocks:
        for g, piece in kmeans.split_by_group(b, job):
            pieces.setdefault(g, []).append(piece)
    nearest = ((rows[:, None] - first[None]) ** 2).sum(-1).argmin(1)
    for g in range(3):  # each cluster gets exactly its rows, from every block
        got = np.concatenate([r for _, r in pieces[g]])
        assert sorted(map(tuple, got)) == sorted(map(tuple, rows[nearest == g]))
    trained = dict(kmeans.train_cluster(g, pieces[g], job) for g in range(3))
    assert [len(trained[g]) for g in range(3)] == [4, 2, 0]
    for g in (0, 1):  # every code lies among its own cluster's rows
        assert (((trained[g][:, None] - first[None]) ** 2).sum(-1).argmin(1) == g).all()
    # the order the pieces arrive in does not change the codes
    again = kmeans.train_cluster(0, pieces[0][::-1], job)[1]
    np.testing.assert_array_equal(again, trained[0])


def test_initial_codes_are_a_draw_without_replacement_of_each_clusters_quota():
    rows = np.arange(600, dtype=np.float32).reshape(300, 2)
    groups = np.repeat([0, 1, 2], 100)
    blocks = [kmeans.Block(rows[i::3], groups[i::3]) for i in range(3)]
    quota = kmeans.quotas(10, np.array([100, 100, 100]))
    assert quota.sum() == 10 and quota.max() - quota.min() <= 1
    draws = [kmeans.draw_rows(b, kmeans.Draw(quota, 7)) for b in blocks]
    keys, got_groups, picked = draws[0]
    for d in draws[1:]:
        keys, got_groups, picked = kmeans.merge_draws(quota)((keys, got_groups, picked), d)
    assert (np.bincount(got_groups, minlength=3) == quota).all()
    assert len({tuple(r) for r in picked}) == 10  # no row twice
    assert (got_groups == groups[(picked[:, 0] // 2).astype(int)]).all()  # each row from its cluster
    # quotas follow sizes, at least one per non-empty cluster, never more than its rows
    assert kmeans.quotas(10, np.array([1, 0, 50])).tolist() == [1, 0, 9]


def test_the_sample_plan_is_proportional_and_adds_up():
    from spark_lance_index.dataset import FragmentInfo

    frags = [FragmentInfo(i, n) for i, n in enumerate([1000, 10, 0, 5000, 3000])]
    tasks = kmeans.plan_sample(frags, 900, 3, "u", 1, "v", {}, seed=1)
    assert sum(t.rows for t in tasks) == 900
    covered = [f for t in tasks for f, _ in t.fragments]
    assert covered == [0, 1, 3, 4]  # contiguous, every live fragment once
    for t in tasks:
        live = sum(n for _, n in t.fragments)
        assert abs(t.rows - 900 * live / 9010) < 1


@pytest.mark.parametrize("index_type,metric,partitions", [("IVF_PQ", "l2", 32), ("IVF_FLAT", "l2", 300),
                                                          ("IVF_RQ", "cosine", 300)])
def test_distributed_training_reaches_lances_recall(spark, tmp_path, index_type, metric, partitions, caplog):
    """300 partitions train in two levels (past 256, as Lance's hierarchy); recall against exact
    search at the same partitions, next to Lance's trainer on the same table."""
    figures = {}
    for trainer in ("lance", "distributed"):
        data = write_vectors(tmp_path / trainer, 30000, 32, rows_per_fragment=4000, seed=3)
        extra = {"num_sub_vectors": 8} if index_type == "IVF_PQ" else {}
        config = make_config({}, {"uri": data.uri, "column": "vector", "index_type": index_type, "metric": metric,
                                  "num_partitions": partitions, "trainer": trainer, "verify_queries": 0, **extra})
        with caplog.at_level(logging.INFO, logger="spark_lance_index"):
            run(config, spark=spark)
        assert f"with the {trainer} trainer" in caplog.text
        stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
        assert stats["indices"][0]["num_partitions"] == partitions
        figures[trainer] = [recall(data.uri, data, nprobes, refine) for nprobes, refine in ((4, None), (4, 10))]
    print(index_type, metric, partitions, figures)
    samples = 10 * len(data.queries)
    for lance_figure, ours in zip(figures["lance"], figures["distributed"]):
        # Both trainers start from random draws (Lance's unseeded): two trainings of one trainer
        # differ too. The gap allowed is 0.03, or 2.5 standard errors of a difference of two recall
        # figures over these samples where that is wider (IVF_PQ without refine, recall ~0.65:
        # 0.053; a CI run once saw 0.617 against 0.653 there).
        allowed = max(0.03, 2.5 * (2 * lance_figure * (1 - lance_figure) / samples) ** 0.5)
        assert ours >= lance_figure - allowed, (ours, lance_figure, allowed)


@pytest.mark.parametrize("usable", [50, 0])
def test_a_sample_with_fewer_usable_vectors_than_partitions_is_refused(spark, tmp_path, usable):
    import pyarrow as pa
    from conftest import fsl

    vectors = np.full((600, 8), np.nan, np.float32)
    vectors[:usable] = np.random.default_rng(0).standard_normal((usable, 8))
    lance.write_dataset(pa.table({"vector": fsl(vectors)}), str(tmp_path / "nan"))
    config = make_config({}, {"uri": str(tmp_path / "nan"), "column": "vector", "index_type": "IVF_FLAT",
                              "num_partitions": 64, "sample_rate": 256, "trainer": "distributed",
                              "verify_queries": 0})
    from conftest import dataset_state

    before = dataset_state(str(tmp_path / "nan"))
    with pytest.raises(InputError, match=f"has {usable} usable vectors .* for 64 partitions") as err:
        run(config, spark=spark)
    # known only once the executors sampled: refused in one line before any segment, nothing left behind
    assert "\n" not in str(err.value).split(" [job state")[0]
    assert dataset_state(str(tmp_path / "nan")) == before


def test_the_sample_cap_is_in_bytes_and_a_thin_sample_is_said(caplog):
    from spark_lance_index.dataset import IndexParams
    from spark_lance_index.train import training_sample_rows

    params = IndexParams("IVF_PQ", "l2", 4096, 0, 96, 256)
    config = make_config({}, {"uri": "x", "column": "v"})
    with caplog.at_level(logging.WARNING, logger="spark_lance_index"):
        rows = training_sample_rows(params, config, 768 * 4)
    assert rows == (1 << 30) // (768 * 4)  # 349,525 rows: 1 GiB, not 1M rows (3 GiB)
    assert "rows per partition" not in caplog.text  # 85 per partition
    with caplog.at_level(logging.WARNING, logger="spark_lance_index"):
        training_sample_rows(IndexParams("IVF_PQ", "l2", 16384, 0, 96, 256), config, 768 * 4)
    assert "21 rows per partition" in caplog.text and "under 40" in caplog.text


def test_a_pinned_version_is_opened_once_per_process_and_a_rewritten_dataset_is_not_mistaken(tmp_path):
    from spark_lance_index.dataset import open_dataset

    data = write_vectors(tmp_path / "ds", 100, 8)
    first = open_dataset(data.uri, {}, 1)
    assert open_dataset(data.uri, {}, 1) is first  # no second manifest read
    assert open_dataset(data.uri, {}, None) is not first  # the latest version is always read afresh
    import shutil
    shutil.rmtree(data.uri)
    again = write_vectors(tmp_path / "ds", 50, 8, seed=5)
    reopened = open_dataset(again.uri, {}, 1)
    assert reopened is not first and reopened.count_rows() == 50


def test_a_value_shared_through_the_job_directory_is_read_only_if_it_is_the_drivers(tmp_path):
    """Through Connect, centroids too large for the plan are written to the job directory; a
    task reads them there, and refuses a file that is not what the driver shared."""
    from spark_lance_index import transport
    from spark_lance_index.storage import Files, locate

    files = Files(locate(str(tmp_path)), {})
    connect = transport.ConnectTransport(None, files)
    value = np.arange(2_000_000, dtype=np.float32)
    handle = connect._share(value)
    assert handle.data is None and files.exists(handle.name)  # 8 MB: not in the plan
    transport._READ.clear()
    assert (handle.value() == value).all()
    transport._READ.clear()
    files.write(handle.name, files.read(handle.name)[:-4] + b"\0\0\0\0")
    with pytest.raises(RuntimeError, match="is not the value the driver shared"):
        handle.value()
    connect._unshare(handle)
    assert not files.exists(handle.name)
    assert connect._share(np.arange(10)).data is not None  # a small value rides in the plan


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_the_recall_checks_exact_search_skips_rows_that_cannot_enter_and_finds_the_same(tmp_path, metric):
    """The executors' exact search keeps only rows nearer than a query's k-th best so far; its
    answer is brute force's, row for row, with null and NaN rows in the table."""
    import pyarrow as pa
    from conftest import fsl

    from spark_lance_index.exact_search import ExactSearchTask, exact_topk_of_fragments
    from spark_lance_index.testing import exact_topk

    vectors = clustered_vectors(70_000, 16, seed=4)
    vectors[5] = np.nan
    queries = clustered_vectors(30, 16, seed=9)
    column = fsl(vectors)
    column = pa.FixedSizeListArray.from_arrays(column.values, 16, mask=pa.array(np.arange(70_000) == 7))
    lance.write_dataset(pa.table({"vector": column}), str(tmp_path / "d"))  # one fragment: row id = position
    ds = lance.dataset(str(tmp_path / "d"))
    task = ExactSearchTask(str(tmp_path / "d"), ds.version, "vector", metric,
                           tuple(f.fragment_id for f in ds.get_fragments()), 10, 70_000)
    got = exact_topk_of_fragments(task, queries)
    finite = vectors.copy()
    finite[[5, 7]] = np.inf if metric == "l2" else 0
    truth = exact_topk(np.where(np.isfinite(finite), finite, 1e6), queries, 10, metric)
    assert (np.sort(got.ids, axis=1) == np.sort(truth, axis=1)).mean() > 0.999
    assert not np.isin(got.ids, [5, 7]).any()


@pytest.mark.parametrize("value_type", ["float16", "float64"])
def test_distributed_training_of_a_half_or_double_column_builds_what_lances_does(spark, tmp_path, value_type):
    """Lance's trainer returns centroids and codebook in the column's type, and a segment build
    with a float32 codebook for such a column panics: the distributed trainer casts both."""
    import pyarrow as pa

    figures = {}
    for trainer in ("lance", "distributed"):
        data = write_vectors(tmp_path / trainer, 12000, 16, rows_per_fragment=3000, seed=6,
                             value_type=getattr(pa, value_type)())
        config = make_config({}, {"uri": data.uri, "column": "vector", "index_type": "IVF_PQ", "num_sub_vectors": 4,
                                  "num_partitions": 16, "trainer": trainer, "verify_queries": 0})
        result = run(config, spark=spark)
        assert result.artifacts.centroids.dtype == np.dtype(value_type)
        assert result.artifacts.codebook.dtype == np.dtype(value_type)
        figures[trainer] = recall(data.uri, data, 4, 10)
    print(value_type, figures)
    assert figures["distributed"] >= figures["lance"] - 0.03


def test_auto_decides_from_the_rows_the_table_has_not_the_nominal_sample(caplog):
    """Issue 21: 100k x 768 at 1,400 partitions asks for 358,400 sample rows (1.4 GB, past the
    distributed trainer's threshold), but the table has 100k rows (300 MB): Lance's trainer, on
    every row, as one-node would."""
    from spark_lance_index.dataset import DatasetSnapshot, FragmentInfo, IndexParams
    from spark_lance_index.train import pick_trainer, training_sample_rows, trains_on_driver

    params = IndexParams("IVF_FLAT", "l2", 1400, 0, 0, 256)
    config = make_config({}, {"uri": "/x", "column": "v"})
    frags = tuple(FragmentInfo(i, 25_000) for i in range(4))
    snap = DatasetSnapshot("/x", 1, "v", 768, "float32", frags)
    assert trains_on_driver(config, snap, params)
    with caplog.at_level("INFO", logger="spark_lance_index"):
        rows = training_sample_rows(params, config, 768 * 4, snap.num_rows)
    assert rows == 100_000 and pick_trainer(config, params, rows, snap) == "lance"
    assert "every row of the table" in caplog.text and "capped" not in caplog.text
    # a table as large as the nominal sample still trains on the executors
    big = DatasetSnapshot("/x", 1, "v", 768, "float32", tuple(FragmentInfo(i, 250_000) for i in range(4)))
    assert not trains_on_driver(config, big, params)
