"""Bad input is refused before any Spark work, in one line, and leaves the dataset as it was."""

import os

import lance
import numpy as np
import pyarrow as pa
import pytest
from conftest import dataset_state, fsl, spark_job_count

from spark_lance_index.cli import main
from spark_lance_index.config import BuildConfig, make_config
from spark_lance_index.errors import InputError
from spark_lance_index.pipeline import run


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    """2,000 rows: a good 16-d vector, a 12-d one, and columns that are not float vectors."""
    uri = str(tmp_path_factory.mktemp("odd") / "ds")
    rng = np.random.default_rng(0)
    n = 2000
    lists = pa.array([list(map(float, rng.standard_normal(3))) for _ in range(n)], pa.list_(pa.float32()))
    table = pa.table(
        {
            "id": np.arange(n),
            "vector": fsl(rng.standard_normal((n, 16))),
            "v12": fsl(rng.standard_normal((n, 12))),
            "ragged": lists,
            "bytes": fsl(rng.integers(0, 255, (n, 16)), pa.uint8()),
            "meta": pa.StructArray.from_arrays([pa.array(np.arange(n))], names=["x"]),
            "mv": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                           fsl(rng.standard_normal((2 * n, 16)))),
            "title": pa.array([f"title {i}" for i in range(n)]),
            "half": pa.array(rng.standard_normal(n).astype(np.float16)),
            "lmv": pa.LargeListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int64)),
                                                 fsl(rng.standard_normal((2 * n, 16)))),
        }
    )
    lance.write_dataset(table, uri, max_rows_per_file=500)
    ds = lance.dataset(uri)
    ds.create_index("v12", "IVF_FLAT", name="taken", num_partitions=2)
    lance.dataset(uri).create_scalar_index("title", "BTREE", name="title_btree")
    return uri


