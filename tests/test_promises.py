"""The job's promises under hostile conditions: no wrong index, no false figure, no lost file.

Each test is named for the promise it checks, and each failed on the main of 2026-11-25
(issue 9 lists what it did instead).
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import faults
import lance
import pytest
from conftest import committed_uuids, dataset_state, index_dirs, recall, spark_job_count, write_vectors

from spark_lance_index import phases, pipeline
from spark_lance_index.config import make_config
from spark_lance_index.errors import IndexConflictError, InputError, JobBusyError, JobError
from spark_lance_index.state import JobState, default_jobs_root
from spark_lance_index.storage import locate

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _ship_faults():
    faults.ship()


def config_for(uri, **kw):
    return make_config({}, {"uri": uri, "column": "vector", "num_partitions": 16, "rows_per_task": 2000,
                            "verify_queries": 20, **kw})


def fail_and_keep_state(spark, config, group=1) -> int:
    """A run whose group `group` fails past Spark's retries: its job state stays, as after a
    driver death. Returns how many other groups finished their segments (at least one)."""
    with pytest.raises(JobError, match="job state kept in") as err:
        pipeline.run(config, spark=spark, task_fn=faults.always_fail(group, delay=1.0))
    state_dir = str(err.value).split("job state kept in ")[1].split(":")[0]
    finished = len(os.listdir(os.path.join(state_dir, "segments")))
    assert finished >= 1
    return finished


# --- 1. the job directory ----------------------------------------------------------------

def test_another_jobs_state_in_the_job_dir_is_never_reused_and_the_users_files_survive(spark, tmp_path):
    x = write_vectors(tmp_path / "x", 4000, DIM, rows_per_fragment=1000, seed=1)
    y = write_vectors(tmp_path / "y", 8000, DIM, rows_per_fragment=1000, seed=2)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "notes.txt").write_text("the user's own file")
    finished = fail_and_keep_state(spark, config_for(x.uri, job_dir=str(jobs)))
    x_state = sorted(os.listdir(jobs))
    assert len(x_state) == 2  # notes.txt and X's own folder

    result = pipeline.run(config_for(y.uri, job_dir=str(jobs)), spark=spark)
    assert (result.num_rows, result.num_tasks, result.segments_reused) == (8000, 4, 0)  # Y's own plan
    assert recall(y.uri, y) > 0.8
    assert sorted(os.listdir(jobs)) == x_state  # X's state untouched, Y's gone, the user's file kept
    assert (jobs / "notes.txt").read_text() == "the user's own file"

    resumed = pipeline.run(config_for(x.uri, job_dir=str(jobs)), spark=spark)  # X resumes its own
    assert (resumed.segments_reused, resumed.segments_built, resumed.num_rows) == (finished, 2 - finished, 4000)
    assert sorted(os.listdir(jobs)) == ["notes.txt"]


def test_a_job_directory_whose_identity_differs_is_refused_and_kept(spark, tmp_path):
    x = write_vectors(tmp_path / "x", 4000, DIM, rows_per_fragment=1000, seed=1)
    y = write_vectors(tmp_path / "y", 4000, DIM, rows_per_fragment=1000, seed=2)
    jobs = tmp_path / "jobs"
    fail_and_keep_state(spark, config_for(x.uri, job_dir=str(jobs)))
    (x_dir,) = os.listdir(jobs)
    # a copy of X's state where Y's job looks for its own (a copied or hand-edited folder)
    y_id = pipeline.inspect_inputs(config_for(y.uri, job_dir=str(jobs))).job_id
    shutil.copytree(jobs / x_dir, jobs / y_id)
    before, jobs_run = dataset_state(y.uri), spark_job_count(spark)
    with pytest.raises(JobError, match="holds the state of another job") as err:
        pipeline.run(config_for(y.uri, job_dir=str(jobs)), spark=spark)
    assert "\n" not in str(err.value)
    assert spark_job_count(spark) == jobs_run and dataset_state(y.uri) == before
    assert sorted(os.listdir(jobs / y_id)) == sorted(os.listdir(jobs / x_dir))  # nothing deleted


def test_cleanup_removes_only_the_files_the_job_wrote(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    fail_and_keep_state(spark, config)
    (job_dir,) = os.listdir(data.uri + ".index-jobs")
    stray = os.path.join(data.uri + ".index-jobs", job_dir, "segments", "README")
    with open(stray, "w") as f:
        f.write("not the job's")
    pipeline.run(config, spark=spark)
    assert open(stray).read() == "not the job's"  # survives, and so do its folders
    assert sorted(os.listdir(os.path.join(data.uri + ".index-jobs", job_dir))) == ["segments"]


# --- 2. the recall reported is the committed index's ------------------------------------

def test_a_second_vector_index_appearing_during_the_build_is_refused_before_commit(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    before = index_dirs(data.uri)
    with pytest.raises(IndexConflictError, match="already has the vector index 'other_idx'") as err:
        pipeline.run(config_for(data.uri), spark=spark,
                     task_fn=faults.change_dataset_during_build(0, "other_vector_index"))
    assert "\n" not in str(err.value)
    names = {i.name for i in lance.dataset(data.uri).describe_indices()}
    assert names == {"other_idx"}  # ours was not committed
    assert index_dirs(data.uri) - before == committed_uuids(data.uri, "other_idx")  # ours were removed


def test_verify_refuses_to_measure_when_two_vector_indexes_share_the_column(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    ds = lance.dataset(data.uri)
    ds.create_index("vector", "IVF_FLAT", name="vector_idx", num_partitions=4)
    ds.create_index("vector", "IVF_PQ", name="other_idx", metric="dot", num_partitions=4, num_sub_vectors=4)
    from spark_lance_index.checks import run_verify

    jobs = spark_job_count(spark)
    with pytest.raises(InputError, match=r"has the vector indexes \['other_idx', 'vector_idx'\]"):
        run_verify(config_for(data.uri), spark=spark)
    assert spark_job_count(spark) == jobs


# --- 3. an index of the same name at the latest version ----------------------------------

def test_an_index_of_the_same_name_at_the_latest_version_is_not_replaced_without_replace(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).create_index("vector", "IVF_PQ", name="vector_idx", num_partitions=4, num_sub_vectors=4)
    before, jobs = dataset_state(data.uri), spark_job_count(spark)
    with pytest.raises(InputError, match=r"already exists \(IVF_PQ\).*at the latest version 5"):
        pipeline.run(config_for(data.uri, version=4), spark=spark)
    assert spark_job_count(spark) == jobs and dataset_state(data.uri) == before


def test_replace_of_an_index_covering_fragments_the_build_does_not_is_refused_before_spark(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).create_index("vector", "IVF_PQ", name="vector_idx", num_partitions=4, num_sub_vectors=4)
    before, jobs = dataset_state(data.uri), spark_job_count(spark)
    with pytest.raises(InputError, match=r"covers fragments \[3\] that this build does not index"):
        pipeline.run(config_for(data.uri, version=3, replace=True), spark=spark)
    assert spark_job_count(spark) == jobs and dataset_state(data.uri) == before


# --- 4. deletes and new columns after the pinned version ---------------------------------

@pytest.mark.parametrize("change", ["delete_rows", "add_columns"])
def test_deletes_and_new_columns_during_the_build_commit_a_correct_index(spark, tmp_path, change):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    result = pipeline.run(config_for(data.uri), spark=spark, task_fn=faults.change_dataset_during_build(0, change))
    ds = lance.dataset(data.uri)
    stats = ds.stats.index_stats("vector_idx")
    assert stats["num_indexed_rows"] == ds.count_rows() and stats["num_unindexed_rows"] == 0
    deleted = 4 if change == "delete_rows" else 0
    assert (result.num_rows, result.deleted_rows) == (8000 - deleted, deleted)
    if deleted:
        assert "rows deleted after the pinned version: 4" in result.summary()
    assert index_dirs(data.uri) == committed_uuids(data.uri)
    assert recall(data.uri, data) > 0.8


def test_an_older_pinned_version_with_deletes_after_it_builds(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).delete("id < 2")
    result = pipeline.run(config_for(data.uri, version=4), spark=spark)
    assert (result.pinned_version, result.num_rows, result.deleted_rows) == (4, 3998, 2)


# --- 5. resume when the version moves, and after the commit -------------------------------

def test_a_rerun_after_appends_resumes_the_same_job(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    finished = fail_and_keep_state(spark, config)
    faults.apply_change(data.uri, "append")
    result = pipeline.run(config, spark=spark)
    assert (result.pinned_version, result.segments_reused, result.segments_built) == (8, finished, 4 - finished)
    assert (result.num_rows, result.unindexed_rows) == (8000, 100)
    assert index_dirs(data.uri) == committed_uuids(data.uri)  # the first run's debris too
    assert not os.path.exists(data.uri + ".index-jobs")


def test_a_driver_dead_after_the_commit_is_finished_by_the_rerun(spark, tmp_path, monkeypatch):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)

    faults.die_after_commit(monkeypatch, pipeline, lambda: pipeline.run(config, spark=spark))
    version = lance.dataset(data.uri).version
    assert len(index_dirs(data.uri)) > len(committed_uuids(data.uri))  # the merge sources are still there
    result = pipeline.run(config, spark=spark)
    assert result.committed_version == version  # nothing new committed
    assert result.leftovers_removed == 4 and index_dirs(data.uri) == committed_uuids(data.uri)
    assert result.num_rows == 8000 and result.recall
    assert not os.path.exists(data.uri + ".index-jobs")
    summary = result.summary()
    assert "committed by an earlier run of this job" in summary and "None" not in summary, summary
    assert result.to_report()["counts"]["committed_by_earlier_run"] is True


def test_stale_state_whose_fragments_were_compacted_is_dropped_and_the_job_starts_afresh(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    fail_and_keep_state(spark, config)
    faults.apply_change(data.uri, "compact")
    result = pipeline.run(config, spark=spark)
    assert (result.segments_reused, result.num_rows) == (0, 8000)
    assert result.pinned_version == lance.dataset(data.uri).version - 1
    assert index_dirs(data.uri) == committed_uuids(data.uri)  # the stale run's segments were removed


# --- 6. escaped URIs ---------------------------------------------------------------------

def test_an_escaped_file_uri_resumes_and_cleans_where_lance_writes(spark, tmp_path):
    data = write_vectors(tmp_path / "a b.lance", 4000, DIM, rows_per_fragment=1000)
    uri = "file://" + str(tmp_path / "a%20b.lance")
    config = config_for(uri)
    finished = fail_and_keep_state(spark, config)
    assert os.path.isdir(str(tmp_path / "a b.lance.index-jobs"))
    result = pipeline.run(config, spark=spark)
    assert (result.segments_reused, result.num_rows) == (finished, 4000)
    assert result.leftovers_removed >= 2
    assert index_dirs(data.uri) == committed_uuids(data.uri)
    assert sorted(os.listdir(tmp_path)) == ["a b.lance"]


def test_the_job_directory_never_resolves_into_the_dataset():
    dataset = locate("s3://bucket/data/emb#v2.lance")
    assert str(dataset) == "s3://bucket/data/emb"  # where Lance writes it
    root = default_jobs_root(dataset)
    assert str(root) == "s3://bucket/data/emb.index-jobs" and not dataset.contains(root)
    assert str(locate("file:///d/a%20b.lance?x=1")) == "/d/a b.lance"
    assert str(locate("/d/a%20b.lance")) == "/d/a%20b.lance"  # a plain path is taken literally
    # every spelling of one store is the same place
    for data, jobs in (("s3://vectors/k3.lance", "s3a://vectors/k3.lance/jobs"),
                       ("s3a://vectors/k3.lance", "s3://vectors/k3.lance"),
                       ("gs://b/t.lance", "gcs://b/t.lance/state"),
                       ("az://c/t.lance", "abfss://c@acct.dfs.core.windows.net/t.lance/jobs")):
        assert locate(data).contains(locate(jobs)), (data, jobs)
    assert not locate("s3://vectors/k3.lance").contains(locate("gs://vectors/k3.lance/jobs"))


def test_a_job_directory_that_is_a_symlink_into_the_dataset_is_refused(tmp_path):
    data = write_vectors(tmp_path / "ds", 1000, DIM)
    lance.dataset(data.uri).create_scalar_index("id", "BTREE")
    os.symlink(os.path.join(data.uri, "_indices"), tmp_path / "jobs")
    before = dataset_state(data.uri)
    with pytest.raises(InputError, match="inside the dataset"):
        pipeline.inspect_inputs(config_for(data.uri, job_dir=str(tmp_path / "jobs")))
    assert dataset_state(data.uri) == before


# --- 7. one run at a time, and merges ----------------------------------------------------

def test_a_second_run_of_the_same_job_waits_its_turn(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    first = {}

    def run_first():
        try:
            first["result"] = pipeline.run(config, spark=spark, task_fn=faults.slow(1.5))
        except Exception as e:  # reported below
            first["error"] = e

    thread = threading.Thread(target=run_first)
    thread.start()
    job_root = data.uri + ".index-jobs"
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.isdir(job_root) and any(
            os.listdir(os.path.join(job_root, d, "lease")) for d in os.listdir(job_root)
            if os.path.isdir(os.path.join(job_root, d, "lease")))):
        time.sleep(0.05)
    with pytest.raises(JobBusyError, match="another run of this job is active") as err:
        pipeline.run(config, spark=spark)
    assert "\n" not in str(err.value)
    thread.join(timeout=300)
    assert "error" not in first, first.get("error")
    assert first["result"].num_rows == 8000 and index_dirs(data.uri) == committed_uuids(data.uri)
    assert recall(data.uri, data) > 0.8


def test_the_lease_of_a_dead_run_is_taken_over(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = JobState(default_jobs_root(locate(data.uri)), pipeline.inspect_inputs(config).job_id, {})
    import socket

    state.files.write("lease/x.json", json.dumps({"owner": "x", "host": socket.gethostname(), "pid": dead.pid,
                                                   "pidns": os.readlink("/proc/self/ns/pid"),
                                                   "holding": True}).encode())
    result = pipeline.run(config, spark=spark)
    assert result.num_rows == 4000


def test_a_merge_output_the_job_did_not_mark_is_reported_not_deleted(spark, tmp_path):
    """A merge killed between Lance's write and the job's marker leaves a directory the job
    cannot prove is its own: the intent recorded before the merge lets cleanup name it."""
    from spark_lance_index.commit import MergeTask, merge_segments

    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    insp = pipeline.inspect_inputs(config)
    groups = pipeline.plan(config, insp.snap, insp.params, insp.snap.live_fragments, 2)
    artifacts = pipeline.train(config, insp.snap, insp.params)
    tasks = pipeline.make_tasks(config, insp.snap, insp.params, groups, insp.job_id)
    state = insp.state
    built = pipeline.build(spark, tasks, artifacts, state, insp.job_id)
    merged = merge_segments(MergeTask(data.uri, insp.snap.location, insp.snap.version,
                                      tuple(r.segment for r in built), 4000), state)
    assert len(state.pending_writes()) == 1  # the intent was recorded
    os.remove(os.path.join(state.uri, "attempts", f"{merged.uuid}@{insp.snap.version}"))  # as if killed before marking
    class Lease:
        def check(self):
            pass
    removed, unaccounted = pipeline.cleanup(config, insp.snap, state, [], Lease())
    assert unaccounted == [str(merged.uuid)] and removed == len(built)
    assert index_dirs(data.uri) == {str(merged.uuid)}  # reported, never deleted


# --- 8. a dependency's sys.exit is never a success -----------------------------------------

@pytest.mark.jvm  # starts Spark itself
def test_connect_detection_does_not_let_a_dependency_exit_the_job(tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    # `python -c` has no __main__.__file__: importing pyspark.sql.connect without grpc then
    # calls sys.exit(0). The job must not import it, and must build.
    code = ("import sys; sys.modules['grpc'] = None; from spark_lance_index.cli import entry; "
            f"sys.argv = ['x', 'build', '--uri', {data.uri!r}, '--column', 'vector', '--num-partitions', '8', "
            "'--master', 'local[1]', '--verify-queries', '0']; entry()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert lance.dataset(data.uri).stats.index_stats("vector_idx")["num_indexed_rows"] == 4000


# --- 9. one-node defaults --------------------------------------------------------------------

@pytest.mark.parametrize("index_type", ["IVF_RQ", "IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_PQ"])
def test_defaults_are_one_node_lances(spark, tmp_path, index_type):
    job = write_vectors(tmp_path / "job", 40_000, DIM, rows_per_fragment=10_000)
    one = write_vectors(tmp_path / "one", 40_000, DIM, rows_per_fragment=10_000)
    for uri in (job.uri, one.uri):  # live rows decide: 36,000 of 40,000
        lance.dataset(uri).delete("id % 10 = 0")
    config = make_config({}, {"uri": job.uri, "column": "vector", "index_type": index_type, "verify_queries": 0})
    result = pipeline.run(config, spark=spark)
    kwargs = {"num_sub_vectors": result.params.num_sub_vectors} if result.params.num_sub_vectors else {}
    lance.dataset(one.uri).create_index("vector", index_type, **kwargs)
    ours, theirs = (lance.dataset(u).stats.index_stats("vector_idx")["segments"][0] for u in (job.uri, one.uri))
    assert ours["num_partitions"] == theirs["num_partitions"] == result.params.num_partitions
    assert ours["metric_type"] == theirs["metric_type"]
    for key in ("num_bits", "nbits", "num_sub_vectors", "params"):  # params: HNSW m, ef_construction, max_level
        assert ours["sub_index"].get(key) == theirs["sub_index"].get(key), key


def test_the_post_commit_check_catches_an_index_that_covers_other_fragments(tmp_path):
    """What Lance commits is read back: an index missing a planned fragment (Lance prunes
    coverage when a fragment is rewritten between the last check and the commit) is an error."""
    from lance.lance import indices

    from spark_lance_index.commit import read_back_index
    from spark_lance_index.dataset import fragment_infos
    from spark_lance_index.errors import CommitCheckError

    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    ds = lance.dataset(data.uri)
    planned = fragment_infos(ds, "vector")
    centroids = indices.train_ivf_model(ds._ds, "vector", DIM, 4, "l2", 256, 10, None)
    segment = ds.create_index_uncommitted("vector", "IVF_FLAT", name="vector_idx", num_partitions=4,
                                          ivf_centroids=centroids, fragment_ids=[0, 1, 2])
    ds = ds.commit_existing_index_segments("vector_idx", "vector", [segment])
    with pytest.raises(CommitCheckError, match=r"covers fragments \[0, 1, 2\] instead of the planned ones \(missing \[3\]"):
        read_back_index(ds, "vector_idx", "IVF_FLAT", [str(segment.uuid)], planned)
    report = read_back_index(ds, "vector_idx", "IVF_FLAT", [str(segment.uuid)], planned[:3])
    assert (report.num_indexed_rows, report.num_deleted_rows) == (3000, 0)


def test_a_segment_directory_the_job_did_not_write_survives(spark, tmp_path):
    """Another writer's uncommitted segment under _indices is never the job's to delete."""
    from lance.lance import indices

    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    ds = lance.dataset(data.uri)
    centroids = indices.train_ivf_model(ds._ds, "vector", DIM, 4, "l2", 256, 10, None)
    foreign = ds.create_index_uncommitted("vector", "IVF_FLAT", name="theirs", num_partitions=4,
                                          ivf_centroids=centroids, fragment_ids=[0])
    pipeline.run(config_for(data.uri), spark=spark)
    assert index_dirs(data.uri) == committed_uuids(data.uri) | {str(foreign.uuid)}


def test_the_reported_recall_is_the_index_s_own_when_rows_are_unindexed(spark, tmp_path):
    """Rows appended after the build are not in the index: Lance would search them exactly and
    the truth would include them, inflating the figure. The recall is over what the index covers."""
    from conftest import fsl

    from spark_lance_index.checks import run_verify
    from spark_lance_index.testing import exact_topk, recall_at_k

    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=2000)
    np_queries = tmp_path / "q.npy"
    import numpy as np

    np.save(np_queries, data.queries)
    pipeline.run(config_for(data.uri, verify_queries=0, index_type="IVF_PQ", num_sub_vectors=4), spark=spark)
    more = data.vectors[:4000] + 0.01  # near-twins of indexed rows: they would be true neighbours
    lance.write_dataset(pa_table(np.arange(8000, 12000), fsl(more)), data.uri, mode="append")
    result = run_verify(config_for(data.uri, query_file=str(np_queries), nprobes=(4,), refine_factor=(0,)), spark=spark)
    (figure,) = result.recall
    truth = exact_topk(data.vectors, data.queries, 10)  # the 8,000 indexed rows: ids are positions
    ds = lance.dataset(data.uri)
    found = [ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 4}, columns=["id"],
                         fast_search=True).column("id").to_numpy() for q in data.queries]
    expected = recall_at_k(truth, found)
    print(f"reported {figure.recall:.3f}, numpy over the indexed rows {expected:.3f}")
    assert abs(figure.recall - expected) <= 0.01
    assert figure.recall < 0.95  # PQ without refine: far from the near-1.0 a flat scan would add


def pa_table(ids, vectors):
    import pyarrow as pa

    return pa.table({"id": pa.array(ids), "vector": vectors})


def test_a_commit_found_wrong_is_rebuilt_by_a_rerun_with_replace(spark, tmp_path, monkeypatch):
    from spark_lance_index.errors import CommitCheckError

    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)

    def wrong(*args, **kwargs):
        raise CommitCheckError("index 'vector_idx' was committed but is wrong: injected")

    with monkeypatch.context() as m:
        m.setattr(phases, "read_back_index", wrong)  # where the read-back phase looks it up
        with pytest.raises(CommitCheckError, match="rerun with --replace"):
            pipeline.run(config_for(data.uri), spark=spark)
    version = lance.dataset(data.uri).version
    result = pipeline.run(config_for(data.uri, replace=True), spark=spark)
    assert result.committed_version == version + 1  # rebuilt and committed again, not "finished"
    assert result.num_rows == 4000 and recall(data.uri, data) > 0.8
    assert len(committed_uuids(data.uri)) == 1


def test_state_of_a_dataset_recreated_under_the_same_name_is_not_resumed(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000, seed=1)
    config = config_for(data.uri)
    fail_and_keep_state(spark, config)
    (job_dir,) = os.listdir(data.uri + ".index-jobs")
    with open(os.path.join(data.uri + ".index-jobs", job_dir, "job.json")) as f:
        old = json.load(f)["fingerprints"]["centroids"]
    shutil.rmtree(data.uri)
    fresh = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000, seed=2)  # same versions
    result = pipeline.run(config, spark=spark)
    assert (result.segments_reused, result.num_rows) == (0, 4000)
    assert result.fingerprints["centroids"] != old  # trained on the new data, not reused
    assert recall(fresh.uri, fresh) > 0.8


def test_an_unreadable_lease_is_reported_and_never_blocks(spark, tmp_path, caplog):
    """No run of this job writes a partial lease file (local writes are renamed into place,
    object-store writes are atomic), so a file that cannot be read, fresh or old, empty or
    garbage, is no run's: it is named and removed, and the job runs."""
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    config = config_for(data.uri)
    state = pipeline.inspect_inputs(config).state
    state.files.write("lease/a1.json", b'{"owner": "half-writ')
    state.files.write("lease/b2.json", b"")
    state.files.write("lease/c3.json", b'{"owner": "c3", "heartbeat": "yesterday"}')  # readable, no host: by age
    os.utime(os.path.join(state.uri, "lease", "c3.json"), (time.time() - 120, time.time() - 120))
    with caplog.at_level("WARNING", logger="spark_lance_index"):
        result = pipeline.run(config, spark=spark)
    assert result.num_rows == 4000
    assert "lease files that cannot be read" in caplog.text and "a1.json" in caplog.text and "b2.json" in caplog.text
    assert not os.path.exists(data.uri + ".index-jobs")


def test_the_post_commit_check_catches_an_indexed_fragment_removed_before_the_commit(tmp_path):
    """A fragment the job encoded that is gone when the commit lands (a compaction racing the
    last check) is an error, not silently fewer rows."""
    from lance.lance import indices

    from spark_lance_index.commit import read_back_index
    from spark_lance_index.dataset import fragment_infos
    from spark_lance_index.errors import CommitCheckError

    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    ds = lance.dataset(data.uri)
    planned = fragment_infos(ds, "vector")
    centroids = indices.train_ivf_model(ds._ds, "vector", DIM, 4, "l2", 256, 10, None)
    segment = ds.create_index_uncommitted("vector", "IVF_FLAT", name="vector_idx", num_partitions=4,
                                          ivf_centroids=centroids, fragment_ids=[0, 1, 2, 3])
    ds = ds.commit_existing_index_segments("vector_idx", "vector", [segment])
    ds.delete("id >= 3000")  # the whole of fragment 3
    ds = lance.dataset(data.uri)
    with pytest.raises(CommitCheckError, match=r"fragments \[3\] it indexes were removed"):
        read_back_index(ds, "vector_idx", "IVF_FLAT", [str(segment.uuid)], planned)
