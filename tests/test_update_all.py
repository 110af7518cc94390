"""`update --uri U` alone: every index of the table in one run, one summary, one report; an index
update cannot extend is skipped with its reason (exit 4); a killed run is finished by the rerun
with no index updated twice (update_all.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state, fsl, multivectors_in_parts
from jsonschema import validate
from test_update import models

from spark_lance_index.config import make_config
from spark_lance_index.errors import InputError
from spark_lance_index.index_model import model_fingerprint
from spark_lance_index.index_status import index_status, size_text
from spark_lance_index.pipeline import update_task_bytes
from spark_lance_index.update_all import (
    SKIPPED_EXIT,
    IndexUpdate,
    TableUpdate,
    table_report_schema,
    update_every_index,
)

DIM = 16
ROWS_PER_FRAGMENT = 1000


def write(uri: str, start: int, rows: int) -> None:
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(99).normal(size=(8, DIM)) * 4
    def vectors():
        return (centers[rng.integers(0, 8, rows)] + rng.normal(size=(rows, DIM))).astype(np.float32)
    table = pa.table({"id": pa.array(np.arange(start, start + rows), pa.int64()), "a": fsl(vectors()),
                      "b": fsl(vectors())})
    lance.write_dataset(table, uri, mode="append" if os.path.exists(uri) else "create",
                        max_rows_per_file=ROWS_PER_FRAGMENT)


def three_indexes(uri: str) -> None:
    """Two vector indexes and a scalar one."""
    write(uri, 0, 4000)
    ds = lance.dataset(uri)
    ds.create_index("a", "IVF_FLAT", num_partitions=4)
    ds.create_index("b", "IVF_PQ", num_partitions=4, num_sub_vectors=4)
    ds.create_scalar_index("id", "BTREE")


def two_models(uri: str, column: str) -> None:
    """An index on `column` whose two segments were trained apart: no one model encodes new rows
    like both of them, so `update` refuses it before writing anything."""
    ds = lance.dataset(uri)
    rng = np.random.default_rng(3)
    made = [ds.create_index_uncommitted(column, "IVF_FLAT", name=f"{column}_idx", num_partitions=4, replace=True,
                                        ivf_centroids=fsl(rng.normal(size=(4, DIM)).astype(np.float32)),
                                        fragment_ids=frags) for frags in ([0, 1], [2, 3])]
    ds.commit_existing_index_segments(f"{column}_idx", column, made)


def cli(uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spark_lance_index", "update", "--uri", uri, "--master", "local[2]",
            "--rows-per-task", str(ROWS_PER_FRAGMENT), "--verify-queries", "0", *extra]


def exact_recall_of_flat_index(uri: str, column: str, queries: np.ndarray) -> float:
    """IVF_FLAT at every partition over the index alone (fast_search): 1.0 iff every live row is
    in the index, against exact numpy search."""
    ds = lance.dataset(uri)
    data = ds.to_table(columns=["id", column])
    ids = data["id"].to_numpy()
    vectors = np.stack(data[column].to_numpy(zero_copy_only=False))
    hits = 0
    for q in queries:
        exact = set(ids[np.argsort(((vectors - q) ** 2).sum(1))[:10]])
        found = ds.to_table(nearest={"column": column, "q": q, "k": 10, "nprobes": 4}, columns=["id"],
                            fast_search=True)["id"].to_pylist()
        hits += len(exact & set(found))
    return hits / (10 * len(queries))


def run_settings(uri: str, **kw: object) -> object:
    """The run's own settings, as the command line makes them before it knows the indexes."""
    return make_config({}, {"uri": uri, "column": "any", "mode": "update", **kw})


def segments(uri: str, name: str) -> set[str]:
    return {str(s.uuid) for i in lance.dataset(uri).describe_indices() if i.name == name for s in i.segments}


