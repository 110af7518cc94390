"""Planning: contiguous groups, every fragment exactly once, rows balanced."""

import numpy as np
import pytest

from spark_lance_index.dataset import FragmentInfo
from spark_lance_index.plan import default_rows_per_task, plan_groups


def frags(sizes):
    return [FragmentInfo(i, n) for i, n in enumerate(sizes)]


def check_partition(fragments, groups):
    ids = [f for g in groups for f in g.fragment_ids]
    assert ids == sorted(f.fragment_id for f in fragments)  # contiguous, in order, once each
    assert [g.group_id for g in groups] == list(range(len(groups)))
    rows = {f.fragment_id: f.num_rows for f in fragments}
    for g in groups:
        assert g.num_rows == sum(rows[f] for f in g.fragment_ids)


def test_equal_fragments_split_evenly():
    groups = plan_groups(frags([1000] * 16), rows_per_task=4000)
    check_partition(frags([1000] * 16), groups)
    assert [g.num_rows for g in groups] == [4000] * 4


@pytest.mark.parametrize("seed", range(20))
def test_uneven_fragments_stay_balanced(seed):
    rng = np.random.default_rng(seed)
    sizes = list(rng.integers(1, 50_000, rng.integers(1, 200)))
    target = int(rng.integers(10_000, 200_000))
    fragments = frags(sizes)
    groups = plan_groups(fragments, rows_per_task=target)
    check_partition(fragments, groups)
    ideal = sum(sizes) / len(groups)
    # a group is off the ideal by at most one fragment on each side
    assert max(g.num_rows for g in groups) <= ideal + 2 * max(sizes)
    assert len(groups) <= max(1, -(-sum(sizes) // target))


def test_one_huge_fragment_gets_its_own_group():
    fragments = frags([10, 5, 1_000_000, 3, 7])
    groups = plan_groups(fragments, rows_per_task=100_000)
    check_partition(fragments, groups)
    assert (2,) in [g.fragment_ids for g in groups]
    assert len(groups) <= 5


def test_fragments_per_task():
    fragments = frags([5] * 7)
    groups = plan_groups(fragments, fragments_per_task=3)
    check_partition(fragments, groups)
    assert [len(g.fragment_ids) for g in groups] == [3, 3, 1]


def test_default_task_size():
    # 1M x 128 float32 on 2 cores: 512 MiB tasks would be 1M rows, spread wins: 250k
    assert default_rows_per_task(1_000_000, 512, 2) == 250_000
    # 10B rows: capped by memory, 1M rows of 512 bytes per task
    assert default_rows_per_task(10_000_000_000, 512, 200) == 1_048_576
    # tiny tables are not cut into tiny tasks
    assert default_rows_per_task(1000, 512, 8) == 16_384


def test_a_type_whose_segments_are_not_merged_gets_one_task_per_segment():
    """Merged types are cut for parallel work (>= 2 tasks per core); SQ and HNSW segments are
    committed as built, so their tasks are as large as a segment: --max-segment-rows, or what a
    task's memory holds."""
    from spark_lance_index import pipeline
    from spark_lance_index.config import make_config
    from spark_lance_index.dataset import DatasetSnapshot, IndexParams
    from spark_lance_index.plan import UNMERGED_TASK_BYTES, segment_rows, unmerged_rows_per_task

    fragments = tuple(frags([1000] * 100))
    snap = DatasetSnapshot("/x", 1, "vector", 128, "float32", fragments)

    def tasks(index_type, **kw):
        config = make_config({}, {"uri": "/x", "column": "vector", "index_type": index_type, **kw})
        params = IndexParams(index_type, "l2", 8, 0, 0, 256)
        return pipeline.plan(config, snap, params, fragments, parallelism=64)

    assert len(tasks("IVF_FLAT")) == 7  # spread over the cores, 16,384 rows a task at the least
    for index_type in ("IVF_SQ", "IVF_HNSW_FLAT", "IVF_HNSW_SQ", "IVF_HNSW_PQ"):
        assert len(tasks(index_type)) == 1  # 100k rows: one segment, though 64 task slots wait
        assert [g.num_rows for g in tasks(index_type, max_segment_rows=25_000)] == [25_000] * 4
    # a task holds at most UNMERGED_TASK_BYTES of vectors, whatever --max-segment-rows says
    assert segment_rows(10_000_000, 768 * 4) == UNMERGED_TASK_BYTES // (768 * 4) < 10_000_000
    # the fewest segments the largest task allows, spread over idle slots only down to 1M-row
    # segments and up to 32 of them
    m = 1 << 20
    assert unmerged_rows_per_task(300_000, 10_000_000, 512, 2) == 300_000
    assert unmerged_rows_per_task(4 * m, 10_000_000, 512, 2) == 2 * m  # two slots, two segments
    assert unmerged_rows_per_task(10 * m, 10_000_000, 512, 100) == m  # 10 slots of 100 get work
    assert unmerged_rows_per_task(200 * m, 10_000_000, 512, 100) == 4 * m  # 50 segments: task memory decides
    assert unmerged_rows_per_task(40 * m, 10_000_000, 512, 1600) == 40 * m // 32  # the spread stops at 32


def test_a_multivector_merge_is_sized_by_its_vectors_not_its_rows():
    """A merged multivector segment stores a code per vector: 40 vectors a row hold 40 codes, and
    the merge task is sized for them (counting one code per row undersized it 40-fold)."""
    from spark_lance_index.config import make_config
    from spark_lance_index.dataset import DatasetSnapshot, IndexParams
    from spark_lance_index.index_types import INDEX_TYPES
    from spark_lance_index.plan import MERGE_OVERHEAD, merge_peak_bytes

    fragments = tuple(frags([50_000] * 4))
    config = make_config({}, {"uri": "/x", "column": "v", "index_type": "IVF_RQ"})
    params = IndexParams("IVF_RQ", "cosine", 256, 5, 0, 256)
    per_vector = INDEX_TYPES["IVF_RQ"].encoded_bytes_per_row(params, 128, 512)
    single = DatasetSnapshot("/x", 1, "v", 128, "float32", fragments)
    multi = DatasetSnapshot("/x", 1, "v", 128, "float32", fragments, multivector=True,
                            sampled_row_bytes=40 * 512 + 4)
    assert multi.vectors_per_row == (40 * 512 + 4) / 512
    assert merge_peak_bytes(config, params, single) == int(MERGE_OVERHEAD * per_vector * 200_000)
    assert merge_peak_bytes(config, params, multi) == int(MERGE_OVERHEAD * per_vector * multi.vectors_per_row * 200_000)
    # an update merges the rows it encodes, not the table's
    assert merge_peak_bytes(config, params, multi, 1_000) == int(MERGE_OVERHEAD * per_vector * multi.vectors_per_row * 1_000)
