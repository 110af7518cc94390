"""The Spark layer, kept thin: get a session, broadcast the artifacts, map groups, collect.

Everything Lance-specific lives in plain functions elsewhere; this module only moves their
inputs and outputs across the cluster. Two transports, same results:
- classic Spark (spark-submit, clusters, Databricks single-user): RDDs, a broadcast, accumulators;
- Spark Connect (Databricks serverless and standard access mode): no RDDs and no SparkContext,
  so `spark.range(0, n, 1, n)` makes one partition per task and `mapInArrow` runs it, with the
  work captured in the function's closure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from typing import Callable, Iterator, Optional, Sequence

from .build import SegmentResult, SegmentTask, run_task
from .errors import JobError
from .preflight import node_versions
from .commit import MergeTask, merge_segments
from .progress import DEFAULT_INTERVAL, Progress, Ticker
from .train import SharedArtifacts
from .verify import ExactSearchTask, TopK, exact_topk_of_fragments, merge_topk

log = logging.getLogger(__name__)

# Faster JVM start for short local runs (measured: ~10 s -> ~6 s on 2 cores).
_LOCAL_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def is_connect(spark) -> bool:
    """True for a Spark Connect session (no RDD API, no SparkContext).

    Told from the session's class, never by importing `pyspark.sql.connect`: that import
    calls sys.exit(0) when the Connect client's dependencies are missing and `__main__` has
    no `__file__` (`python -c`, some notebook and job runners), which ended the job as a
    silent success."""
    return any(c.__module__.startswith("pyspark.sql.connect") for c in type(spark).__mro__)


def find_java() -> tuple[Optional[str], str]:
    """(the java Spark would start, where it looked): $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        return (java if os.access(java, os.X_OK) else None), f"JAVA_HOME={home}"
    return shutil.which("java"), "PATH (JAVA_HOME is not set)"


def java_major(java: str) -> Optional[int]:
    """The major version `java -version` reports (8 for "1.8.0_x"), or None if unreadable."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def check_java() -> None:
    """Refuse in one line, before Spark tries, when there is no Java or one too old for this
    pyspark (4.x needs 17; 3.5 needs 8)."""
    import pyspark

    java, where = find_java()
    if java is None:
        raise JobError(f"Java was not found (looked in {where}): install Java 17 and put it on PATH "
                       "or set JAVA_HOME; Spark needs it to start")
    needed = 17 if int(pyspark.__version__.split(".")[0]) >= 4 else 8
    major = java_major(java)
    if major is not None and major < needed:
        raise JobError(f"{java} is Java {major}, and pyspark {pyspark.__version__} needs Java {needed} "
                       "or newer: install it and put it on PATH or set JAVA_HOME")


MASTER_ATTEMPTS = 3  # connection tries per standalone master, a second apart


def check_master(master: str) -> None:
    """For a standalone master (`spark://host:port[,host:port]`), refuse in one line when no
    master accepts a connection, instead of Spark's minute of retries and JVM stack traces."""
    import socket
    import time

    addresses = [a.strip() for a in master[len("spark://"):].split(",") if a.strip()]
    reasons = []
    for attempt in range(MASTER_ATTEMPTS):
        reasons = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host or address, int(port or 7077)), timeout=5).close()
                return
            except (OSError, ValueError) as e:
                reasons.append(f"{address}: {getattr(e, 'strerror', None) or e}")
        if attempt < MASTER_ATTEMPTS - 1:
            time.sleep(1)
    raise JobError(f"cannot reach the Spark master {master} ({'; '.join(reasons)}) after {MASTER_ATTEMPTS} "
                   "tries: check --master, and that the master is running and reachable from here")