CASES = {
    "missing column": ({"column": "nope"}, "is not in the dataset"),
    "missing struct field": ({"column": "meta.vec"}, "has no field 'vec'"),
    "integer column": ({"column": "id"}, "needs a fixed-size list of floats"),
    "variable-length list": ({"column": "ragged"}, "needs a fixed-size list of floats"),
    "uint8 vectors": ({"column": "bytes"}, "float16, float32 or float64"),
    "IVF_RQ dim 12": ({"column": "v12"}, "divisible by 8"),
    "num_bits 0": ({"num_bits": 0}, "1 to 9"),
    "num_bits 10": ({"num_bits": 10}, "1 to 9"),
    "partitions > rows": ({"num_partitions": 5000}, "more than the 2000 rows"),
    "unknown index type": ({"index_type": "DISKANN"}, "unknown index type"),
    "multivector with l2": ({"column": "mv"}, "multivector column.*cosine metric only.*--metric cosine"),
    "multivector with dot": ({"column": "mv", "index_type": "IVF_HNSW_PQ", "metric": "dot"}, "--metric cosine, not dot"),
    "HNSW m below 4": ({"index_type": "IVF_HNSW_SQ", "m": 2}, "--m 2 is below what Lance's HNSW accepts"),
    "HNSW ef_construction below m": ({"index_type": "IVF_HNSW_FLAT", "m": 200}, "--ef-construction 150 \\(the default\\) is below --m 200"),
    "HNSW max_level 0": ({"index_type": "IVF_HNSW_PQ", "max_level": 0}, "--max-level 0 is outside"),
    "HNSW flag on IVF_PQ": ({"index_type": "IVF_PQ", "m": 16}, "--m applies to IVF_HNSW_FLAT, IVF_HNSW_SQ, IVF_HNSW_PQ, not to IVF_PQ"),
    "num_bits on IVF_SQ (Lance ignores it: SQ is 8-bit)": ({"index_type": "IVF_SQ", "num_bits": 4}, "--num-bits applies to IVF_RQ, not to IVF_SQ"),
    "BTREE on a list column": ({"index_type": "BTREE", "column": "ragged"}, "has type list<item: float>; BTREE indexes numbers"),
    "LABEL_LIST on an integer column": ({"index_type": "LABEL_LIST", "column": "id"}, "LABEL_LIST indexes lists of"),
    "NGRAM on an integer column": ({"index_type": "NGRAM", "column": "id"}, "NGRAM indexes strings"),
    "INVERTED on an integer column": ({"index_type": "INVERTED", "column": "id"}, "INVERTED indexes strings or lists of strings"),
    "BLOOMFILTER on a struct": ({"index_type": "BLOOMFILTER", "column": "meta"}, "has type struct<x: int64>; BLOOMFILTER indexes integers"),
    "vector flag on BTREE": ({"index_type": "BTREE", "column": "id", "num_partitions": 8}, "--num-partitions applies to vector indexes, not to BTREE"),
    "metric on BITMAP": ({"index_type": "BITMAP", "column": "id", "metric": "cosine"}, "--metric applies to vector indexes"),
    "target-recall on a scalar index": ({"index_type": "ZONEMAP", "column": "id", "target_recall": 0.9}, "--target-recall applies to vector indexes"),
    "tokenizer option on BTREE": ({"index_type": "BTREE", "column": "id", "text_options": {"with_position": True}}, "--with-position applies to INVERTED, not to BTREE"),
    "a tokenizer Lance does not have": ({"index_type": "INVERTED", "column": "title", "text_options": {"base_tokenizer": "bogus"}},
                                        "Lance refuses the INVERTED options.*unknown base tokenizer bogus"),
    "a posting block size Lance refuses": ({"index_type": "INVERTED", "column": "title", "text_options": {"block_size": 100}}, "block_size must be one of 128 or 256"),
    "BLOOMFILTER on float16 (Lance's list has no Float16)": ({"index_type": "BLOOMFILTER", "column": "half"}, "BLOOMFILTER indexes integers, float32, float64"),
    "a large_list multivector (Lance indexes list only)": ({"column": "lmv", "metric": "cosine"}, "needs a fixed-size list of floats"),
    "a second scalar index serving the same filters": ({"index_type": "BITMAP", "column": "title"},
                                                      "already has the BTree index 'title_btree'; Lance serves a column's filters with its oldest scalar index only, so a BITMAP index"),
    "sub-vectors on IVF_HNSW_SQ": ({"index_type": "IVF_HNSW_SQ", "num_sub_vectors": 4}, "--num-sub-vectors applies to IVF_PQ, IVF_HNSW_PQ"),
    "unknown metric": ({"metric": "hamming"}, "unknown metric"),
    "PQ sub-vectors": ({"index_type": "IVF_PQ", "num_sub_vectors": 5}, "does not divide"),
    "index name taken": ({"column": "v12", "index_type": "IVF_FLAT", "index_name": "taken"}, "already exists.*--replace"),
    "replace an index of that name on another column": (
        {"index_name": "taken", "replace": True}, "already exists on column 'v12'.*another --index-name"),
    "second vector index on the column": (
        {"column": "v12", "index_type": "IVF_FLAT"},
        "column 'v12' already has the vector index 'taken'.*--replace --index-name taken"),
    "no such version": ({"version": 99}, "no version 99|cannot open"),
    "version 0": ({"version": 0}, "is not a dataset version"),
    "min-recall that nothing measures": ({"min_recall": 0.9, "verify_queries": 0}, "--min-recall needs a recall check"),
    "job dir inside the dataset": ({"job_dir": "{uri}/_state"}, "inside the dataset"),
    "job dir is the dataset": ({"job_dir": "{uri}"}, "is the dataset"),
    "target-recall that nothing measures": ({"target_recall": 0.9, "verify_queries": 0}, "--target-recall needs a recall check"),
    "target-recall above 1": ({"target_recall": 1.5}, "--target-recall must be above 0 and at most 1"),
    "update: no index of that name": ({"mode": "update"}, "no index named 'vector_idx'.*build it first"),
    "update: the index is on another column": ({"mode": "update", "index_name": "taken"}, "is on column 'v12', not 'vector'"),
    "update: with --version": ({"mode": "update", "version": 1}, "drop --version"),
    "update: segment ratio 0": ({"mode": "update", "segment_ratio": 0}, "--segment-ratio must be a positive integer"),
    "unknown trainer": ({"trainer": "gpu"}, "unknown trainer 'gpu': use one of auto, lance, distributed"),
    "merge memory 0": ({"merge_memory": 0}, "--merge-memory must be a positive integer"),
    "sample bytes 0": ({"max_sample_bytes": 0}, "--max-sample-bytes must be a positive integer"),
    "trainer on a scalar index": ({"index_type": "BTREE", "column": "id", "trainer": "distributed"},
                                  "--trainer applies to vector indexes, not to BTREE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_spark_and_untouched(spark, odd_dataset, case):
    overrides, message = CASES[case]
    overrides = {k: v.format(uri=odd_dataset) if isinstance(v, str) else v for k, v in overrides.items()}
    before, jobs = dataset_state(odd_dataset), spark_job_count(spark)
    # Built without make_config's checks, so that run() itself must refuse, before Spark.
    config = BuildConfig.of(**{"uri": odd_dataset, "column": "vector", **overrides})
    with pytest.raises(InputError, match=message) as err:
        run(config, spark=spark)
    assert "\n" not in str(err.value)
    assert spark_job_count(spark) == jobs
    assert dataset_state(odd_dataset) == before
    assert not os.path.exists(odd_dataset + ".index-jobs")  # no job state was written either


@pytest.mark.parametrize("case", ["num_bits 0", "num_bits 10", "unknown index type", "unknown metric",
                                  "version 0", "min-recall that nothing measures"])
def test_make_config_refuses_bad_parameters_too(odd_dataset, case):
    overrides, message = CASES[case]
    with pytest.raises(InputError, match=message):
        make_config({}, {"uri": odd_dataset, "column": "vector", **overrides})


def test_missing_dataset(spark, tmp_path):
    jobs = spark_job_count(spark)
    with pytest.raises(InputError, match="cannot open a Lance dataset") as err:
        run(make_config({}, {"uri": str(tmp_path / "absent"), "column": "vector"}), spark=spark)
    assert "\n" not in str(err.value)
    assert spark_job_count(spark) == jobs
    assert not (tmp_path / "absent").exists()


def test_empty_dataset(spark, tmp_path):
    uri = str(tmp_path / "empty")
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), 16))])
    lance.write_dataset(schema.empty_table(), uri)
    before, jobs = dataset_state(uri), spark_job_count(spark)
    with pytest.raises(InputError, match="has no rows"):
        run(make_config({}, {"uri": uri, "column": "vector"}), spark=spark)
    assert spark_job_count(spark) == jobs
    assert dataset_state(uri) == before


