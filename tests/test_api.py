"""The Python API (`import spark_lance_index as sli`) as a notebook meets it: a fresh Python
process with a session it created itself, and `status` against Lance's own statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state, fsl, write_vectors

NOTEBOOK = textwrap.dedent("""
    import json, os, sys
    import lance, numpy as np, pyarrow as pa
    from pyspark.sql import SparkSession
    import spark_lance_index as sli

    uri, report, more = sys.argv[1], sys.argv[2], sys.argv[3]
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    seen = {}

    run = sli.build(uri, "vector", spark=spark, index_type="IVF_PQ", num_partitions=8, num_sub_vectors=4,
                    report=report, verify_queries=30, nprobes=[8])
    with open(report) as f:
        seen["report_is_the_file"] = json.load(f) == json.loads(json.dumps(run.report))
    seen["build"] = {"outcome": run.outcome, "version": run.committed_version, "type": run.report["index"]["type"],
                     "recall": [r["recall"] for r in run.report["recall"]], "summary": run.summary}

    def state():
        return lance.dataset(uri).version, sorted(os.listdir(os.path.join(uri, "_indices")))

    before, seen["refused"] = state(), []
    for bad in ({"column": "nope"}, {"column": "vector", "num_partitions": "16"},
                {"column": "vector", "num_partition": 16}, {"column": "vector", "index_type": "IVF_XX"}):
        column = bad.pop("column")
        try:
            sli.build(uri, column, spark=spark, replace=True, **bad)
            seen["refused"].append(None)
        except sli.InputError as e:
            seen["refused"].append(str(e))
    seen["untouched"] = state() == before

    lance.write_dataset(lance.dataset(more).to_table(), uri, mode="append")
    up = sli.update(uri, spark=spark, verify_queries=0)  # no column: the table's only vector index
    seen["update"] = {"outcome": up.outcome, "new_rows": up.report["update"]["new_rows"]}
    seen["status"] = [s.to_json() for s in sli.status(uri)]
    # from a worker thread, with no session given: the process's session is used, and left running
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        v = pool.submit(lambda: sli.verify(uri, "vector", verify_queries=10, print_summary=False)).result()
    seen["verify_in_a_thread"] = {"outcome": v.outcome, "first": v.summary.splitlines()[0],
                                  "alive": spark.range(2).count() == 2}
    seen["session_alive"] = spark.range(3).count() == 3
    print("SEEN " + json.dumps(seen))
""")


@pytest.mark.jvm
def test_the_api_in_a_fresh_process_with_its_own_session(tmp_path):
    data = write_vectors(tmp_path / "ds", 4000, 16, rows_per_fragment=1000)
    more = write_vectors(tmp_path / "more", 500, 16, seed=1)
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    env = {k: v for k, v in os.environ.items() if k != "LANCE_LOG"}  # a notebook sets nothing
    proc = subprocess.run([sys.executable, str(script), data.uri, str(tmp_path / "report.json"), more.uri],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(next(line[5:] for line in proc.stdout.splitlines() if line.startswith("SEEN ")))

    build = seen["build"]
    assert build["outcome"] == "succeeded" and build["type"] == "IVF_PQ" and seen["report_is_the_file"]
    assert build["summary"].splitlines()[0] in proc.stdout  # printed as the CLI prints it
    # the job's log reached the user through logging, and Lance stayed quiet per query
    assert " spark-lance-index INFO " in proc.stderr and "preflight:" in proc.stderr
    assert "Deprecation warning" not in proc.stderr and "_distance" not in proc.stderr

    refused = seen["refused"]
    assert "column 'nope' is not in the dataset" in refused[0]
    assert refused[1] == "num_partitions= must be an integer, got '16'"
    assert "did you mean num_partitions=?" in refused[2]
    assert "IVF_XX" in refused[3]
    assert seen["untouched"]

    assert seen["update"] == {"outcome": "succeeded", "new_rows": 500}
    assert "merging into segments of at most 10,000,000 rows (the default for an update)" in proc.stderr
    assert seen["session_alive"]  # the user's session is never stopped
    in_thread = seen["verify_in_a_thread"]
    assert in_thread["outcome"] == "succeeded" and in_thread["alive"], in_thread
    assert in_thread["first"].startswith("index 'vector_idx' (IVF_PQ") and " measured on " in in_thread["first"]
    (status,) = seen["status"]
    assert status["name"] == "vector_idx" and status["indexed_rows"] == 4500 and status["unindexed_rows"] == 0


def test_status_is_lances_own_statistics_for_every_index_type(tmp_path):
    rng = np.random.default_rng(0)
    rows = 3000
    table = pa.table({"vector": fsl(rng.normal(size=(rows, 16)).astype(np.float32)),
                      "category": pa.array(rng.integers(0, 7, rows)),
                      "text": pa.array([f"document number {i} about {i % 13}" for i in range(rows)])})
    uri = str(tmp_path / "ds")
    ds = lance.write_dataset(table, uri, max_rows_per_file=1000)
    ds.create_index("vector", "IVF_RQ", num_partitions=4, num_bits=1)
    ds.create_scalar_index("category", "BTREE")
    ds.create_scalar_index("text", "INVERTED")
    ds = lance.write_dataset(table.slice(0, 700), uri, mode="append")
    before = dataset_state(uri)

    proc = subprocess.run([sys.executable, "-m", "spark_lance_index", "status", "--uri", uri, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = {s["name"]: s for s in json.loads(proc.stdout)}
    assert sorted(got) == ["category_idx", "text_idx", "vector_idx"]
    described = {d.name: d for d in ds.describe_indices()}
    for name, s in got.items():
        stats = ds.stats.index_stats(name)
        assert s["type"] == stats["index_type"] and s["columns"] == list(described[name].field_names)
        assert (s["segments"], s["indexed_rows"], s["unindexed_rows"]) == (
            stats["num_segments"], stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (1, 3000, 700)
        assert s["size_bytes"] == described[name].total_size_bytes > 0
    v = got["vector_idx"]
    assert (v["metric"], v["num_partitions"], v["num_bits"], v["updatable"]) == ("l2", 4, 1, True)
    assert got["category_idx"]["updatable"] and got["category_idx"]["num_partitions"] is None

    lines = subprocess.run([sys.executable, "-m", "spark_lance_index", "status", "--uri", uri],
                           capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert len(lines) == 3 and lines[2].startswith("vector_idx: IVF_RQ on vector (l2, partitions 4, bits 1)")
    assert "3,000 rows indexed, 700 not (18.9%)" in lines[2] and "update: yes" in lines[2]
    assert dataset_state(uri) == before  # status writes nothing