def get_session(master: Optional[str], app_name: str, verbose: bool = False):
    """Return (session, created). An active session (Databricks, a notebook, a test) is
    reused and never stopped by the job; otherwise one is created and the caller stops it."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise JobError(
            "pyspark is not installed: install it with the spark extra (pip install "
            "'spark-lance-index[spark]'), or run the job inside a Spark environment "
            "(spark-submit, Databricks)"
        ) from None

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        # A Databricks job owns its session: take it, never configure or stop it.
        return SparkSession.builder.getOrCreate(), False
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):
        # Local executors must run this Python, the one that has lance and this package.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.driver.extraJavaOptions", _LOCAL_JAVA_OPTS)
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    # Lance's Rust log level on executors: quiet unless asked (one "partition N is empty"
    # warning per partition per task otherwise floods the executor logs).
    builder = builder.config("spark.executorEnv.LANCE_LOG", "info" if verbose else "error")
    if not (master or "").startswith("sc://") and not os.environ.get("SPARK_REMOTE"):
        check_java()  # a Connect client starts no JVM
    if (master or "").startswith("spark://"):
        check_master(master)
    try:
        spark = builder.getOrCreate()
    except Exception as e:
        if "JAVA_GATEWAY_EXITED" in str(e):
            raise JobError("Spark's Java process exited before it started (JAVA_GATEWAY_EXITED): "
                           "rerun with --verbose to see its output") from None
        raise
    if not verbose:
        spark.sparkContext.setLogLevel("WARN")
    return spark, True


@contextlib.contextmanager
def job_group(spark, group_id: str, description: str) -> Iterator[None]:
    """Label the Spark jobs of one phase so the Spark UI says what is running."""
    if is_connect(spark):  # Connect labels operations with tags instead of job groups
        spark.addTag(group_id)
        try:
            yield
        finally:
            spark.removeTag(group_id)
        return
    sc = spark.sparkContext
    sc.setJobGroup(group_id, description, interruptOnCancel=True)
    try:
        yield
    finally:
        sc.setJobGroup(None, None)  # type: ignore[arg-type]


def failure_reason(error: BaseException) -> str:
    """The Python exception behind a failed Spark stage, in one line (not the JVM's stack)."""
    text = str(error)
    causes = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit|Interrupt)): (.+)$", text, re.M)
    python = [c for c in causes if not c[0].startswith(("Py4J", "Spark", "Task"))]
    if python:
        name, message = python[-1]
        return f"{name}: {message.strip()[:300]}"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _conf(spark, key: str) -> Optional[str]:
    try:
        return spark.conf.get(key, None)
    except Exception:
        return None


def application_id(spark) -> Optional[str]:
    if is_connect(spark):
        return _conf(spark, "spark.app.id")
    return spark.sparkContext.applicationId


def master(spark) -> Optional[str]:
    if is_connect(spark):
        return _conf(spark, "spark.master")
    return spark.sparkContext.master


# Planning needs a core count; a Connect client cannot ask the cluster for one.
CONNECT_DEFAULT_PARALLELISM = 8


def default_parallelism(spark) -> int:
    if is_connect(spark):
        return int(_conf(spark, "spark.default.parallelism") or CONNECT_DEFAULT_PARALLELISM)
    return max(1, spark.sparkContext.defaultParallelism)


TaskFn = Callable[[SegmentTask, SharedArtifacts, object, int], SegmentResult]


@contextlib.contextmanager
def _progress(spark, label: str, total_tasks: int, total_rows: int, interval: float):
    """Accumulators (tasks, rows) that tasks add to when they finish, shown while Spark runs."""
    sc = spark.sparkContext
    tasks_done, rows_done = sc.accumulator(0), sc.accumulator(0)
    bar = Progress(label, total_tasks, total_rows, interval=interval)
    with Ticker(bar, lambda: (tasks_done.value, rows_done.value)):
        yield tasks_done, rows_done


def run_segment_builds(
    spark, tasks: Sequence[SegmentTask], artifacts: SharedArtifacts, state,
    task_fn: TaskFn = run_task, progress_interval: float = DEFAULT_INTERVAL,
) -> list[SegmentResult]:
    """Broadcast the artifacts once, build one segment per task, collect the results.

    `task_fn(task, artifacts, state, attempt)` runs on the executors; Spark's own attempt
    number tells a retried or speculative attempt apart.
    """
    total_rows = sum(t.group.num_rows for t in tasks)
    if is_connect(spark):
        rows_of = {t.group.group_id: t.group.num_rows for t in tasks}
        already = set(state.files.list("segments"))

        def finished() -> tuple[int, int]:  # executors write one file per finished segment
            new = [n for n in state.files.list("segments") if n not in already]
            return len(new), sum(rows_of.get(int(n.split(".")[0]), 0) for n in new)

        bar = Progress("build segments", len(tasks), total_rows, interval=progress_interval)
        with Ticker(bar, finished, every=2.0):
            return [r for _, r in _connect_map(
                spark, tasks, lambda t, attempt: task_fn(t, artifacts, state, attempt))]
    sc = spark.sparkContext
    artifacts_bc = sc.broadcast(artifacts)
    with _progress(spark, "build segments", len(tasks), total_rows, progress_interval) as (done, rows):

        def one(task: SegmentTask) -> SegmentResult:
            from pyspark import TaskContext

            ctx = TaskContext.get()
            result = task_fn(task, artifacts_bc.value, state, ctx.attemptNumber() if ctx else 0)
            done.add(1)
            rows.add(task.group.num_rows)
            return result

        try:
            rdd = sc.parallelize(list(tasks), numSlices=max(1, len(tasks)))
            return rdd.map(one).collect()
        finally:
            artifacts_bc.unpersist()


