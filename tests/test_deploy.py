"""Where users run it: a Databricks-style wheel task, and a Spark Connect session."""

import os
import re
import subprocess
import sys

import lance
import numpy as np
import pytest
from conftest import committed_uuids, write_vectors

from spark_lance_index.recall import ann_topk, exact_topk, recall_at_k

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
    assert "update: 2,000 new rows in 1 fragments" in proc.stdout
    stats = lance.dataset(data.uri).stats.index_stats("vector_idx")
    assert (stats["index_type"], stats["num_unindexed_rows"], stats["num_indexed_rows"]) == ("IVF_PQ", 0, 10_000)


def test_whole_job_on_a_spark_connect_session(tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, 32, rows_per_fragment=1000)
    np.save(data.uri + ".queries.npy", data.queries)
    env = {**clean_env(), "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "connect_job.py"), data.uri],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("CONNECT")
    assert "4 tasks, 4 segments merged into 1" in proc.stdout
    # trained on the executors (k-means rounds through Connect), values too large for the plan
    # (lowered to 1 KiB here) read from the job directory, which is gone afterwards
    best, shared = re.search(r"best recall ([\d.]+); (\d+) values shared through files", proc.stdout).groups()
    assert float(best) >= 0.9 and int(shared) >= 20
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
