"""Executor resources (resources.py) and the plan's task sizes: plain functions, no JVM."""

from spark_lance_index.plan import largest_task_bytes
from spark_lance_index.resources import (
    MIB,
    memory_advice,
    needed_overhead,
    parse_size,
    read_resources,
    session_settings,
    task_peak_bytes,
)


def test_spark_sizes_are_read_as_spark_reads_them():
    assert parse_size("4g") == 4 << 30 and parse_size("512m") == 512 * MIB and parse_size("1024") == 1 << 30
    assert parse_size("2gb") == 2 << 30 and parse_size(None) is None and parse_size("lots") is None


def test_a_default_overhead_leaves_the_python_workers_nothing_and_the_advice_says_what_to_set():
    conf = {"spark.executor.memory": "8g", "spark.executor.cores": "4"}
    res = read_resources(conf.get)
    assert (res.slots, res.python_bytes) == (4, 0)  # Spark's default overhead is the JVM's own
    task = 512 * MIB
    need = needed_overhead(res, task)
    assert need == int(0.1 * (8 << 30)) + 4 * task_peak_bytes(task)  # 819 MiB + 4 x 643 MiB
    advice = memory_advice(res, task)
    assert advice.startswith("each build task peaks at about 642 MiB") and f"memoryOverhead={-(-need // MIB)}m" in advice
    # what it advises is enough
    enough = read_resources({**conf, "spark.executor.memoryOverhead": f"{-(-need // MIB)}m"}.get)
    assert memory_advice(enough, task) is None
    # pyspark.memory, when set, is the Python workers' budget
    assert read_resources({**conf, "spark.executor.pyspark.memory": "3g"}.get).python_bytes == 3 << 30


def test_a_created_session_gets_lance_threads_per_slot_and_the_overhead_only_where_unset():
    conf = {"spark.executor.memory": "4g", "spark.executor.cores": "8", "spark.task.cpus": "2"}
    res = read_resources(conf.get)
    got = session_settings(res, 100 * MIB, conf.get, "yarn")
    assert got["spark.executorEnv.LANCE_CPU_THREADS"] == got["spark.executorEnv.OPENBLAS_NUM_THREADS"] == "2"
    assert got["spark.executor.memoryOverhead"] == f"{-(-needed_overhead(res, 100 * MIB) // MIB)}m"
    mine = {**conf, "spark.executor.memoryOverhead": "2g", "spark.executorEnv.LANCE_CPU_THREADS": "4",
            "spark.executorEnv.OPENBLAS_NUM_THREADS": "4"}
    assert session_settings(read_resources(mine.get), 100 * MIB, mine.get, "yarn") == {}
    # a factor the user set is theirs (an absolute overhead would override it), and counts
    factored = {**conf, "spark.executor.memoryOverheadFactor": "0.3"}
    assert "spark.executor.memoryOverhead" not in session_settings(read_resources(factored.get), 100 * MIB,
                                                                   factored.get, "yarn")
    assert read_resources(factored.get).python_bytes == int(0.3 * (4 << 30)) - int(0.1 * (4 << 30))
    # cores unknown: no overhead guessed; no container limit (standalone, Databricks): none needed
    assert "spark.executor.memoryOverhead" not in session_settings(
        read_resources({"spark.executor.memory": "4g"}.get), 100 * MIB, {}.get, "k8s://https://api:443")
    assert session_settings(res, 100 * MIB, conf.get, "spark://10.0.0.1:7077") == {
        "spark.executorEnv.LANCE_CPU_THREADS": "2", "spark.executorEnv.OPENBLAS_NUM_THREADS": "2"}


def test_the_largest_task_is_bounded_by_the_plan():
    from spark_lance_index.dataset import FragmentInfo

    many = [FragmentInfo(i, 100_000) for i in range(100)]  # 10M rows
    assert largest_task_bytes(many, 512, True, 10_000_000) == 512 * MIB
    assert largest_task_bytes(many[:1], 512, True, 10_000_000) == 100_000 * 512
    assert largest_task_bytes(many, 512, True, 10_000_000, rows_per_task=3000) == 100_000 * 512  # a fragment is never split
    assert largest_task_bytes([FragmentInfo(i, 1000) for i in range(100)], 512, True, 10_000_000,
                              rows_per_task=3000) == 3000 * 512
    assert largest_task_bytes(many, 512, False, 10_000_000) == 4_194_304 * 512  # 2 GiB of an unmerged segment
    # a merge that holds more than any build task sizes the executors
    assert largest_task_bytes(many, 512, True, 10_000_000, merge_bytes=3 << 30) == 3 << 30
    # the centroid floor: 1B x 768 at 32,768 partitions makes 327,680-row tasks, not 512 MiB ones
    huge = [FragmentInfo(i, 1_000_000) for i in range(1000)]
    assert largest_task_bytes(huge, 3072, True, 10_000_000, num_partitions=32768) == 1_000_000 * 3072
    assert largest_task_bytes([FragmentInfo(i, 1000) for i in range(10**6)], 3072, True, 10_000_000,
                              num_partitions=32768) == 327_680 * 3072


