"""A new user's first minutes: a missing pyspark or Java is one line, before anything is written.

Each case runs the real CLI in a fresh process (the suite's own Spark session is elsewhere)."""

import os
import subprocess
import sys

import pytest
from conftest import dataset_state, write_vectors


def run_cli(uri, env=None, prelude=""):
    code = (f"import sys; {prelude}from spark_lance_index.cli import main; "
            f"sys.exit(main(['build', '--uri', {uri!r}, '--column', 'vector', '--master', 'local[1]']))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    return write_vectors(tmp_path / "ds", 2000, 16, rows_per_fragment=1000).uri


def fake_java(tmp_path, version):
    home = tmp_path / "old-jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2021-01-19' >&2\n")
    java.chmod(0o755)
    return str(home)


@pytest.mark.parametrize("case", ["no pyspark", "no java", "java too old"])
def test_missing_pyspark_or_java_is_one_line_and_writes_nothing(dataset, tmp_path, case):
    before = dataset_state(dataset)
    if case == "no pyspark":  # as after `pip install spark-lance-index` without the spark extra
        proc = run_cli(dataset, prelude="sys.modules['pyspark'] = None; ")
        expected = "spark-lance-index: error: pyspark is not installed: install it with the spark extra"
    elif case == "no java":
        proc = run_cli(dataset, env={"JAVA_HOME": str(tmp_path / "no-jdk")})
        expected = f"spark-lance-index: error: Java was not found (looked in JAVA_HOME={tmp_path / 'no-jdk'})"
    else:
        proc = run_cli(dataset, env={"JAVA_HOME": fake_java(tmp_path, "11.0.2")})
        expected = "spark-lance-index: error: "
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert line.startswith(expected), line
    if case == "java too old":
        assert "is Java 11, and pyspark 4.3.0 needs Java 17 or newer" in line
    assert dataset_state(dataset) == before
    assert not os.path.exists(dataset + ".index-jobs")


@pytest.mark.jvm  # starts Spark itself
def test_an_unreachable_master_is_one_line_and_writes_nothing(dataset):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before, start = dataset_state(dataset), time.monotonic()
    code = (f"import sys; from spark_lance_index.cli import main; sys.exit(main(['build', '--uri', {dataset!r}, "
            f"'--column', 'vector', '--master', 'spark://127.0.0.1:{port}']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert line.startswith(f"spark-lance-index: error: cannot reach the Spark master spark://127.0.0.1:{port}"), line
    assert "Connection refused" in line
    assert time.monotonic() - start < 30
    assert dataset_state(dataset) == before and not os.path.exists(dataset + ".index-jobs")


def executor_python(tmp_path, lance_init: str) -> str:
    """A PYSPARK_PYTHON for the executors only: this venv's Python, with a `lance` package of
    our own first on its path (another version, or one that cannot be imported)."""
    fake = tmp_path / "executor-site" / "lance"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(lance_init)
    wrapper = tmp_path / "executor-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={fake.parent}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize("case, lance_init, message", [
    ("executor without lance", "raise ImportError(\"No module named 'lance'\")\n",
     r"executor \S+ cannot import pylance \(the driver has 14\.0\.2\): install pylance==14\.0\.2 on every node"),
    ("executor with another pylance", "__version__ = '13.0.1'\n",
     r"executor \S+ has pylance 13\.0\.1 and the driver 14\.0\.2: segments built by two engine versions"),
])
@pytest.mark.jvm  # starts Spark itself
def test_executors_with_other_libraries_stop_the_job_before_training(dataset, tmp_path, case, lance_init, message):
    import re

    before = dataset_state(dataset)
    proc = run_cli(dataset, env={"PYSPARK_PYTHON": executor_python(tmp_path, lance_init)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("spark-lance-index: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(message, lines[0]), lines[0]
    assert "train: started" not in proc.stderr  # stopped before training
    assert dataset_state(dataset) == before and not os.path.exists(dataset + ".index-jobs")


def test_doctor_all_green_then_one_failure(spark, dataset, tmp_path, capsys):
    from spark_lance_index.cli import main

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "keep.txt").write_text("the user's")
    code = main(["doctor", "--uri", dataset, "--job-dir", str(jobs), "--master", "local[1]"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert [line.split(":")[0] for line in out] == [  # what needs no Spark first
        "ok   dataset readable", "ok   job directory writable",
        "ok   pyspark", "ok   java", "ok   spark master", "ok   executors' libraries"]
    assert "2,000 rows" in out[0] and "pylance 14.0.2" in out[5]
    assert sorted(os.listdir(jobs)) == ["keep.txt"]  # the probe is gone, the user's file is not

    before = dataset_state(dataset)
    code = main(["doctor", "--uri", str(tmp_path / "missing"), "--master", "local[1]"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    failed = [line for line in out if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL dataset readable: cannot open a Lance dataset"), out
    assert dataset_state(dataset) == before
    assert sorted(os.listdir(tmp_path)) == sorted(["ds", "jobs"])  # the probe's folder went with it
