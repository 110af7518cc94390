"""Where users run it: a Databricks-style wheel task, and a Spark Connect session."""

import os
import re
import subprocess
import sys

import lance
import numpy as np
import pytest
from conftest import committed_uuids, write_vectors

from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.cluster


def clean_env():
    """A subprocess environment that does not leak this venv's executors into the other one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "VIRTUAL_ENV"))}
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1", "LANCE_LOG": "error"}


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory):
    """A fresh venv with only the built wheel and pyspark (which Databricks runtimes provide)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp / "dist"), ROOT],
                   check=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("spark_lance_index-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    python = str(tmp / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel), "pyspark==4.3.0"],
                   check=True, timeout=600)
    return python


def call_wheel_task(python, style, uri, *extra):
    env = {**clean_env(), "PYSPARK_PYTHON": python}
    proc = subprocess.run([python, os.path.join(HERE, "wheel_task.py"), style, uri, *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd="/")
    return proc, re.search(r"^EXIT (\S+)$", proc.stdout, re.M)


@pytest.mark.jvm  # starts Spark itself
def test_wheel_entry_point_called_like_a_databricks_wheel_task(wheel_python, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, 32, rows_per_fragment=1000)
    version = lance.dataset(data.uri).version

    proc, code = call_wheel_task(wheel_python, "parameters", data.uri)
    assert code and code.group(1) == "0", proc.stderr[-3000:]
    assert "SESSION alive" in proc.stdout  # the job used the runtime's session and left it running
    assert '"module": "spark_lance_index.cli"' in proc.stdout
    assert "site-packages" in subprocess.run(  # really the installed wheel, not this checkout
        [wheel_python, "-c", "import spark_lance_index; print(spark_lance_index.__file__)"],
        capture_output=True, text=True, cwd="/").stdout
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], len(stats["segments"])) == (8000, 1)

    proc, code = call_wheel_task(wheel_python, "named", data.uri, "index-type=IVF_PQ", "num-sub-vectors=8")
    assert code and code.group(1) == "0", proc.stderr[-3000:]
    ds = lance.dataset(data.uri)
    assert ds.version == version + 2
    assert ds.stats.index_stats("vector_idx")["index_type"] == "IVF_PQ"
    truth = exact_topk(data.vectors, data.queries, 10)
    assert recall_at_k(truth, ann_topk(ds, "vector", data.queries, 10, 4, 10)) > 0.8

    proc, code = call_wheel_task(wheel_python, "named", data.uri, "column=nope")
    assert code and code.group(1) == "2"  # a failed run fails the Databricks task
    assert "column 'nope' is not in the dataset" in proc.stderr
    assert lance.dataset(data.uri).version == version + 2

    # the bundle's update job: named parameters with command=update, after an append
    lance.write_dataset(lance.dataset(data.uri).to_table(columns=["id", "vector"], limit=2000), data.uri, mode="append")
    proc, code = call_wheel_task(wheel_python, "named", data.uri, "command=update")
    assert code and code.group(1) == "0", proc.stderr[-3000:]
    assert "update: 2,000 new rows in 1 fragment," in proc.stdout
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["index_type"], stats["num_unindexed_rows"], stats["num_indexed_rows"]) == ("IVF_PQ", 0, 10_000)