def test_a_task_holds_ten_rows_per_partition_so_its_centroid_copy_stays_a_tenth_of_it():
    from spark_lance_index.plan import TARGET_TASK_BYTES, default_rows_per_task

    # 1B x 768 float32 on 1,600 cores: 512 MiB tasks (174,762 rows) at 4,096 partitions ...
    assert default_rows_per_task(10**9, 3072, 1600, 4096) == TARGET_TASK_BYTES // 3072
    # ... but at 32,768 partitions a task's copy of the centroids (96 MiB) would be 19% of it
    rows = default_rows_per_task(10**9, 3072, 1600, 32768)
    assert rows == 327_680 and 32768 * 3072 <= rows * 3072 / 10


def test_the_default_segment_is_what_one_merge_holds_from_the_types_stored_bytes():
    from spark_lance_index.dataset import IndexParams
    from spark_lance_index.index_types import INDEX_TYPES
    from spark_lance_index.plan import FIXED_SEGMENT_ROWS, MAX_DEFAULT_SEGMENT_ROWS, default_max_segment_rows

    rq = IndexParams("IVF_RQ", "l2", 4096, 5, 0, 256)
    # 128-d, 5 bits: 80 B of codes, 16 B of factors, an 8 B row id (measured: 102 B), whatever the float type
    assert INDEX_TYPES["IVF_RQ"].encoded_bytes_per_row(rq, 128, 512) == 104
    assert INDEX_TYPES["IVF_RQ"].encoded_bytes_per_row(rq, 128, 256) == 104  # float16
    # 4 GiB at 2x: 20.6M rows at 128-d; 768-d stores ~5x more per row: 4.3M rows
    assert default_max_segment_rows(INDEX_TYPES["IVF_RQ"], rq, 128, 512) == 20_648_881
    assert default_max_segment_rows(INDEX_TYPES["IVF_RQ"], rq, 768, 3072) == 4_260_880
    pq = IndexParams("IVF_PQ", "l2", 4096, 0, 16, 256)
    assert default_max_segment_rows(INDEX_TYPES["IVF_PQ"], pq, 128, 512) == 89_478_485
    assert default_max_segment_rows(INDEX_TYPES["IVF_PQ"], pq, 128, 512, merge_bytes=1 << 40) == MAX_DEFAULT_SEGMENT_ROWS
    assert default_max_segment_rows(INDEX_TYPES["IVF_RQ"], rq, 768, 3072, merge_bytes=16 << 30) == 17_043_521
    # unmeasured merges keep the fixed size: IVF_FLAT (it streams), scalar types
    flat = IndexParams("IVF_FLAT", "l2", 4096, 0, 0, 256)
    assert default_max_segment_rows(INDEX_TYPES["IVF_FLAT"], flat, 768, 3072) == FIXED_SEGMENT_ROWS
    assert default_max_segment_rows(INDEX_TYPES["BTREE"], IndexParams("BTREE", "", 0, 0, 0, 0), 0, 8) == FIXED_SEGMENT_ROWS


def test_update_and_unmerged_types_keep_the_fixed_segment_size_and_a_flag_wins():
    from types import SimpleNamespace

    from spark_lance_index.config import BuildConfig
    from spark_lance_index.dataset import IndexParams
    from spark_lance_index.plan import FIXED_SEGMENT_ROWS, max_segment_rows

    snap = SimpleNamespace(dim=128, vector_bytes=512, bytes_per_row=512, multivector=False, num_rows=10**9)
    config = BuildConfig.of(uri="/d", column="v")
    rq = IndexParams("IVF_RQ", "l2", 4096, 5, 0, 256)
    assert max_segment_rows(config, rq, snap) == 20_648_881
    update = config.with_settings(mode="update")
    assert max_segment_rows(update, rq, snap) == FIXED_SEGMENT_ROWS  # update's policy: as designed
    assert max_segment_rows(config, IndexParams("IVF_HNSW_SQ", "l2", 16, 0, 0, 256), snap) == FIXED_SEGMENT_ROWS
    # a multivector merge holds a code per vector: 1 vector a row merges as many rows as the fixed
    # size allows, 300 a row 300x fewer than a single-vector column would
    one = SimpleNamespace(**{**vars(snap), "multivector": True, "vectors_per_row": 1.0})
    assert max_segment_rows(config, rq, one) == FIXED_SEGMENT_ROWS
    many = SimpleNamespace(**{**vars(snap), "multivector": True, "vectors_per_row": 300.0})
    assert max_segment_rows(config, rq, many) == 20_648_881 // 300 == 68_829
    # ... and its update's segment policy aims at the same size (at 10M it would fold 145 of the
    # build's segments into one merge of 620 GB)
    assert max_segment_rows(update, rq, many) == 68_829
    assert max_segment_rows(config, IndexParams("IVF_HNSW_PQ", "l2", 1, 0, 16, 256), snap) == FIXED_SEGMENT_ROWS
    assert max_segment_rows(config.with_settings(max_segment_rows=123), rq, snap) == 123
