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
    proc = cli()  # the program alone prints its help
    assert proc.returncode == 0 and "usage: spark-lance-index" in proc.stdout and "update" in proc.stdout
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


def test_update_without_a_column_updates_every_index_and_the_api_asks_which(tmp_path):
    """(With one vector index the API takes that one: tests/test_api.py; the update of several:
    tests/test_update_all.py.)"""
    uri = str(tmp_path / "ds")
    rng = np.random.default_rng(0)
    table = pa.table({"a": fsl(rng.normal(size=(600, 8)).astype(np.float32)),
                      "b": fsl(rng.normal(size=(600, 8)).astype(np.float32))})
    ds = lance.write_dataset(table, uri)
    ds.create_index("a", "IVF_FLAT", num_partitions=2)
    ds.create_index("b", "IVF_FLAT", num_partitions=2)
    before = dataset_state(uri)
    proc = cli("update", "--uri", uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 indexes, 2 up to date" in proc.stdout and "a_idx (IVF_FLAT on a): up to date" in proc.stdout
    import spark_lance_index as sli

    with pytest.raises(sli.InputError, match=r"has 2 vector indexes \(a_idx on a, b_idx on b\): give column= "
                                             r"or index_name=, or update them all with update_all"):
        sli.update(uri)
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


def test_the_advice_of_a_sweep_that_stopped_early_reads_its_last_step():
    from spark_lance_index.query_settings import QuerySetting, QuerySettings

    def row(*points):
        return tuple(QuerySetting(n, None, r, 1.0, 2.0) for n, r in points)

    # stopped at nprobes 32 of 4096 because the last steps gained nothing: flat, not "every partition"
    flat = QuerySettings(0.95, 10, 100, "here", row((1, 0.04), (8, 0.55), (16, 0.60), (32, 0.60)), None, 4096)
    text = flat.advice("IVF_PQ")
    assert "flat from nprobes 16 to 32" in text and "every partition" not in text and "larger nprobes" not in text
    # stopped by its time budget while still rising
    rising = QuerySettings(0.95, 10, 100, "here", row((1, 0.04), (8, 0.30), (16, 0.50)), None, 4096)
    assert "rises with nprobes (0.300 at 8, 0.500 at 16 of 4096 partitions)" in rising.advice("IVF_PQ")
    # a graph type: its own query knob, and no refine for a type that ranks exactly
    text = what_limits_recall(figures((20, None, 0.5)), 16, "IVF_HNSW_FLAT")
    assert "larger ef" in text and "refine" not in text and "--ef-construction" in text


def test_settings_a_command_does_not_take_are_refused_not_ignored(tmp_path, dataset):
    import spark_lance_index as sli

    before = dataset_state(dataset)
    with pytest.raises(sli.InputError, match="num_bits= does not apply to update: it extends the index with its own"):
        sli.update(dataset, "vector", num_bits=4)
    with pytest.raises(sli.InputError, match="segment_ratio= does not apply to build"):
        sli.build(dataset, "vector", segment_ratio=2)
    with pytest.raises(sli.InputError, match="--nprobes needs at least one value"):
        sli.build(dataset, "vector", nprobes=[])
    with pytest.raises(sli.InputError, match="--job-dir dbfs:/jobs: the job cannot write dbfs: paths: .*/Volumes/"):
        sli.build(dataset, "vector", job_dir="dbfs:/jobs")
    assert dataset_state(dataset) == before and not os.path.exists("dbfs:")


def test_a_dataset_version_flag_before_the_options_is_not_the_program_version(tmp_path):
    missing = str(tmp_path / "nope.lance")
    proc = cli("--version", "3", "--uri", missing, "--column", "vector")  # a scheduler's style: build implied
    assert proc.returncode == 2 and f"cannot open a Lance dataset at {missing}" in one_line(proc.stderr)


def test_an_s3_dataset_with_no_credentials_is_one_line_not_a_rust_dump(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no AWS_* variables, no ~/.aws
    proc = subprocess.run([sys.executable, "-m", "spark_lance_index", "status", "--uri", "s3://some-bucket/t.lance",
                           "--storage-option", "aws_region=eu-west-1"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert "no AWS credentials found: give --storage-option aws_access_key_id=" in line
    assert "ProviderError" not in line and ".rs:" not in line


def test_the_summary_says_what_happened_in_plain_words():
    from spark_lance_index.dataset import IndexParams
    from spark_lance_index.report import JobResult

    r = JobResult(job_id="j", uri="/d/t", index_name="v_idx", column="v", pinned_version=1, committed_version=2,
                  params=IndexParams("IVF_RQ", "l2", 16, 5, 0, 256), num_rows=4000, num_fragments=1, num_tasks=1,
                  num_segments=1, segments_built=1, segments_reused=0, segments_committed=1, leftovers_removed=4,
                  unindexed_rows=100, unindexed_fragments=1,
                  seconds={"train (background)": 0.5, "train": 0.0, "build tasks (sum)": 2.0,
                           "build tasks assigning (sum)": 1.0, "build": 1.2, "total": 6.0})
    text = r.summary()
    assert "rows indexed 4,000 in 1 fragment (pinned version 1); 1 task, 1 segment\n" in text
    assert "cleanup removed 4 segment directories of this job's that no version uses" in text
    assert "leftover" not in text and "1 tasks" not in text and "1 segments" not in text
    assert "not yet indexed: 100 rows in 1 fragment added" in text
    assert "time: train 0.0s (+0.5s on the driver while Spark started), build 1.2s, total 6.0s" in text
    assert "build tasks: 2.0s of task time in all, 1.0s (50%) of it assigning rows to partitions" in text
