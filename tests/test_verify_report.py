"""Recall check, progress, logs and the JSON report."""

import io
import json
import logging
import os
import subprocess
import sys

import faults
import jsonschema
import lance
import numpy as np
import pytest
from conftest import write_vectors

from spark_lance_index import pipeline
from spark_lance_index.cli import main
from spark_lance_index.config import make_config
from spark_lance_index.exact_search import ExactSearchTask, exact_topk_of_fragments, merge_topk, sample_queries
from spark_lance_index.progress import Progress
from spark_lance_index.report import report_schema
from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

DIM = 32


@pytest.fixture(autouse=True, scope="module")
def _ship_faults():
    faults.ship()


def numpy_recall(data, uri, queries, nprobes, refine, k=10):
    """Independent: brute force in numpy over the vectors, the index queried by id."""
    truth = exact_topk(data.vectors, queries, k)
    return recall_at_k(truth, ann_topk(lance.dataset(uri), "vector", queries, k, nprobes, refine))


def test_reported_recall_agrees_with_numpy(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 12_000, DIM, rows_per_fragment=1500)
    np.save(tmp_path / "q.npy", data.queries)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 32, "rows_per_task": 3000,
                              "query_file": str(tmp_path / "q.npy"), "nprobes": (1, 8), "refine_factor": (0, 10)})
    result = pipeline.run(config, spark=spark)
    assert len(result.recall) == 4
    for f in result.recall:
        expected = numpy_recall(data, data.uri, data.queries, f.nprobes, f.refine_factor)
        print(f"nprobes {f.nprobes} refine {f.refine_factor}: job {f.recall:.3f} numpy {expected:.3f}")
        assert abs(f.recall - expected) <= 0.01
        assert f.queries == 100 and f.k == 10
    assert {f.recall for f in result.recall} != {1.0}  # the settings really differ


def test_sampled_queries_verify_command(spark, tmp_path, capsys):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    lance.dataset(data.uri).create_index("vector", "IVF_PQ", num_partitions=16, num_sub_vectors=8)
    report = tmp_path / "verify.json"
    code = main(["verify", "--uri", data.uri, "--column", "vector", "--verify-queries", "40",
                 "--nprobes", "4", "--refine-factor", "10", "--target-recall", "0.9", "--report", str(report)])
    assert code == 0
    out = capsys.readouterr().out
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, report_schema())
    (figure,) = doc["recall"]
    # the same 40 queries, independently, each query's own row not counted on either side
    ds = lance.dataset(data.uri)
    queries, own = sample_queries(ds, "vector", 40)
    rows = ds.to_table(columns=["id"], with_row_id=True)
    own_ids = dict(zip(rows.column("_rowid").to_pylist(), rows.column("id").to_pylist()))
    hits = 0
    for q, me in zip(queries, (own_ids[r] for r in own.tolist())):
        distance = ((data.vectors - q) ** 2).sum(1)
        distance[me] = np.inf
        exact = set(np.argsort(distance)[:10].tolist())
        found = ds.to_table(nearest={"column": "vector", "q": q, "k": 11, "nprobes": 4, "refine_factor": 10},
                            columns=["id"]).column("id").to_pylist()
        hits += len(exact & set([i for i in found if i != me][:10]))
    assert abs(figure["recall"] - hits / 400) <= 0.01
    assert f"recall@10 {figure['recall']:.3f} at nprobes 4, refine_factor 10" in out
    assert doc["index"]["type"] == "IVF_PQ" and doc["outcome"] == "succeeded"
    swept = doc["query_settings"]  # --target-recall on verify: the same queries, the same truth
    assert swept["target"] == 0.9 and swept["queries"] == 40 and swept["grid"]
    assert (swept["recommended"] is None) == ("NO SETTING REACHES" in out)


