"""`update` of scalar and full-text indexes: new fragments indexed on the executors and committed
as segments of the existing index (a full-text index with its own tokenizer options, read back),
through append, delete and compaction cycles; filters return what a scan returns, full-text
search what one-node Lance's own maintenance (`optimize_indices`) returns."""

from __future__ import annotations

import shutil

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state

from spark_lance_index import pipeline
from spark_lance_index.config import make_config
from spark_lance_index.errors import InputError

WORDS = ["apple", "banana", "cherry", "running", "runs", "ran", "the", "a", "river", "stone", "bananas",
         "orange", "grape", "melon", "kiwi", "plum"]
COLUMNS = {"BTREE": "x", "BITMAP": "x", "ZONEMAP": "x", "BLOOMFILTER": "x", "LABEL_LIST": "tags", "NGRAM": "s",
           "INVERTED": "text"}
FILTERS = {
    "x": ["x = 7", "x > 60", "x IN (3, 65)", "x BETWEEN 10 AND 12"],  # values over 49 only in new rows
    "tags": ["array_has_any(tags, ['t3', 't12'])", "array_has_any(tags, ['t11'])"],
    "s": ["contains(s, 'ana')", "contains(s, 'kiw')"],
}
SEARCHES = ["banana", "running river", "kiwi plum", "the stone"]
TEXT_OPTIONS = {"with_position": True, "stem": False}  # not Lance's defaults: read back from the index


