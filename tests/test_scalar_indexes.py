"""Scalar and full-text indexes through the same job: BTREE, BITMAP, LABEL_LIST, ZONEMAP,
BLOOMFILTER, NGRAM and INVERTED, on real Spark and real Lance datasets.

A scalar index is right when a filter through it returns exactly the rows a scan returns, and
the plan shows it in use; a full-text index is right when its top-10 is one-node Lance's.
"""

import os

import faults
import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import committed_uuids, index_dirs

from spark_lance_index import pipeline
from spark_lance_index.config import make_config
from spark_lance_index.errors import CommitCheckError, DatasetChangedError, IndexConflictError, JobError
from spark_lance_index.index_check import search_check
from spark_lance_index.index_types import INDEX_TYPES
from spark_lance_index.segment_build import run_task

ROWS = 20_000
VOCAB = [f"w{i}" for i in range(3000)]
COLUMN_OF = {"BTREE": "x", "BITMAP": "cat", "LABEL_LIST": "tags", "ZONEMAP": "seq", "BLOOMFILTER": "code",
             "NGRAM": "code", "INVERTED": "text"}


@pytest.fixture(autouse=True, scope="module")
def _ship_faults():
    """The fault functions here and in faults.py travel to the executors by value."""
    import sys

    from pyspark import cloudpickle

    faults.ship()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def write_table(path, rows: int = ROWS, rows_per_fragment: int = 2500, seed: int = 0) -> str:
    """Columns for every scalar type, with nulls, empty lists, and text with a Zipf vocabulary
    whose second half shifts, so per-segment term statistics differ from the table's."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, len(VOCAB) + 1) ** 1.1
    p /= p.sum()
    nulls = rng.random(rows) < 0.01
    texts = [" ".join(VOCAB[(j + (0 if i < rows // 2 else 400)) % len(VOCAB)]
                      for j in rng.choice(len(VOCAB), rng.integers(3, 25), p=p)) for i in range(rows)]
    table = pa.table({
        "id": np.arange(rows),
        "x": pa.array(rng.integers(0, 5000, rows), mask=nulls),
        "cat": pa.array([f"cat{c}" for c in rng.integers(0, 8, rows)], mask=rng.random(rows) < 0.01),
        "tags": pa.array([[f"t{t}" for t in rng.choice(6, rng.integers(0, 3), replace=False)] for _ in range(rows)]),
        "seq": np.arange(rows) * 3,
        "code": pa.array([f"c{a}-{b}" for a, b in rng.integers(0, 1000, (rows, 2))]),
        "text": pa.array(texts),
    })
    lance.write_dataset(table, str(path), max_rows_per_file=rows_per_fragment)
    return str(path)


def run_job(spark, uri, index_type, task_fn=run_task, **kw):
    config = make_config({}, {"uri": uri, "column": COLUMN_OF[index_type], "index_type": index_type,
                              "rows_per_task": 5000, **kw})
    return pipeline.run(config, spark=spark, task_fn=task_fn)


def filters(index_type: str, seed: int = 7) -> list[str]:
    """Filters the test picks itself (not the job's sample), for each type's index."""
    rng = np.random.default_rng(seed)
    if index_type in ("BTREE", "BLOOMFILTER", "ZONEMAP"):
        col = COLUMN_OF[index_type]
        values = {"x": rng.integers(0, 5000, 6), "seq": rng.integers(0, ROWS, 6) * 3,
                  "code": [f"'c{a}-{b}'" for a, b in rng.integers(0, 1000, (6, 2))]}[col]
        out = [f"{col} = {v}" for v in values]
        return out + ([f"{col} >= 100 AND {col} < 140", f"{col} IN (5, 17, 4242)"] if col != "code" else [])
    if index_type == "BITMAP":
        return ["cat = 'cat3'", "cat = 'cat0'", "cat IN ('cat1', 'cat7')", "cat = 'nope'"]
    if index_type == "LABEL_LIST":
        return ["array_has_any(tags, ['t1'])", "array_has_any(tags, ['t2', 't5'])", "array_has_all(tags, ['t0', 't4'])"]
    if index_type == "NGRAM":
        return [f"contains(code, '{s}')" for s in ("12-", "-99", "c7-", "555")]
    return []


def rows_for(ds, f, use_index=True):
    return sorted(ds.to_table(filter=f, columns=["id"], use_scalar_index=use_index).column("id").to_pylist())


@pytest.mark.parametrize("index_type", [t for t in COLUMN_OF if t != "INVERTED"])
def test_filters_through_the_index_return_exactly_what_a_scan_returns(spark, tmp_path, index_type):
    uri = write_table(tmp_path / "ds")
    lance.dataset(uri).delete("id % 97 = 0")  # deleted rows are skipped on both sides
    result = run_job(spark, uri, index_type)
    name = f"{COLUMN_OF[index_type]}_idx"
    ds = lance.dataset(uri)
    stats = ds.stats.index_stats(name)
    live = ds.count_rows()
    assert (stats["index_type"], stats["num_indexed_rows"], stats["num_unindexed_rows"]) == \
        (INDEX_TYPES[index_type].stats_name, live, 0)
    assert (result.num_tasks, result.segments_committed) == (4, 1)  # merged into one segment
    # the job's own check: every sampled filter exact and served by the index
    own = result.index_check.filters
    assert own and all(c.ok and c.index_used and c.same_rows for c in own), own
    # and the test's own filters, by the test
    for f in filters(index_type):
        plan = ds.scanner(filter=f, columns=["id"]).explain_plan()
        assert f"@{name}(" in plan and "ScalarIndexQuery" in plan, (f, plan)
        assert rows_for(ds, f) == rows_for(ds, f, use_index=False), f


def search(uri, query, k=10):
    t = lance.dataset(uri).to_table(full_text_query=query, columns=["id"], limit=k)
    return t.column("id").to_pylist(), np.array(t.column("_score").to_pylist())


def same_top_k(a, b) -> bool:
    """Equal top-k up to ties: the same scores, and the same rows above the k-th score."""
    (ids_a, sa), (ids_b, sb) = a, b
    if len(sa) != len(sb) or not np.allclose(np.sort(sa), np.sort(sb), rtol=1e-4):
        return False
    cut = sa.min() if len(sa) else 0
    above = lambda ids, s: {i for i, x in zip(ids, s) if x > cut * (1 + 1e-4)}  # noqa: E731
    return above(ids_a, sa) == above(ids_b, sb)


QUERIES = ["w1", "w7", "w401", "w2 w17", "w999", "w405 w6 w30", "w1500", "w2999", "w0 w400"] + \
    [f"w{i}" for i in range(20, 2000, 97)]


@pytest.mark.parametrize("segments", [1, 4])
def test_full_text_top10_equals_a_one_node_inverted_index(spark, tmp_path, segments):
    """BM25 needs corpus-wide statistics. Lance scores every committed segment of an index with
    the statistics of all of them (measured: the same scores as one-node's for every query, merged
    or not); the job's index, merged into one segment or committed as 4, ranks as one-node's."""
    job, one = write_table(tmp_path / "job"), write_table(tmp_path / "one")
    result = run_job(spark, job, "INVERTED", max_segment_rows=ROWS // segments)
    assert result.segments_committed == segments
    lance.dataset(one).create_scalar_index("text", "INVERTED", name="text_idx")
    # the job's own check (sampled rows found by their own text) reads as it does on one-node's
    # index: a row whose words are all common can be outranked, on either
    ours, theirs = result.index_check.search, search_check(lance.dataset(one), "text", ours_queries := 100)
    assert ours.queries == theirs.queries == ours_queries and abs(ours.found - theirs.found) <= 2
    assert ours.found >= 0.9 * ours.queries
    for q in QUERIES:
        assert same_top_k(search(job, q), search(one, q)), q


def test_tokenizer_options_reach_every_segment(spark, tmp_path):
    job, one = write_table(tmp_path / "job"), write_table(tmp_path / "one")
    options = {"with_position": True, "stem": False, "remove_stop_words": False, "base_tokenizer": "whitespace",
               "max_token_length": 4}
    result = run_job(spark, job, "INVERTED", **options)
    assert result.index_check.search.found > 0
    lance.dataset(one).create_scalar_index("text", "INVERTED", name="text_idx", **options)
    for q in QUERIES + ['"w1 w2"', '"w7 w1"']:  # phrase queries need the positions
        assert same_top_k(search(job, q), search(one, q)), q
    # a token longer than max_token_length is not indexed, in every segment
    assert search(job, "w1500")[0] == search(one, "w1500")[0] == []
    assert result.to_report()["index"]["options"] == options


# --- reliability, as for vectors -------------------------------------------------------------

@pytest.mark.parametrize("index_type", ["BTREE", "INVERTED"])
def test_a_task_failing_its_first_attempt_is_retried(spark, tmp_path, index_type):
    uri = write_table(tmp_path / "ds")
    before = index_dirs(uri)
    result = run_job(spark, uri, index_type, task_fn=faults.fail_first_attempt(1))
    name = f"{COLUMN_OF[index_type]}_idx"
    assert lance.dataset(uri).stats.index_stats(name)["num_indexed_rows"] == ROWS
    assert index_dirs(uri) == before | committed_uuids(uri, name)  # merge sources and the failed attempt removed
    assert not os.path.exists(result.job_dir)


def compact_during_build(group_id: int):
    def task_fn(task, artifacts, state, attempt):
        if task.group.group_id == group_id and attempt == 0:
            lance.dataset(task.uri).optimize.compact_files(target_rows_per_fragment=10**6)
        return run_task(task, artifacts, state, attempt)
    return task_fn


def test_compaction_during_the_build_commits_nothing(spark, tmp_path):
    uri = write_table(tmp_path / "ds")
    before = index_dirs(uri)
    with pytest.raises(DatasetChangedError, match="were removed.*nothing was committed"):
        run_job(spark, uri, "BITMAP", task_fn=compact_during_build(0))
    assert lance.dataset(uri).describe_indices() == []
    assert index_dirs(uri) == before and not os.path.exists(uri + ".index-jobs")


def test_an_existing_index_of_that_name_is_replaced_only_with_replace(spark, tmp_path):
    uri = write_table(tmp_path / "ds")
    lance.dataset(uri).create_scalar_index("x", "BITMAP", name="x_idx")
    with pytest.raises(Exception, match="an index named 'x_idx' already exists.*--replace"):
        run_job(spark, uri, "BTREE")
    result = run_job(spark, uri, "BTREE", replace=True)
    stats = lance.dataset(uri).stats.index_stats("x_idx")
    assert (stats["index_type"], stats["num_indexed_rows"]) == ("BTree", ROWS)
    assert all(c.ok for c in result.index_check.filters)


def test_an_index_of_that_name_committed_during_the_build_is_not_replaced(spark, tmp_path):
    uri = write_table(tmp_path / "ds")

    def other_writer(task, artifacts, state, attempt):
        if task.group.group_id == 0 and attempt == 0:
            lance.dataset(task.uri).create_scalar_index("cat", "BTREE", name="cat_idx")
        return run_task(task, artifacts, state, attempt)

    with pytest.raises(IndexConflictError, match="an index named 'cat_idx' already exists.*nothing was committed"):
        run_job(spark, uri, "BITMAP", task_fn=other_writer)
    assert lance.dataset(uri).stats.index_stats("cat_idx")["index_type"] == "BTree"  # the other writer's stands


def test_a_rerun_resumes_and_a_commit_that_landed_is_finished(spark, tmp_path, monkeypatch):
    uri = write_table(tmp_path / "ds")
    with pytest.raises(JobError, match="job state kept in"):
        run_job(spark, uri, "INVERTED", task_fn=faults.always_fail(1, delay=1.0))
    result = run_job(spark, uri, "INVERTED")
    assert result.segments_reused >= 1 and result.segments_reused + result.segments_built == 4
    assert lance.dataset(uri).stats.index_stats("text_idx")["num_indexed_rows"] == ROWS

    other = write_table(tmp_path / "other")
    faults.die_after_commit(monkeypatch, pipeline, lambda: run_job(spark, other, "LABEL_LIST"))
    version = lance.dataset(other).version
    result = run_job(spark, other, "LABEL_LIST")
    assert result.committed_version == version and all(c.ok for c in result.index_check.filters)
    assert not os.path.exists(other + ".index-jobs")


def test_a_committed_index_that_answers_wrong_fails_the_job(spark, tmp_path):
    """One task indexes other data under the same fragment ids and field (a twin table with other
    values, as a stale copy would): Lance merges and commits the segment without a word, and only
    the filter check can tell that the index answers wrong."""
    import dataclasses
    import shutil

    uri, twin = write_table(tmp_path / "ds"), write_table(tmp_path / "twin", seed=1)

    def indexes_the_twin(task, artifacts, state, attempt):
        if task.group.group_id != 1:
            return run_task(task, artifacts, state, attempt)
        result = run_task(dataclasses.replace(task, uri=twin), artifacts, state, attempt)
        shutil.copytree(f"{twin}/_indices/{result.index_uuid}", f"{uri}/_indices/{result.index_uuid}")
        return result

    before = index_dirs(uri)
    with pytest.raises(CommitCheckError, match="index 'x_idx' was committed at version .* but is wrong: the filter "
                                               "`.*` gives .* rows through the index, .* by a scan.*--replace"):
        run_job(spark, uri, "BTREE", task_fn=indexes_the_twin)
    wrong = committed_uuids(uri, "x_idx")
    # the advice works: a rerun with --replace builds afresh (nothing of the wrong run is reused)
    # and commits a right index over the wrong one; the wrong one's directories stay while the
    # version that committed it does (until Lance's cleanup_old_versions, as after Lance's replace)
    result = run_job(spark, uri, "BTREE", replace=True)
    assert (result.segments_reused, result.segments_built) == (0, 4)
    assert all(c.ok for c in result.index_check.filters) and not committed_uuids(uri, "x_idx") & wrong
    assert index_dirs(uri) == before | committed_uuids(uri, "x_idx") | wrong


def test_the_filter_check_sees_which_index_a_plan_uses(tmp_path):
    """Plain Lance: the plan of a filter names the index that serves it, and the check reads it."""
    from spark_lance_index.index_check import index_side

    uri = write_table(tmp_path / "ds", rows=4000)
    ds = lance.dataset(uri)
    ds.create_scalar_index("code", "NGRAM", name="code_idx")
    ds.create_scalar_index("x", "BTREE", name="x_idx")
    ds = lance.dataset(uri)
    assert index_side(ds, "code_idx", "NGram", "contains(code, '12-')")[1]  # 3 characters: served by the n-grams
    assert not index_side(ds, "code_idx", "NGram", "contains(code, '2-')")[1]  # 2: a scan
    assert not index_side(ds, "code_idx", "NGram", "x = 5")[1] and index_side(ds, "x_idx", "BTree", "x = 5")[1]


def test_a_task_killed_after_lance_picked_its_uuid_leaves_a_directory_that_is_named_not_deleted(spark, tmp_path):
    """BTREE segments take the uuid Lance picks, so the job marks the directory only once written;
    a task that dies in between leaves one the job cannot prove is its own: reported, kept."""
    from spark_lance_index.segment_build import build_segment

    uri = write_table(tmp_path / "ds")
    before = index_dirs(uri)

    def dies_after_the_write(task, artifacts, state, attempt):
        if task.group.group_id == 1 and attempt == 0:
            def build_then_die(*args):
                build_segment(*args)
                raise RuntimeError("executor lost right after Lance wrote the segment")
            return run_task(task, artifacts, state, attempt, build=build_then_die)
        return run_task(task, artifacts, state, attempt)

    result = run_job(spark, uri, "BTREE", task_fn=dies_after_the_write)
    orphans = index_dirs(uri) - before - committed_uuids(uri, "x_idx")
    assert len(orphans) == 1 and result.leftovers_unaccounted == sorted(orphans)
    assert all(c.ok for c in result.index_check.filters)


def test_the_filter_check_probes_every_column_type_it_accepts(spark, tmp_path):
    """Dates, timestamps, decimals, binary values, float16 (nulls only: pyarrow has no float16
    equality), lists of int32 (a cast literal, or Lance scans) and text lists with null elements."""
    import datetime
    import decimal

    rng = np.random.default_rng(3)
    n = 4000
    table = pa.table({
        "id": np.arange(n),
        "ts": pa.array([datetime.datetime(2020, 1, 1) + datetime.timedelta(hours=int(h)) for h in rng.integers(0, 500, n)],
                       mask=rng.random(n) < 0.02),
        "day": pa.array([datetime.date(2021, 1, 1) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 300, n)]),
        "price": pa.array([decimal.Decimal(int(c)) / 100 for c in rng.integers(0, 5000, n)], pa.decimal128(10, 2)),
        "blob": pa.array([bytes([int(a), int(b)]) for a, b in rng.integers(0, 40, (n, 2))]),
        "half": pa.array(rng.integers(0, 50, n).astype(np.float16), mask=rng.random(n) < 0.02),
        "ids": pa.array([list(rng.integers(0, 30, 2).astype(np.int32)) for _ in range(n)], pa.list_(pa.int32())),
        "notes": pa.array([[f"note {i}", None, "line one\nline two"] if i % 7 else None for i in range(n)]),
    })
    uri = str(tmp_path / "ds")
    lance.write_dataset(table, uri, max_rows_per_file=1000)
    for column, index_type in [("ts", "ZONEMAP"), ("day", "BTREE"), ("price", "BTREE"), ("blob", "BLOOMFILTER"),
                               ("half", "BITMAP"), ("ids", "LABEL_LIST"), ("notes", "INVERTED")]:
        result = pipeline.run(make_config({}, {"uri": uri, "column": column, "index_type": index_type,
                                               "rows_per_task": 2000}), spark=spark)
        check = result.index_check
        if index_type == "INVERTED":
            assert check.search.queries > 0 and check.search.found > 0.9 * check.search.queries, column
            continue
        assert check.unchecked is None and all(c.ok for c in check.filters), (column, check)
        probed = [c.filter for c in check.filters]
        assert any("IS NULL" in f for f in probed) or index_type == "LABEL_LIST"
        assert len(probed) > (1 if column != "half" else 0), (column, probed)


def test_a_string_with_a_newline_is_probed_through_the_index(tmp_path):
    """Lance prints a filter's value in the plan as it is, newlines included."""
    from spark_lance_index.index_check import index_side

    uri = str(tmp_path / "ds")
    lance.write_dataset(pa.table({"s": ["a\nb", "c", "a\nb"] * 100}), uri)
    lance.dataset(uri).create_scalar_index("s", "BTREE", name="s_idx")
    digest, used, complete = index_side(lance.dataset(uri), "s_idx", "BTree", "s = 'a\nb'")
    assert used and complete and digest.count == 200
