"""Reliability: retried tasks, a killed executor, a killed driver, concurrent writers, leftovers.

Every test checks the committed index (rows, segments, recall), not just that the job returned.
"""

import json
import os
import re
import subprocess
import sys

import faults
import lance
import pytest
from conftest import committed_uuids, dataset_state, index_dirs, recall, write_vectors

from spark_lance_index import pipeline
from spark_lance_index.config import make_config
from spark_lance_index.errors import DatasetChangedError, IndexConflictError, InputError, SparkStageError

HERE = os.path.dirname(os.path.abspath(__file__))
DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _ship_faults():
    faults.ship()


def config_for(uri, **kw):
    return make_config({}, {"uri": uri, "column": "vector", "num_partitions": 16, "rows_per_task": 2000, **kw})


def test_task_failing_its_first_attempt_is_retried_and_leaves_nothing(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    twin = write_vectors(tmp_path / "twin", 8000, DIM, rows_per_fragment=1000)
    before = index_dirs(data.uri)

    result = pipeline.run(config_for(data.uri), spark=spark, task_fn=faults.fail_first_attempt(1))

    assert (result.num_tasks, result.num_segments, result.num_rows) == (4, 4, 8000)
    assert result.leftovers_removed == 5  # 4 merge sources + the failed attempt's complete segment
    assert index_dirs(data.uri) == before | committed_uuids(data.uri)
    assert not os.path.exists(result.job_dir)
    # the same index as without the retry: a one-node build with the same artifacts
    a = result.artifacts
    lance.dataset(twin.uri).create_index("vector", "IVF_RQ", num_partitions=16, num_bits=result.params.num_bits,
                                         ivf_centroids=a.centroids_arrow(), rabitq_model=a.rq_model)
    assert abs(recall(data.uri, data) - recall(twin.uri, twin)) <= 0.005
    assert recall(data.uri, data) > 0.8


def test_a_task_that_keeps_failing_fails_the_job_clearly_and_keeps_its_state(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    version, report = lance.dataset(data.uri).version, tmp_path / "r.json"
    config = config_for(data.uri, report=str(report))
    with pytest.raises(SparkStageError) as err:
        pipeline.run(config, spark=spark, task_fn=faults.always_fail(2))
    message = str(err.value)
    assert "segment builds failed after Spark's retries: ValueError: disk full while building group 2" in message
    assert "nothing was committed" in message and "rerun the same command to resume" in message
    assert "\n" not in message and "Py4J" not in message
    assert lance.dataset(data.uri).version == version
    assert json.loads(report.read_text())["outcome"] == "failed"
    # the other groups' segments are kept for the rerun, which builds only the failed group
    result = pipeline.run(config, spark=spark)
    assert (result.segments_reused, result.segments_built, result.num_rows) == (3, 1, 8000)
    assert index_dirs(data.uri) == committed_uuids(data.uri)


@pytest.mark.jvm  # starts Spark itself
def test_executor_killed_mid_task_on_local_cluster(tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "faults.py"), data.uri],
        capture_output=True, text=True, timeout=300, cwd=HERE,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "4 tasks, 4 segments merged into 1" in proc.stdout
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], len(stats["segments"])) == (8000, 1)
    assert index_dirs(data.uri) == committed_uuids(data.uri)
    assert recall(data.uri, data) > 0.8


@pytest.mark.jvm  # starts Spark itself
def test_driver_killed_then_rerun_resumes(tmp_path):
    data = write_vectors(tmp_path / "ds", 48_000, 64, rows_per_fragment=2000)
    cmd = [sys.executable, "-m", "spark_lance_index", "build", "--uri", data.uri, "--column", "vector",
           "--num-partitions", "32", "--rows-per-task", "2000", "--master", "local[1]"]
    job_root = data.uri + ".index-jobs"
    version = lance.dataset(data.uri).version
    segments_dir = faults.kill_driver_after_segments(cmd, job_root)
    done_before = {n for n in os.listdir(segments_dir) if n.endswith(".json")}
    job = json.loads(open(os.path.join(os.path.dirname(segments_dir), "job.json")).read())
    assert 3 <= len(done_before) < 24
    assert lance.dataset(data.uri).version == version  # nothing was committed

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    out = rerun.stdout
    built, reused = map(int, re.search(r"segments built (\d+), reused from an earlier run (\d+)", out).groups())
    # a Python worker of the killed run may finish one more segment before it notices
    assert built + reused == 24 and len(done_before) <= reused <= len(done_before) + 2, out
    assert f"rotation {job['fingerprints']['rotation'][:12]}" in out  # the same rotation
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], len(stats["segments"])) == (48_000, 1)
    assert index_dirs(data.uri) == committed_uuids(data.uri)  # the killed run's debris too
    assert not os.path.exists(job_root)  # the default root is removed once empty
    assert recall(data.uri, data, nprobes=8) > 0.8