def test_exact_search_partials_merge_to_the_global_top_k(tmp_path):
    data = write_vectors(tmp_path / "ds", 5000, DIM, rows_per_fragment=700)
    ds = lance.dataset(data.uri)
    queries = data.queries[:20]
    frags = [f.fragment_id for f in ds.get_fragments()]
    partials = [exact_topk_of_fragments(ExactSearchTask(data.uri, ds.version, "vector", "l2", (f,), 10, 0), queries)
                for f in frags]
    merged = partials[0]
    for p in partials[1:]:
        merged = merge_topk(merged, p)
    ids = ds.to_table(columns=["id"], with_row_id=True)
    id_of = dict(zip(ids.column("_rowid").to_pylist(), ids.column("id").to_pylist()))
    got = np.vectorize(id_of.get)(merged.ids)
    assert (np.sort(got, 1) == np.sort(exact_topk(data.vectors, queries, 10), 1)).all()


def test_min_recall_fails_after_commit_with_advice(spark, tmp_path, capsys):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    version = lance.dataset(data.uri).version
    report = tmp_path / "r.json"
    code = main(["build", "--uri", data.uri, "--column", "vector", "--num-partitions", "16",
                 "--rows-per-task", "2000", "--nprobes", "1", "--min-recall", "0.99",
                 "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 3
    error = captured.err.strip().splitlines()[-1]
    # the advice is read off what was measured: at nprobes 1 of 16, probing is the limit
    assert "is below --min-recall 0.99: recall rises with nprobes" in error
    assert "query with a larger nprobes" in error and "num-partitions" not in error
    ds = lance.dataset(data.uri)  # the index stays committed
    assert ds.version == version + 1 and ds.stats.index_stats("vector_idx")["num_indexed_rows"] == 8000
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["outcome"] == "recall_below_minimum" and doc["recall"][0]["recall"] < 0.99
    assert "RECALL BELOW --min-recall 0.99" in captured.out


def test_report_of_a_successful_build_validates_and_matches(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    report = tmp_path / "out" / "report.json"
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 16, "rows_per_task": 2000,
                              "verify_queries": 20, "report": str(report),
                              "storage_options": {"aws_secret_access_key": "do-not-print-me"}})
    result = pipeline.run(config, spark=spark)
    text = report.read_text()
    assert "do-not-print-me" not in text
    doc = json.loads(text)
    jsonschema.validate(doc, report_schema())
    assert doc["outcome"] == "succeeded" and doc["error"] is None
    assert doc["dataset"] == {"uri": data.uri, "pinned_version": 8, "committed_version": 9}
    assert doc["counts"]["rows_indexed"] == 8000 and doc["counts"]["segments"] == 4
    assert doc["artifacts"]["rotation"] == result.fingerprints["rotation"]
    assert doc["spark"]["application_id"] == spark.sparkContext.applicationId
    assert set(doc["timings_seconds"]) >= {"inspect", "train", "build", "commit", "recall", "total"}
    assert doc["settings"]["storage_options"] == ["aws_secret_access_key"]
    assert result.summary().splitlines()[0].startswith("index 'vector_idx' (IVF_RQ, l2, 16 partitions, 5 bit)")


def test_report_of_refused_input_validates(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main(["build", "--uri", str(tmp_path / "missing"), "--column", "v", "--report", str(report)])
    assert code == 2
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["outcome"] == "refused" and "cannot open a Lance dataset" in doc["error"]


def test_phases_run_under_named_spark_job_groups(spark, tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, DIM, rows_per_fragment=1000)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8,
                              "rows_per_task": 2000, "verify_queries": 10})
    result = pipeline.run(config, spark=spark)
    tracker = spark.sparkContext.statusTracker()
    assert tracker.getJobIdsForGroup(f"spark-lance-index-{result.job_id}-build")
    assert tracker.getJobIdsForGroup(f"spark-lance-index-recall-{result.committed_version}")


