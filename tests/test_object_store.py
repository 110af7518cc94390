"""Datasets, job directories and reports on S3: a moto server on 127.0.0.1 started by the test."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import jsonschema
import lance
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from conftest import fsl, spark_job_count

from spark_lance_index.cli import main
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.errors import InputError
from spark_lance_index.pipeline import run
from spark_lance_index.report import report_schema
from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

SECRET = "s3cr3t-never-in-logs"
KEY_ID = "AKIAEXAMPLEKEYID"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(tmp_path, **env):
    port = free_port()
    log = open(tmp_path / f"moto-{port}.log", "wb")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True,
    )
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)
    return proc, port


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint with a bucket; yields (storage options, bucket)."""
    import boto3

    tmp = tmp_path_factory.mktemp("moto")
    proc, port = start_moto(tmp)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket="vectors")
    options = {"aws_endpoint": endpoint, "allow_http": "true", "aws_access_key_id": KEY_ID,
               "aws_secret_access_key": SECRET, "aws_region": "us-east-1"}
    yield options, "vectors"
    stop(proc)


def flags(options):
    return [arg for k, v in options.items() for arg in ("--storage-option", f"{k}={v}")]


def list_keys(options, prefix):
    fs = pafs.S3FileSystem(access_key=KEY_ID, secret_key=SECRET, region="us-east-1", scheme="http",
                           endpoint_override=options["aws_endpoint"].split("://")[1])
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return fs, {i.path for i in infos}


@pytest.mark.parametrize("name", ["ds", "emb#v2.lance"])
def test_build_on_s3_with_report_on_s3(spark, s3, capsys, caplog, name):
    """`emb#v2.lance`: Lance drops the `#...` and writes the dataset at `emb`; the job's state,
    cleanup and report must use the same place (the job directory once resolved to the
    dataset itself, and deleting it would have deleted the dataset)."""
    caplog.set_level(logging.INFO, logger="spark_lance_index")  # the INFO lines are checked too
    options, bucket = s3
    uri = f"s3://{bucket}/{name}"
    where = name.split("#")[0]
    vectors = clustered_vectors(6100, 32)
    data, queries = vectors[:6000], vectors[6000:]
    for i in range(4):
        part = slice(i * 1500, (i + 1) * 1500)
        table = pa.table({"id": pa.array(range(part.start, part.stop)), "vector": fsl(data[part])})
        lance.write_dataset(table, uri, mode="create" if i == 0 else "append", storage_options=options)

    code = main(["build", "--uri", uri, "--column", "vector", "--num-partitions", "8",
                 "--rows-per-task", "3000", "--verify-queries", "20",
                 "--report", f"s3://{bucket}/reports/{where}.json", *flags(options)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    everything = captured.out + captured.err + caplog.text
    assert "report written to" in caplog.text  # the INFO lines really were captured
    assert SECRET not in everything and KEY_ID not in everything

    ds = lance.dataset(uri, storage_options=options)
    stats = ds.stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], len(stats["segments"])) == (6000, 1)
    truth = exact_topk(data, queries, 10)
    assert recall_at_k(truth, ann_topk(ds, "vector", queries, 10, 4, 10)) > 0.8

    fs, keys = list_keys(options, f"{bucket}/")
    report_text = fs.open_input_stream(f"{bucket}/reports/{where}.json").read().decode()
    assert SECRET not in report_text and KEY_ID not in report_text
    report = json.loads(report_text)
    jsonschema.validate(report, report_schema())
    assert report["outcome"] == "succeeded" and report["counts"]["rows_indexed"] == 6000
    # the job directory was on S3 too, and is gone; only the committed segment is left
    assert not any(k.startswith(f"{bucket}/{where}.index-jobs/") for k in keys)
    segment_dirs = {k.split("/")[3] for k in keys if k.startswith(f"{bucket}/{where}/_indices/")}
    assert segment_dirs == {stats["segments"][0]["uuid"]}


@pytest.mark.parametrize("case", ["wrong bucket", "wrong endpoint"])
def test_bad_object_store_settings_fail_fast_without_secrets(spark, s3, case):
    options, bucket = s3
    uri = f"s3://{bucket}/ds"
    if case == "wrong bucket":
        uri = "s3://no-such-bucket/ds"
    else:
        options = {**options, "aws_endpoint": f"http://127.0.0.1:{free_port()}", "client_max_retries": "0"}
    jobs, start = spark_job_count(spark), time.monotonic()
    with pytest.raises(InputError, match="cannot open a Lance dataset") as err:
        run(make_config({}, {"uri": uri, "column": "vector", "storage_options": options}), spark=spark)
    assert time.monotonic() - start < 60
    assert spark_job_count(spark) == jobs
    print(err.value)
    assert SECRET not in str(err.value) and "\n" not in str(err.value)


def test_bad_credentials_fail_fast_without_secrets(spark, tmp_path):
    # This server checks credentials: moto accepts any by default.
    proc, port = start_moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        options = {"aws_endpoint": f"http://127.0.0.1:{port}", "allow_http": "true",
                   "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET, "aws_region": "us-east-1"}
        jobs = spark_job_count(spark)
        with pytest.raises(InputError, match="cannot open a Lance dataset.*(InvalidAccessKeyId|403)") as err:
            run(make_config({}, {"uri": "s3://vectors/ds", "column": "vector", "storage_options": options}),
                spark=spark)
        assert spark_job_count(spark) == jobs
        print(err.value)
        assert SECRET not in str(err.value)
    finally:
        stop(proc)