def map_reduce(spark, tasks: Sequence, fn: Callable[[object, object], object], combine: Callable,
               shared: object, label: str, progress_interval: float = DEFAULT_INTERVAL):
    """fn(task, shared) for each task (each has `num_rows`), one Spark task each, the results
    combined pairwise with `combine`: on classic Spark by treeReduce with `shared` broadcast, through
    Connect on arrival with `shared` in the closure. The driver holds two results at most."""
    total_rows = sum(t.num_rows for t in tasks)
    if is_connect(spark):
        bar = Progress(label, len(tasks), total_rows, interval=progress_interval)
        out, done, rows = None, 0, 0
        for i, partial in _connect_map(spark, tasks, lambda t, attempt: fn(t, shared)):
            out = partial if out is None else combine(out, partial)
            done, rows = done + 1, rows + tasks[i].num_rows
            bar.update(done, rows)
        bar.update(done, rows, final=True)
        return out
    sc = spark.sparkContext
    shared_bc = sc.broadcast(shared)
    with _progress(spark, label, len(tasks), total_rows, progress_interval) as (done, rows):

        def one(task):
            out = fn(task, shared_bc.value)
            done.add(1)
            rows.add(task.num_rows)
            return out

        try:
            rdd = sc.parallelize(list(tasks), numSlices=max(1, len(tasks)))
            return rdd.map(one).treeReduce(combine)
        finally:
            shared_bc.unpersist()


def run_exact_search(
    spark, tasks: Sequence[ExactSearchTask], queries, progress_interval: float = DEFAULT_INTERVAL
) -> TopK:
    """Exact top-k of `queries` over all tasks' fragments, merged pairwise on the way back."""
    return map_reduce(spark, tasks, exact_topk_of_fragments, merge_topk, queries, "exact search", progress_interval)


def run_preflight(spark) -> list:
    """NodeVersions from one tiny task per executor slot (deduplicated by process)."""
    slots = default_parallelism(spark)
    if is_connect(spark):
        found = [v for _, v in _connect_map(spark, list(range(slots)), lambda i, attempt: node_versions())]
    else:
        found = spark.sparkContext.parallelize(range(slots), slots).map(node_versions).collect()
    return list({v.host: v for v in found}.values())


def run_merges(spark, tasks: Sequence[MergeTask], state) -> list:
    """Merge each batch of segments on an executor; returns the merged segments in task order."""
    if is_connect(spark):
        merged = dict(_connect_map(spark, tasks, lambda t, attempt: merge_segments(t, state)))
        return [merged[i] for i in range(len(tasks))]
    rdd = spark.sparkContext.parallelize(list(tasks), numSlices=max(1, len(tasks)))
    return rdd.map(lambda t: merge_segments(t, state)).collect()


def _connect_map(spark, items: Sequence, fn: Callable[[object, int], object]) -> Iterator:
    """fn(item, attempt) for each item, one Spark task each, through DataFrames only.

    Yields (item index, result) as results arrive. The items and `fn` travel in the closure of the
    mapInArrow function (Spark Connect's plan limit is 128 MiB by default: the artifacts are
    megabytes); each result comes back pickled in a binary column.
    """
    import pickle

    items = list(items)

    def run_partition(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        attempt = ctx.attemptNumber() if ctx is not None else 0
        for batch in batches:
            for i in batch.column(0).to_pylist():
                out = pickle.dumps(fn(items[i], attempt))
                yield pa.RecordBatch.from_pydict({"i": [i], "result": [out]})

    frame = spark.range(0, len(items), 1, len(items)).mapInArrow(run_partition, "i long, result binary")
    for row in frame.toLocalIterator():
        yield row["i"], pickle.loads(row["result"])