@pytest.mark.jvm  # starts Spark itself
def test_whole_job_on_a_spark_connect_session(tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, 32, rows_per_fragment=1000)
    np.save(data.uri + ".queries.npy", data.queries)
    env = {**clean_env(), "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "connect_job.py"), data.uri],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("CONNECT")
    assert "second level through Connect: 300 centroids, 300 distinct" in proc.stdout
    assert "4 tasks, 4 segments merged into 1" in proc.stdout
    # trained on the executors (k-means rounds through Connect), values too large for the plan
    # (lowered to 1 KiB here) read from the job directory, which is gone afterwards
    best, shared = re.search(r"best recall ([\d.]+); (\d+) values shared through files", proc.stdout).groups()
    assert float(best) >= 0.9 and int(shared) >= 10  # k-means rounds (one value each) vary with convergence
    assert not os.path.exists(data.uri + ".index-jobs")
    ds = lance.dataset(data.uri)
    stats = ds.stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], len(stats["segments"])) == (8000, 1)
    scalar = ds.stats.index_stats("id_idx")
    assert (scalar["index_type"], scalar["num_indexed_rows"]) == ("BTree", 8000)
    assert re.search(r"filter check: (\d+) of \1 filters on sampled values return through the index exactly", proc.stdout)
    # nothing but the two committed indexes' segments is left
    assert set(os.listdir(os.path.join(data.uri, "_indices"))) == committed_uuids(data.uri) | committed_uuids(data.uri, "id_idx")
    truth = exact_topk(data.vectors, data.queries, 10)
    for refine, label in ((None, "no refine"), (10, "refine_factor 10")):
        reported = float(re.search(rf"recall@10 ([0-9.]+) at nprobes 4, {label}", proc.stdout).group(1))
        independent = recall_at_k(truth, ann_topk(ds, "vector", data.queries, 10, 4, refine))
        assert abs(reported - independent) <= 0.01
    assert independent > 0.8


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """A Spark Connect server process on 127.0.0.1 (the kind a cluster runs): yields its sc:// URL."""
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("connect") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "connect_server.py"), str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
                            start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            log.seek(0)
            assert proc.poll() is None and time.time() < deadline, log.read()[-3000:]
            time.sleep(0.3)
    yield f"sc://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "spark_lance_index", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean_env(), **(env or {})})


@pytest.mark.jvm  # starts Spark itself
def test_the_cli_runs_through_spark_connect_by_spark_remote_and_by_master(tmp_path, connect_server):
    """Without --verbose: SPARK_REMOTE=sc://..., and --master sc://... ."""
    data = write_vectors(tmp_path / "ds", 8000, 32, rows_per_fragment=1000)
    by_env = cli("build", "--uri", data.uri, "--column", "vector", "--num-partitions", "8", "--rows-per-task",
                 "2000", env={"SPARK_REMOTE": connect_server})
    assert by_env.returncode == 0, by_env.stderr[-3000:]
    assert "committed on" in by_env.stdout and "Traceback" not in by_env.stderr
    by_master = cli("build", "--uri", data.uri, "--column", "id", "--index-type", "BTREE", "--master", connect_server)
    assert by_master.returncode == 0, by_master.stderr[-3000:]
    assert re.search(r"filter check: (\d+) of \1 filters", by_master.stdout)
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert stats["num_indexed_rows"] == 8000
    assert not os.path.exists(data.uri + ".index-jobs")


@pytest.mark.jvm  # starts Spark itself
def test_a_killed_connect_client_s_tasks_never_race_the_rerun(tmp_path, connect_server):
    """A Spark Connect client killed mid-build leaves its tasks running on the server. The
    rerun never races them: while they run it is told so; a task that starts after its driver
    is gone stops before writing; the rerun that goes through leaves only the committed segments."""
    import signal
    import time

    data = write_vectors(tmp_path / "ds", 40_000, 64, rows_per_fragment=1000)
    build = ["build", "--uri", data.uri, "--column", "vector", "--num-partitions", "32", "--rows-per-task", "1000",
             "--verify-queries", "0"]
    env = {**clean_env(), "SPARK_REMOTE": connect_server}
    proc = subprocess.Popen([sys.executable, "-m", "spark_lance_index", *build], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    root = data.uri + ".index-jobs"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        jobs = os.listdir(root) if os.path.isdir(root) else []
        segments = os.path.join(root, jobs[0], "segments") if jobs else ""
        if segments and os.path.isdir(segments) and len(os.listdir(segments)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before the client could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    busy = 0
    for _ in range(60):
        rerun = cli(*build, env={"SPARK_REMOTE": connect_server})
        if rerun.returncode == 0:
            break
        assert "Spark tasks still run" in rerun.stderr or "another run of this job is active" in rerun.stderr, \
            rerun.stderr[-3000:]
        busy += 1
        time.sleep(2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    print(f"the rerun was told to wait {busy} times")
    time.sleep(3)  # anything an orphan still wrote would be here now
    assert set(os.listdir(os.path.join(data.uri, "_indices"))) == committed_uuids(data.uri)
    assert not os.path.exists(root)
    assert lance.dataset(data.uri).stats.index_stats("vector_idx")["num_indexed_rows"] == 40_000