def test_progress_lines_while_segments_build(spark, tmp_path, caplog):
    data = write_vectors(tmp_path / "ds", 8000, DIM, rows_per_fragment=1000)
    config = make_config({}, {"uri": data.uri, "column": "vector", "num_partitions": 8, "rows_per_task": 1000,
                              "verify_queries": 0, "progress_interval": 0.4})
    with caplog.at_level(logging.INFO, logger="spark_lance_index"):
        pipeline.run(config, spark=spark, task_fn=faults.slow(1.0))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("build segments:")]
    assert lines[-1].startswith("build segments: 8/8 tasks, 8.0k/8.0k rows")
    assert any(" 0/8 " not in line and "8/8" not in line for line in lines), lines  # seen mid-way
    assert all("rows/s" in line for line in lines)


def test_progress_bar_in_a_terminal_and_plain_lines_elsewhere(caplog):
    out = io.StringIO()
    bar = Progress("build segments", 4, 4000, stream=out, tty=True)
    bar.update(1, 1000)
    bar.update(4, 4000, final=True)
    assert out.getvalue().startswith("\r[######..................] build segments: 1/4 tasks, 1.0k/4.0k rows")
    assert "ETA" in out.getvalue() and out.getvalue().endswith("\n")
    plain = Progress("exact search", 10, 0, stream=io.StringIO(), tty=False, interval=3600)
    with caplog.at_level(logging.INFO, logger="spark_lance_index"):
        for i in range(10):
            plain.update(i, 0)
        plain.update(10, 0, final=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[-1].startswith("exact search: 10/10 tasks")  # bounded rate


@pytest.mark.jvm  # starts Spark itself
def test_lance_warnings_are_quiet_unless_verbose(tmp_path):
    outputs = {}
    for verbose in (False, True):
        data = write_vectors(tmp_path / f"ds{verbose}", 4000, 16, rows_per_fragment=500)
        cmd = [sys.executable, "-m", "spark_lance_index", "build", "--uri", data.uri, "--column", "vector",
               "--num-partitions", "200", "--rows-per-task", "1000", "--master", "local[2]",
               "--verify-queries", "0"] + (["--verbose"] if verbose else [])
        env = {k: v for k, v in os.environ.items() if k != "LANCE_LOG"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[verbose] = proc.stderr
    assert "is empty" not in outputs[False]
    assert "is empty" in outputs[True]


def test_queries_drawn_from_some_fragments_are_live_rows_of_those_fragments(tmp_path):
    """The update's recall check splits its queries by origin (new fragments, older ones), for
    vector and multivector columns: each drawn row is a live row of the fragments asked for."""
    from conftest import write_multivectors

    from spark_lance_index.exact_search import sample_multivector_queries

    data = write_vectors(tmp_path / "ds", 6000, DIM, rows_per_fragment=1000)
    multi = write_multivectors(tmp_path / "mv", 3000, DIM, rows_per_fragment=500)
    for uri, column, sample in ((data.uri, "vector", sample_queries), (multi.uri, "mv", sample_multivector_queries)):
        ds = lance.dataset(uri)
        ds.delete("id % 3 = 0")
        ds = lance.dataset(uri)
        live = {r: i for r, i in zip(*(ds.to_table(columns=["id"], with_row_id=True).column(c).to_pylist()
                                        for c in ("_rowid", "id")))}
        wanted = {1, 4}
        queries, own = sample(ds, column, 40, fragment_ids=wanted)
        assert len(own) == len(queries) == 40, uri
        assert {r >> 32 for r in own.tolist()} <= wanted and all(r in live for r in own.tolist()), uri
        assert all(live[r] % 3 for r in own.tolist())  # no deleted row
        vectors = ds.to_table(columns=[column], with_row_id=True)
        by_row = dict(zip(vectors.column("_rowid").to_pylist(), vectors.column(column).to_pylist()))
        for q, r in zip(queries, own.tolist()):  # each query is its row's vector(s)
            assert np.allclose(np.asarray(by_row[r], dtype=np.float32), q), (uri, r)