@pytest.mark.jvm  # starts Spark itself
def test_every_index_of_the_table_in_one_run_one_report_and_a_refused_one_skipped(tmp_path):
    uri, report = str(tmp_path / "t"), str(tmp_path / "report.json")
    three_indexes(uri)
    two_models(uri, "b")  # b_idx: refused, skipped with its reason
    first = models(uri, "a_idx")[0]
    b_before = segments(uri, "b_idx")
    write(uri, 4000, 3000)

    # the session is sized for the largest task of the updates, here a_idx's 3,000 new rows
    largest = max(update_task_bytes(make_config({}, {"uri": uri, "mode": "update", "column": c, "index_name": n}))
                  for c, n in (("a", "a_idx"), ("id", "id_idx")))
    assert largest >= 3000 * DIM * 4
    config = tmp_path / "nightly.toml"  # the report from a --config file: the table's, not each index's
    config.write_text(f'report = "{report}"\n')
    proc = subprocess.run(cli(uri, "--config", str(config)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == SKIPPED_EXIT, proc.stdout + proc.stderr[-3000:]
    assert "3 indexes, 2 updated, 1 skipped" in proc.stdout
    assert "a_idx (IVF_FLAT on a): updated: 3,000 new rows" in proc.stdout
    assert "id_idx (BTree on id): updated: 3,000 new rows" in proc.stdout
    assert "b_idx (IVF_FLAT on b): skipped: cannot update the index 'b_idx'" in proc.stdout
    assert "different models (centroids differ)" in proc.stdout
    assert proc.stderr.count(f"one Spark session for the updates, sized for their largest task "
                             f"({size_text(largest)})") == 1
    assert proc.stderr.count("report written to") == 1  # the table's, never an index's in its place
    ds = lance.dataset(uri)
    for name in ("a_idx", "id_idx"):
        stats = ds.stats.index_stats(name)
        assert stats["num_unindexed_rows"] == 0 and stats["num_indexed_rows"] == 7000, name
    assert all(model_fingerprint(m) == model_fingerprint(first) for m in models(uri, "a_idx"))
    queries = np.random.default_rng(5).normal(size=(20, DIM)).astype(np.float32) * 4
    assert exact_recall_of_flat_index(uri, "a", queries) == 1.0
    for predicate in ("id >= 3990 AND id < 4010", "id IN (5, 6500)"):  # old and new rows
        assert (sorted(ds.to_table(filter=predicate, columns=["id"])["id"].to_pylist())
                == sorted(ds.to_table(filter=predicate, columns=["id"], use_scalar_index=False)["id"].to_pylist()))
    assert segments(uri, "b_idx") == b_before and ds.stats.index_stats("b_idx")["num_unindexed_rows"] == 3000
    doc = json.load(open(report))
    validate(doc, table_report_schema())
    assert doc["outcome"] == "some_skipped"
    assert [(i["index_name"], i["outcome"]) for i in doc["indexes"]] == [
        ("a_idx", "updated"), ("b_idx", "skipped"), ("id_idx", "updated")]
    assert doc["indexes"][0]["run"]["update"]["new_rows"] == 3000
    assert not os.path.exists(uri + ".index-jobs")

    before = dataset_state(uri)
    again = subprocess.run(cli(uri), capture_output=True, text=True, timeout=300)
    assert again.returncode == SKIPPED_EXIT, again.stderr[-3000:]
    assert "3 indexes, 2 up to date, 1 skipped" in again.stdout
    assert dataset_state(uri) == before

    lance.dataset(uri).drop_index("b_idx")  # now no index has rows to add
    before = dataset_state(uri)
    again = subprocess.run(cli(uri), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 indexes, 2 up to date" in again.stdout, again.stderr[-3000:]
    assert "one Spark session" not in again.stderr  # no Spark at all
    assert dataset_state(uri) == before


@pytest.mark.jvm  # starts Spark itself
def test_a_driver_killed_during_the_second_index_is_finished_by_the_rerun_none_updated_twice(tmp_path):
    uri = str(tmp_path / "t")
    three_indexes(uri)
    write(uri, 4000, 6000)
    jobs = uri + ".index-jobs"
    driver = subprocess.Popen(cli(uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, killed_in_b = time.time() + 180, False
    while time.time() < deadline and driver.poll() is None:
        a_done = lance.dataset(uri).stats.index_stats("a_idx")["num_unindexed_rows"] == 0
        saved = [n for j in (os.listdir(jobs) if os.path.isdir(jobs) else [])
                 for n in (os.listdir(os.path.join(jobs, j, "segments"))
                           if os.path.isdir(os.path.join(jobs, j, "segments")) else []) if n.endswith(".json")]
        if a_done and len(saved) >= 2:  # a_idx committed, b_idx part built
            os.killpg(driver.pid, signal.SIGKILL)
            killed_in_b = True
            break
        time.sleep(0.05)
    driver.wait()
    assert killed_in_b, driver.stdout.read().decode()[-3000:]
    a_segments = segments(uri, "a_idx")
    assert lance.dataset(uri).stats.index_stats("b_idx")["num_unindexed_rows"] == 6000  # b not committed

    rerun = subprocess.run(cli(uri), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "a_idx (IVF_FLAT on a): up to date" in rerun.stdout  # not updated twice
    assert "b_idx (IVF_PQ on b): updated: 6,000 new rows" in rerun.stdout
    assert "id_idx (BTree on id): updated: 6,000 new rows" in rerun.stdout
    b_summary = rerun.stdout.split("index 'b_idx'")[1].split("index '")[0]
    assert "reused from an earlier run 0" not in b_summary, b_summary  # its saved segments were resumed
    assert segments(uri, "a_idx") == a_segments
    ds = lance.dataset(uri)
    for name in ("a_idx", "b_idx", "id_idx"):
        assert ds.stats.index_stats(name)["num_unindexed_rows"] == 0, name
    assert not os.path.exists(jobs)


def test_an_index_the_update_refuses_is_skipped_with_its_reason_and_the_others_update(spark, tmp_path):
    uri = str(tmp_path / "t")
    write(uri, 0, 4000)
    lance.dataset(uri).create_index("a", "IVF_FLAT", num_partitions=4)
    two_models(uri, "b")
    write(uri, 4000, 2000)
    b_before = segments(uri, "b_idx")
    table = update_every_index(run_settings(uri), lambda column, name: make_config({}, {
        "uri": uri, "column": column, "index_name": name, "mode": "update", "verify_queries": 0}), spark=spark)
    assert [(i.name, i.outcome) for i in table.indexes] == [("a_idx", "updated"), ("b_idx", "skipped")]
    assert "different models (centroids differ)" in table.indexes[1].reason and table.exit_code == SKIPPED_EXIT
    assert lance.dataset(uri).stats.index_stats("a_idx")["num_unindexed_rows"] == 0
    assert segments(uri, "b_idx") == b_before


def test_a_multivector_index_is_updated_with_the_others(spark, tmp_path):
    uri = str(tmp_path / "t")
    _, rows = multivectors_in_parts(uri, 1500, 1000, DIM, rows_per_fragment=500)
    lance.dataset(uri).create_index("mv", "IVF_FLAT", metric="cosine", num_partitions=2)
    lance.dataset(uri).create_scalar_index("id", "BTREE")
    lance.write_dataset(rows.slice(1000), uri, mode="append")
    assert all(s.updatable for s in index_status(uri))  # `status` says so too
    table = update_every_index(run_settings(uri), lambda column, name: make_config({}, {
        "uri": uri, "column": column, "index_name": name, "mode": "update", "verify_queries": 0}), spark=spark)
    assert [(i.name, i.outcome) for i in table.indexes] == [("id_idx", "updated"), ("mv_idx", "updated")]
    for name in ("id_idx", "mv_idx"):
        stats = lance.dataset(uri).stats.index_stats(name)
        assert (stats["num_indexed_rows"], stats["num_unindexed_rows"]) == (1500, 0), name


def test_one_index_failing_is_named_the_next_still_updates_and_the_exit_code_says_failed(spark, tmp_path):
    uri, report = str(tmp_path / "t"), str(tmp_path / "report.json")
    three_indexes(uri)
    write(uri, 4000, 1000)

    def config_for(column, name):  # a_idx's job directory is refused (inside the dataset): a failure
        return make_config({}, {"uri": uri, "column": column, "index_name": name, "mode": "update",
                                "verify_queries": 0, **({"job_dir": f"{uri}/_jobs"} if name == "a_idx" else {})})

    table = update_every_index(run_settings(uri, report=report), config_for, spark=spark)
    assert [(i.name, i.outcome) for i in table.indexes] == [("a_idx", "failed"), ("b_idx", "updated"),
                                                            ("id_idx", "updated")]
    assert "inside the dataset" in table.indexes[0].reason and table.exit_code == 1
    doc = json.load(open(report))
    validate(doc, table_report_schema())
    assert doc["outcome"] == "failed" and doc["indexes"][1]["run"]["outcome"] == "succeeded"
    ds = lance.dataset(uri)
    assert ds.stats.index_stats("a_idx")["num_unindexed_rows"] == 1000
    assert ds.stats.index_stats("b_idx")["num_unindexed_rows"] == ds.stats.index_stats("id_idx")[
        "num_unindexed_rows"] == 0


def test_a_table_with_no_index_is_refused_before_spark_and_exit_codes_say_what_happened(tmp_path):
    uri = str(tmp_path / "t")
    write(uri, 0, 100)
    with pytest.raises(InputError, match="has no index to update: build one first"):
        update_every_index(run_settings(uri), lambda column, name: None)  # type: ignore[arg-type,return-value]
    write(uri, 100, 3000)
    lance.dataset(uri).create_scalar_index("id", "BTREE")
    write(uri, 3100, 50)
    write(uri, 3150, 50)
    lance.dataset(uri).optimize.compact_files(defer_index_remap=True)
    assert any(d.name.startswith("__lance") for d in lance.dataset(uri).describe_indices())
    assert [s.name for s in index_status(uri)] == ["id_idx"]  # Lance's bookkeeping is no index to update

    def table(*outcomes: str) -> TableUpdate:
        return TableUpdate(uri, [IndexUpdate(f"i{n}", ["c"], "IVF_PQ", o) for n, o in enumerate(outcomes)])

    assert table("updated", "up to date").exit_code == 0
    assert table("updated", "skipped").exit_code == SKIPPED_EXIT == 4
    assert table("skipped", "recall below minimum").exit_code == 3
    assert table("updated", "failed", "skipped").exit_code == 1
    assert table("failed").outcome == "failed" and table("skipped").outcome == "some_skipped"