class Table:
    def __init__(self, uri: str, rows: int):
        self.uri, self.next_id = uri, 0
        self.append(rows, values=50)

    def append(self, rows: int, values: int = 70) -> None:
        rng = np.random.default_rng(self.next_id)
        ids = np.arange(self.next_id, self.next_id + rows)
        table = pa.table({
            "id": pa.array(ids, pa.int64()),
            "x": pa.array(rng.integers(0, values, rows), pa.int64()),
            "tags": pa.array([[f"t{t}" for t in rng.integers(0, values // 4, 2)] for _ in range(rows)]),
            "s": pa.array([" ".join(rng.choice(WORDS, 2)) for _ in range(rows)]),
            "text": pa.array([" ".join(rng.choice(WORDS[: 6 + values // 10], 6)) for _ in range(rows)]),
        })
        lance.write_dataset(table, self.uri, mode="append" if self.next_id else "create", max_rows_per_file=500)
        self.next_id += rows


def update(uri: str, column: str, spark):
    return pipeline.run(make_config({}, {"uri": uri, "column": column, "mode": "update", "verify_queries": 20,
                                         "rows_per_task": 500}), spark=spark)


def matches(ds, query: str) -> dict[int, float]:
    found = ds.to_table(full_text_query=query, columns=["id", "_score"], limit=100_000,
                        disable_scoring_autoprojection=True)
    return dict(zip(found["id"].to_pylist(), found["_score"].to_pylist()))


@pytest.mark.parametrize("index_type", list(COLUMNS))
def test_scalar_and_full_text_indexes_are_extended_through_append_delete_and_compaction(spark, tmp_path, index_type):
    column = COLUMNS[index_type]
    table = Table(str(tmp_path / "t"), 3000)
    lance.dataset(table.uri).create_scalar_index(column, index_type,
                                                 **(TEXT_OPTIONS if index_type == "INVERTED" else {}))
    cycles = [
        ("append", lambda: table.append(1000)),
        ("delete and append", lambda: (lance.dataset(table.uri).delete("id % 7 = 0"), table.append(800))),
        ("compact and append", lambda: (lance.dataset(table.uri).optimize.compact_files(), table.append(700))),
        ("deferred-remap compaction and append", lambda: (
            lance.dataset(table.uri).optimize.compact_files(defer_index_remap=True), table.append(600))),
    ]
    for cycle, change in cycles:
        change()
        # one-node Lance on the same table: a delta of the new rows (optimize_indices without
        # merging), and a fresh build, whose statistics leave deleted rows out
        delta, fresh = (str(tmp_path / f"{how}-{cycle.replace(' ', '-')}") for how in ("delta", "fresh"))
        if index_type == "INVERTED":
            shutil.copytree(table.uri, delta)
            shutil.copytree(table.uri, fresh)
            lance.dataset(delta).optimize.optimize_indices(num_indices_to_merge=0)
            lance.dataset(fresh).create_scalar_index(column, index_type, replace=True, **TEXT_OPTIONS)
        result = update(table.uri, column, spark)
        assert result.committed_version is not None, cycle
        check = result.index_check  # the job's own check after the commit, as a build's
        assert check is not None and (check.search is not None if index_type == "INVERTED"
                                      else check.filters and all(f.ok for f in check.filters)), (cycle, check)
        ds = lance.dataset(table.uri)
        name = f"{column}_idx"
        stats = ds.stats.index_stats(name)
        assert stats["num_unindexed_rows"] == 0 and stats["num_indexed_rows"] == ds.count_rows(), cycle
        assert stats.get("num_segments", stats.get("num_indices")) <= 3, cycle
        if index_type == "INVERTED":
            assert ds.describe_indices()[0].details == lance.dataset(fresh).describe_indices()[0].details
            # BM25 counts the rows of a segment as it was built: when the update re-encoded every
            # segment (the policy folds small ones in), it scores as a fresh build; otherwise as
            # one-node Lance's delta, deleted rows of the kept segments included
            one_node = lance.dataset(fresh if result.update["segments_kept"] == 0 else delta)
            for query in SEARCHES:
                got, want = matches(ds, query), matches(one_node, query)
                assert got.keys() == want.keys() == matches(lance.dataset(fresh), query).keys(), (cycle, query)
                assert all(abs(got[i] - want[i]) <= 1e-5 * max(1.0, abs(want[i])) for i in want), (cycle, query)
                top = sorted(want.values(), reverse=True)[:10]
                assert sorted(got.values(), reverse=True)[:10] == pytest.approx(top, rel=1e-5), (cycle, query)
        else:
            for predicate in FILTERS[column]:
                indexed = sorted(ds.to_table(filter=predicate, columns=["id"])["id"].to_pylist())
                scanned = sorted(ds.to_table(filter=predicate, columns=["id"], use_scalar_index=False)["id"]
                                 .to_pylist())
                assert indexed == scanned and scanned, (cycle, predicate)
            plan = ds.scanner(filter=FILTERS[column][0], columns=["id"]).explain_plan()
            assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan
    before = dataset_state(table.uri)
    assert update(table.uri, column, spark).committed_version is None  # nothing new: nothing committed
    assert dataset_state(table.uri) == before


def test_a_full_text_index_keeps_its_custom_stop_words_which_lance_does_not_describe(spark, tmp_path):
    """describe_indices() says custom_stop_words None even when the index uses them: the options
    come from the segment files, or the new segment would drop them."""
    table = Table(str(tmp_path / "t"), 1000)
    lance.dataset(table.uri).create_scalar_index("text", "INVERTED", custom_stop_words=["kiwi", "plum"])
    table.append(500)
    delta = str(tmp_path / "delta")
    shutil.copytree(table.uri, delta)
    lance.dataset(delta).optimize.optimize_indices(num_indices_to_merge=0)  # one-node Lance's own delta
    assert update(table.uri, "text", spark).committed_version is not None
    ds, one_node = lance.dataset(table.uri), lance.dataset(delta)
    assert ds.describe_indices()[0].details["custom_stop_words"] is None  # what Lance describes
    for query in ("the", "a river", "kiwi", "banana"):  # built-in stop words are words here; custom ones are not
        got, want = matches(ds, query), matches(one_node, query)
        assert got.keys() == want.keys(), query
        assert all(abs(got[i] - want[i]) <= 1e-5 * max(1.0, abs(want[i])) for i in want), query
    assert matches(ds, "the") and not matches(ds, "kiwi")


def test_a_full_text_index_whose_options_cannot_be_given_back_is_refused(spark, tmp_path, monkeypatch):
    from spark_lance_index import update_plan

    table = Table(str(tmp_path / "t"), 1000)
    lance.dataset(table.uri).create_scalar_index("text", "INVERTED")
    table.append(500)
    before = dataset_state(table.uri)
    real = update_plan.probe_build_options
    monkeypatch.setattr(update_plan, "probe_build_options",
                        lambda kind, options: {**real(kind, options), "stem": "something else"})
    with pytest.raises(InputError, match=r"tokenizer options \(stem\) cannot be given back to Lance exactly"):
        update(table.uri, "text", spark)
    assert dataset_state(table.uri) == before