def test_cli_prints_one_line_and_exits_2(odd_dataset, capsys):
    before = dataset_state(odd_dataset)
    code = main(["build", "--uri", odd_dataset, "--column", "v12", "--master", "local[1]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("spark-lance-index: error: IVF_RQ needs a dimension divisible by 8")
    assert not any("Traceback" in line for line in err)
    assert dataset_state(odd_dataset) == before


def test_cli_rejects_unknown_index_type(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build", "--uri", "/x", "--column", "v", "--index-type", "HNSW"])
    assert exit_.value.code == 2
    assert "invalid choice: 'HNSW'" in capsys.readouterr().err


@pytest.mark.parametrize("shape, message", [
    ((10, 12), r"shape \(10, 12\); it needs \(queries, 16\)"),
    (None, "cannot read --query-file"),
])
def test_bad_query_file_refused_before_spark(spark, odd_dataset, tmp_path, shape, message):
    path = tmp_path / "queries.npy"
    if shape is not None:
        np.save(path, np.zeros(shape, np.float32))
    before, jobs = dataset_state(odd_dataset), spark_job_count(spark)
    with pytest.raises(InputError, match=message) as err:
        run(make_config({}, {"uri": odd_dataset, "column": "vector", "query_file": str(path)}), spark=spark)
    assert "\n" not in str(err.value)
    assert spark_job_count(spark) == jobs
    assert dataset_state(odd_dataset) == before
