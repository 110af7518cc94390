"""What a new user meets at the command line: each message a CLI run in a fresh process, one
line, the right exit code; and the advice a low recall figure gets."""

from __future__ import annotations

import os
import subprocess
import sys

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state, fsl, write_vectors

from spark_lance_index import __version__
from spark_lance_index.exact_search import RecallFigure
from spark_lance_index.recall_advice import is_low, what_limits_recall, wider_nprobes


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spark_lance_index", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and "Traceback" not in text, text[-2000:]
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    return write_vectors(tmp_path / "ds", 2000, 8, rows_per_fragment=1000).uri


def test_version_and_help():
    proc = cli("--version")
    assert proc.returncode == 0 and one_line(proc.stdout) == f"spark-lance-index {__version__}"
    proc = cli("--help")
    assert proc.returncode == 0 and "Build and keep current the indexes of a Lance dataset" in proc.stdout
    assert "status" in proc.stdout


def test_a_prefix_of_a_flag_is_not_taken_for_it(dataset):
    proc = cli("build", "--uri", dataset, "--colum", "vector")
    assert proc.returncode == 2
    assert "unrecognized arguments: --colum vector" in one_line(proc.stderr)


def test_an_invalid_choice_is_one_line(dataset):
    proc = cli("build", "--uri", dataset, "--column", "vector", "--index-type", "IVF_XX")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert "invalid choice: 'IVF_XX'" in line and "(see spark-lance-index build --help)" in line


def test_a_setting_of_the_wrong_type_in_a_file_is_one_line(dataset, tmp_path):
    conf = tmp_path / "job.toml"
    conf.write_text('num_partitions = "16"\n')
    before = dataset_state(dataset)
    proc = cli("build", "--uri", dataset, "--column", "vector", "--config", str(conf))
    assert proc.returncode == 2
    assert one_line(proc.stderr) == (f"spark-lance-index: error: num_partitions in {conf} must be an integer, "
                                     "got '16'")
    conf.write_text('nprobes = [4, "8"]\nreplace = "yes"\n')
    proc = cli("build", "--uri", dataset, "--column", "vector", "--config", str(conf))
    assert proc.returncode == 2 and "nprobes in" in one_line(proc.stderr)
    assert dataset_state(dataset) == before


def test_a_missing_dataset_names_the_path_as_given_without_lances_sources(tmp_path):
    missing = str(tmp_path / "nope.lance")
    proc = cli("build", "--uri", missing, "--column", "vector")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert f"cannot open a Lance dataset at {missing}: no dataset there" in line
    assert ".rs:" not in line and "runner" not in line and not os.path.exists(missing)
    proc = cli("status", "--uri", missing)
    assert proc.returncode == 2 and ".rs:" not in one_line(proc.stderr)


def test_update_without_a_column_takes_the_only_vector_index_or_asks(tmp_path):
    uri = str(tmp_path / "ds")
    rng = np.random.default_rng(0)
    table = pa.table({"a": fsl(rng.normal(size=(600, 8)).astype(np.float32)),
                      "b": fsl(rng.normal(size=(600, 8)).astype(np.float32))})
    ds = lance.write_dataset(table, uri)
    ds.create_index("a", "IVF_FLAT", num_partitions=2)
    ds.create_index("b", "IVF_FLAT", num_partitions=2)
    before = dataset_state(uri)
    proc = cli("update", "--uri", uri)
    assert proc.returncode == 2
    assert "has 2 vector indexes (a_idx on a, b_idx on b): give --column or --index-name" in one_line(proc.stderr)
    proc = cli("update", "--uri", uri, "--index-name", "c_idx")
    assert proc.returncode == 2 and "no index named 'c_idx'" in one_line(proc.stderr)
    assert dataset_state(uri) == before


def figures(*points):
    return [RecallFigure(n, r, recall, 100, 10) for n, r, recall in points]


def test_low_recall_advice_follows_the_measured_grid():
    # flat across nprobes: the encoding limits, so more partitions is not the advice
    flat = figures((20, None, 0.127), (20, 10, 0.331), (80, None, 0.130))
    assert is_low(flat) and wider_nprobes(flat[:2], 256) == 80
    text = what_limits_recall(flat, 256, "IVF_PQ")
    assert "flat from nprobes 20 to 80" in text and "more --num-sub-vectors" in text
    assert "refine_factor above 10" in text and "num-partitions" not in text and "larger nprobes" not in text
    # rising: probing limits
    rising = figures((20, None, 0.40), (80, None, 0.75))
    text = what_limits_recall(rising, 256, "IVF_RQ")
    assert "rises with nprobes" in text and "larger nprobes" in text and "num-bits" not in text
    # nprobes covers every partition already: never "more nprobes"
    covered = figures((20, None, 0.5), (20, 10, 0.9))
    assert wider_nprobes(covered, 16) is None
    text = what_limits_recall(covered, 16, "IVF_RQ")
    assert "already searches all 16 partitions" in text and "refine_factor 10 (0.900)" in text
    assert "more --num-bits" in text
    assert not is_low(figures((20, None, 0.85)))


def test_a_low_recall_build_says_so_with_advice_from_what_it_measured(spark, tmp_path):
    from spark_lance_index import pipeline
    from spark_lance_index.config import make_config

    rng = np.random.default_rng(3)
    uri = str(tmp_path / "ds")
    lance.write_dataset(pa.table({"vector": fsl(rng.random((4000, 32)).astype(np.float32))}), uri)
    config = make_config({}, dict(uri=uri, column="vector", index_type="IVF_PQ", num_partitions=64,
                                  num_sub_vectors=2, verify_queries=40))
    result = pipeline.run(config, spark)
    assert max(f.recall for f in result.recall) < 0.8  # measured against exact search
    summary = result.summary()
    assert "LOW RECALL:" in summary and "more --num-sub-vectors" in summary
    assert ("probing more partitions will not help" in summary or "already searches all 64" in summary), summary
    assert "num-partitions" not in result.recall_diagnosis
