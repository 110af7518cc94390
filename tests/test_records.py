"""Job state without pickled engine objects (issue 22): a finished segment is saved as a JSON
record, and the segment read back from it commits an index that answers as the original would.
Plain Lance, no Spark."""

from __future__ import annotations

import dataclasses

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import fsl

from spark_lance_index.demo import clustered_vectors
from spark_lance_index.records import index_from_record, index_to_record, segment_from_json, segment_to_json
from spark_lance_index.segment_build import SegmentResult
from spark_lance_index.state import JobState
from spark_lance_index.storage import locate
from spark_lance_index.testing import exact_topk, recall_at_k


def _table(path, rows=3000, dim=16):
    vectors = clustered_vectors(rows + 20, dim, seed=3)
    uri = str(path)
    lance.write_dataset(pa.table({"id": np.arange(rows), "vector": fsl(vectors[:rows]),
                                  "tag": pa.array([f"t{i % 50}" for i in range(rows)])}),
                        uri, max_rows_per_file=rows // 3)
    return uri, vectors[:rows], vectors[rows:]


def _same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "fragment_ids":
            x, y = set(x), set(y)
        assert x == y, f.name


def test_a_vector_segment_read_back_from_its_record_commits_the_same_index(tmp_path):
    uri, vectors, queries = _table(tmp_path / "t")
    ds = lance.dataset(uri)
    frags = [f.fragment_id for f in ds.get_fragments()]
    segment = ds.create_index_uncommitted("vector", "IVF_FLAT", name="vector_idx", num_partitions=8,
                                          fragment_ids=frags)
    result = SegmentResult(0, str(segment.uuid), tuple(frags), 3000, {"centroids": "ab"}, segment, 1.5, "h", 1, 0.5)
    back = segment_from_json(segment_to_json(result))
    _same(segment, back.segment)
    assert dataclasses.replace(back, segment=None) == dataclasses.replace(result, segment=None)
    ds.commit_existing_index_segments("vector_idx", "vector", [back.segment])
    ds = lance.dataset(uri)
    assert ds.stats.index_stats("vector_idx")["num_indexed_rows"] == 3000
    truth = exact_topk(vectors, queries, 10, "l2")
    found = [ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 8}, columns=["id"])
             .column("id").to_numpy() for q in queries]
    assert recall_at_k(truth, found) == 1.0  # every partition probed: IVF_FLAT is exact


def test_a_scalar_segment_read_back_from_its_record_answers_filters_as_a_scan(tmp_path):
    uri, _, _ = _table(tmp_path / "t")
    ds = lance.dataset(uri)
    frags = [f.fragment_id for f in ds.get_fragments()]
    segment = ds.create_index_uncommitted("tag", "BITMAP", name="tag_idx", fragment_ids=frags)
    back = index_from_record(index_to_record(segment))
    _same(segment, back)
    ds.commit_existing_index_segments("tag_idx", "tag", [back])
    ds = lance.dataset(uri)
    scanned = ds.to_table(filter="tag = 't7'", columns=["id"], use_scalar_index=False).column("id").to_pylist()
    indexed = ds.to_table(filter="tag = 't7'", columns=["id"]).column("id").to_pylist()
    assert sorted(indexed) == sorted(scanned) and len(scanned) == 60
    assert "ScalarIndexQuery" in ds.scanner(filter="tag = 't7'").explain_plan()


@pytest.mark.parametrize("name, data", [("0.pkl", b"\x80\x04legacy"), ("1.json", b"{not json"),
                                        ("2.json", b'{"version": 99}'), ("3.json", b"null"), ("4.json", b"[1]")])
def test_a_saved_segment_this_version_did_not_write_is_rebuilt_not_trusted_and_removed(tmp_path, name, data):
    state = JobState(locate(str(tmp_path / "jobs")), "job1", {})
    state.files.write(f"segments/{name}", data)
    assert state.finished_segments() == {}
    state.forget_segments()
    assert state.files.list("segments") == []


def test_a_record_whose_ids_disagree_with_its_segment_is_refused(tmp_path):
    """The checks before the commit read the record's uuid and fragments; the commit takes the
    segment's: a record where they differ is never reused."""
    import json

    uri, _, _ = _table(tmp_path / "t")
    ds = lance.dataset(uri)
    frags = [f.fragment_id for f in ds.get_fragments()]
    segment = ds.create_index_uncommitted("vector", "IVF_FLAT", name="vector_idx", num_partitions=8,
                                          fragment_ids=frags)
    result = SegmentResult(0, str(segment.uuid), tuple(frags), 3000, {}, segment, 1.0, "h")
    for field, value in (("fragment_ids", frags[:-1]), ("index_uuid", "00000000-0000-0000-0000-000000000000")):
        record = json.loads(segment_to_json(result))
        record[field] = value
        with pytest.raises(ValueError, match="disagrees"):
            segment_from_json(json.dumps(record).encode())
