"""spark-submit for real: a standalone master and worker on 127.0.0.1, then jobs/build_index.py."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import lance
import numpy as np
import pyarrow as pa
import pyspark
import pytest
from conftest import fsl, write_vectors

from spark_lance_index.demo import clustered_vectors
from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK_BIN = os.path.join(os.path.dirname(pyspark.__file__), "bin")

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_env(tmp_path):
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOG_DIR=str(tmp_path / "logs"),
        SPARK_WORKER_DIR=str(tmp_path / "work"), SPARK_DAEMON_MEMORY="512m",
    )
    return env


def alive_workers(webui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture
def standalone_cluster(tmp_path):
    """Start a master and one worker as plain processes; stop both by PID afterwards."""
    env = spark_env(tmp_path)
    port, master_ui, worker_ui = free_port(), free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = os.path.join(SPARK_BIN, "spark-class")
    logs = open(tmp_path / "cluster.log", "wb")
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(master_ui)],
        env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
    )
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
         "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui),
         "--work-dir", str(tmp_path / "work")],
        env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while alive_workers(master_ui) < 1:
            assert master.poll() is None and worker.poll() is None, (tmp_path / "cluster.log").read_text()
            assert time.time() < deadline, "worker did not register with the master in 90 s"
            time.sleep(0.5)
        yield url, env
    finally:
        for proc in (worker, master):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (worker, master):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        logs.close()


def package_zip(tmp_path) -> str:
    """The package as a --py-files zip, the way a user ships it to executors."""
    path = str(tmp_path / "spark_lance_index.zip")
    with zipfile.ZipFile(path, "w") as z:
        for folder, _, files in os.walk(os.path.join(ROOT, "spark_lance_index")):
            for name in files:
                if name.endswith(".py"):
                    full = os.path.join(folder, name)
                    z.write(full, os.path.relpath(full, ROOT))
    return path


@pytest.mark.jvm  # starts Spark itself
def test_spark_submit_to_a_standalone_cluster(standalone_cluster, tmp_path):
    url, env = standalone_cluster
    data = write_vectors(tmp_path / "ds", 12_000, 32, rows_per_fragment=1500)
    cmd = [
        os.path.join(SPARK_BIN, "spark-submit"), "--master", url,
        "--conf", "spark.executor.memory=1g", "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.cores=2",
        "--py-files", package_zip(tmp_path),
        os.path.join(ROOT, "jobs", "build_index.py"),
        "--uri", data.uri, "--column", "vector", "--num-partitions", "16", "--rows-per-task", "3000",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "committed on" in proc.stdout and "4 tasks, 4 segments merged into 1" in proc.stdout
    # the session the job created got what its tasks need, where spark-submit left it unset:
    # Lance's threads per task slot (a standalone worker enforces no memory overhead: none set)
    logged = proc.stdout + proc.stderr  # spark-submit sends the driver's stderr to stdout
    assert "setting spark.executorEnv.LANCE_CPU_THREADS=1" in logged
    assert "memoryOverhead" not in logged
    assert " INFO SparkContext: " in logged  # Spark's start-up lines, without conf/log4j2.properties

    ds = lance.dataset(data.uri)
    stats = ds.stats.index_stats("vector_idx")
    assert (stats["index_type"], stats["num_indexed_rows"], len(stats["segments"])) == ("IVF_RQ", 12_000, 1)
    truth = exact_topk(data.vectors, data.queries, 10)
    assert recall_at_k(truth, ann_topk(ds, "vector", data.queries, 10, 4, 10)) > 0.8
    # the executors really were the standalone worker's, not an in-process local master
    app_dirs = os.listdir(tmp_path / "work")
    assert any(d.startswith("app-") for d in app_dirs), app_dirs

    # the same entry point keeps the index current: rows appended, then `update`
    more = clustered_vectors(3000, 32, seed=0)
    lance.write_dataset(pa.table({"id": pa.array(np.arange(12_000, 15_000)), "vector": fsl(more)}), data.uri,
                        mode="append", max_rows_per_file=1500)
    update = [*cmd[:cmd.index("--master")], "--conf", "spark.executorEnv.LANCE_CPU_THREADS=2",
              "--conf", f"spark.driver.extraJavaOptions=-Dlog4j2.configurationFile={ROOT}/conf/log4j2.properties",
              *cmd[cmd.index("--master"):cmd.index("--uri")],
              "update", "--uri", data.uri, "--column", "vector", "--rows-per-task", "3000"]
    proc = subprocess.run(update, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "setting spark.executorEnv.LANCE_CPU_THREADS" not in proc.stdout + proc.stderr  # the user's is kept
    assert " INFO " not in "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                                   if "spark-lance-index" not in line)  # the README's log4j2 recipe
    assert "update: 3,000 new rows in 2 fragments" in proc.stdout
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (15_000, 0)