def test_rows_appended_during_the_build_are_reported_unindexed(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    result = pipeline.run(config_for(data.uri), spark=spark,
                          task_fn=faults.change_dataset_during_build(0, "append"))
    assert (result.num_rows, result.unindexed_rows, result.unindexed_fragments) == (8000, 100, 1)
    assert "not yet indexed: 100 rows in 1 fragment added" in result.summary()
    assert index_dirs(data.uri) == committed_uuids(data.uri)
    assert recall(data.uri, data) > 0.8


@pytest.mark.parametrize("change, message", [
    ("compact", r"fragments \[0, 1, 2, 3, 4, 5, 6, 7\] were removed"),
    ("overwrite", r"fragments \[0, 1, 2, 3, 4, 5, 6, 7\] were removed"),
    ("delete_fragment", r"fragments \[0\] were removed"),
])
def test_planned_fragments_rewritten_during_the_build_fail_cleanly(spark, tmp_path, change, message):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).create_index("vector", "IVF_FLAT", name="vector_idx", num_partitions=2)
    before = index_dirs(data.uri)
    with pytest.raises(DatasetChangedError, match=message) as err:
        pipeline.run(config_for(data.uri, replace=True), spark=spark,
                     task_fn=faults.change_dataset_during_build(0, change))
    assert "nothing was committed" in str(err.value) and "rerun the job" in str(err.value)
    ds = lance.dataset(data.uri)
    current = {i.name: i for i in ds.describe_indices()}
    mine = set()
    if "vector_idx" in current:  # an overwrite drops the old index; others keep it
        assert ds.stats.index_stats("vector_idx")["index_type"] == "IVF_FLAT"
        mine = committed_uuids(data.uri)
    # nothing of the job's is left: new directories are the other writer's (a compaction
    # rewrites the index it keeps), and the job directory is gone
    assert index_dirs(data.uri) - before <= mine
    assert not os.path.exists(data.uri + ".index-jobs")


def test_an_index_of_the_same_name_committed_during_the_build_is_never_replaced_without_replace(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    before = index_dirs(data.uri)
    with pytest.raises(IndexConflictError, match="an index named 'vector_idx' already exists.*nothing was committed") as err:
        pipeline.run(config_for(data.uri), spark=spark, task_fn=faults.change_dataset_during_build(0, "same_index"))
    assert "\n" not in str(err.value)
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert stats["index_type"] == "IVF_FLAT"  # the other writer's index stands
    # nothing of the job's is left: the only new directory is the other writer's index
    assert index_dirs(data.uri) - before == committed_uuids(data.uri)
    assert not os.path.exists(data.uri + ".index-jobs")


def test_with_replace_an_index_committed_during_the_build_is_replaced(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    result = pipeline.run(config_for(data.uri, replace=True), spark=spark,
                          task_fn=faults.change_dataset_during_build(0, "same_index"))
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["index_type"], stats["num_indexed_rows"], len(stats["segments"])) == ("IVF_RQ", 8000, 1)
    assert result.committed_version == 10  # 8 appends, the other writer's index, ours
    assert recall(data.uri, data) > 0.8


def test_replace_swaps_the_index_in_one_commit(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).create_index("vector", "IVF_PQ", num_partitions=4, num_sub_vectors=4)
    before = dataset_state(data.uri)
    with pytest.raises(InputError, match="already exists"):
        pipeline.run(config_for(data.uri), spark=spark)
    assert dataset_state(data.uri) == before
    result = pipeline.run(config_for(data.uri, replace=True), spark=spark)
    assert result.committed_version == before.version + 1  # one commit swapped it
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["index_type"], len(stats["segments"])) == ("IVF_RQ", 1)
    # the old index's files stay for older versions; the job added exactly one directory
    assert index_dirs(data.uri) == set(before.index_dirs) | committed_uuids(data.uri)
    assert recall(data.uri, data) > 0.8
