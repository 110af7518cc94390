"""Failures injected into real Spark tasks: each wraps the job's own `run_task`.

The functions are pickled by value (see `ship`) so executors run them without this file.
Run as a script, it builds an index on a local-cluster whose executor is killed mid-task.
"""

from __future__ import annotations

import os
import signal
import sys

from spark_lance_index.segment_build import run_task


def ship():
    """Let Spark's cloudpickle send this module's functions to executors by value."""
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fail_first_attempt(group_id: int):
    """Group `group_id` builds its whole segment on attempt 0, then fails: Spark retries."""

    def task_fn(task, artifacts, state, attempt):
        result = run_task(task, artifacts, state, attempt)
        if task.group.group_id == group_id and attempt == 0:
            raise RuntimeError(f"injected failure after building group {group_id}")
        return result

    return task_fn


def slow(seconds: float):
    """Every task sleeps first: long enough to watch progress."""

    def task_fn(task, artifacts, state, attempt):
        import time

        time.sleep(seconds)
        return run_task(task, artifacts, state, attempt)

    return task_fn


def always_fail(group_id: int, delay: float = 0.0):
    """Group `group_id` fails on every attempt (after `delay` seconds): more than Spark retries."""

    def task_fn(task, artifacts, state, attempt):
        if task.group.group_id == group_id:
            import time

            time.sleep(delay)
            raise ValueError(f"disk full while building group {group_id}")
        return run_task(task, artifacts, state, attempt)

    return task_fn


def _executor_jvm_pid() -> int:
    """The python worker's parent is the PySpark daemon; the daemon's parent is the JVM."""
    daemon = os.getppid()
    with open(f"/proc/{daemon}/stat") as f:
        jvm = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{jvm}/cmdline", "rb") as f:
        assert b"java" in f.read(), "executor JVM not found"
    return jvm


def kill_executor_mid_task(group_id: int):
    """Group `group_id`, attempt 0: mark its directory, then SIGKILL its own executor."""

    def task_fn(task, artifacts, state, attempt):
        if task.group.group_id == group_id and attempt == 0:
            from spark_lance_index.segment_build import segment_uuid

            state.mark_attempt(segment_uuid(task.job_id, task.group, attempt, artifacts.describe()), task.version)
            os.kill(_executor_jvm_pid(), signal.SIGKILL)
        return run_task(task, artifacts, state, attempt)

    return task_fn


def change_dataset_during_build(group_id: int, change: str):
    """Group `group_id` changes the dataset (as another writer would), then builds as usual."""

    def task_fn(task, artifacts, state, attempt):
        if task.group.group_id == group_id and attempt == 0:
            apply_change(task.uri, change)
        return run_task(task, artifacts, state, attempt)

    return task_fn


def apply_change(uri: str, change: str) -> None:
    import lance
    import numpy as np
    import pyarrow as pa

    ds = lance.dataset(uri)
    if change == "append":
        dim = ds.schema.field("vector").type.list_size
        rows = np.random.default_rng(5).standard_normal((100, dim)).astype(np.float32)
        table = pa.table({"id": np.arange(10**6, 10**6 + 100),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), dim)})
        lance.write_dataset(table, uri, mode="append")
    elif change == "compact":
        ds.optimize.compact_files(target_rows_per_fragment=10**6)
    elif change == "overwrite":
        lance.write_dataset(ds.to_table(), uri, mode="overwrite", max_rows_per_file=1000)
    elif change == "delete_fragment":
        first = ds.get_fragments()[0]
        ids = first.to_table(columns=["id"]).column("id").to_numpy()
        ds.delete(f"id >= {ids.min()} AND id <= {ids.max()}")
    elif change == "same_index":
        ds.create_index("vector", "IVF_FLAT", name="vector_idx", num_partitions=2, replace=True)
    elif change == "other_vector_index":
        ds.create_index("vector", "IVF_PQ", name="other_idx", metric="dot", num_partitions=2, num_sub_vectors=4)
    elif change == "delete_rows":  # some rows of the first two fragments, not whole fragments
        ds.delete("id % 500 = 7 AND id < 2000")
    elif change == "add_columns":  # a new data file in every fragment, the same rows
        ds.add_columns({"id2": "id * 2"})
    else:
        raise ValueError(change)


def kill_driver_after_segments(cmd, job_root: str, segments: int = 3, timeout: float = 120) -> str:
    """Run the job command `cmd` in its own session and SIGKILL the driver, its JVM and its
    workers once `segments` segments are saved in its job directory. -> that segments folder."""
    import os
    import signal
    import subprocess
    import time

    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, segments_dir = time.time() + timeout, None
    while time.time() < deadline and driver.poll() is None:
        jobs = os.listdir(job_root) if os.path.isdir(job_root) else []
        if jobs:
            segments_dir = os.path.join(job_root, jobs[0], "segments")
            if os.path.isdir(segments_dir) and len(os.listdir(segments_dir)) >= segments:
                break
        time.sleep(0.05)
    assert driver.poll() is None, "the job finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    return segments_dir


def die_after_commit(monkeypatch, pipeline, run) -> None:
    """Call `run()` with the driver dying right after the commit (in cleanup)."""
    import pytest

    def driver_dies(*args, **kwargs):
        raise SystemError("the driver died after the commit")

    with monkeypatch.context() as m:
        m.setattr(pipeline, "cleanup", driver_dies)
        with pytest.raises(SystemError):
            run()


if __name__ == "__main__":
    # python faults.py URI: build on local-cluster[2,1,1024], killing an executor mid-task.
    from pyspark.sql import SparkSession

    from spark_lance_index.config import make_config
    from spark_lance_index.pipeline import run

    ship()
    spark = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .config("spark.executor.memory", "512m")
        .config("spark.ui.enabled", "false")
        .config("spark.task.maxFailures", "4")
        .getOrCreate()
    )
    config = make_config({}, {"uri": sys.argv[1], "column": "vector", "num_partitions": 16,
                              "rows_per_task": 2000})
    result = run(config, spark=spark, task_fn=kill_executor_mid_task(1))
    print(result.summary())
    spark.stop()
