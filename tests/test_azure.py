"""The dataset, the job directory and the report on Azure Blob Storage: Azurite, Microsoft's
emulator (installed by `make test` from npm), started on 127.0.0.1 by the test. A build that
fails part-way, its resume, and the cleanup, as the S3 tests do against a local S3 server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import jsonschema
import lance
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from conftest import fsl
from test_object_store import free_port

from spark_lance_index import pipeline
from spark_lance_index.config import make_config
from spark_lance_index.demo import clustered_vectors
from spark_lance_index.errors import SparkStageError
from spark_lance_index.report import report_schema
from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AZURITE = os.path.join(ROOT, ".azurite", "node_modules", ".bin", "azurite-blob")
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's own

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not os.path.exists(AZURITE) or shutil.which("node") is None,
                                 reason="Azurite is not installed (make test installs it from npm)")]


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    """Azurite's blob service with a container; yields (storage options, container)."""
    tmp = tmp_path_factory.mktemp("azurite")
    port = free_port()
    log = open(tmp / "azurite.log", "wb")
    proc = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(tmp),
                             "--skipApiVersionCheck", "--loose"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    fs = pafs.AzureFileSystem(account_name=ACCOUNT, account_key=KEY, blob_storage_authority=f"127.0.0.1:{port}",
                              blob_storage_scheme="http", dfs_storage_authority=f"127.0.0.1:{port}",
                              dfs_storage_scheme="http")
    deadline = time.time() + 60
    while True:
        try:
            fs.create_dir("vectors")
            break
        except Exception:
            assert proc.poll() is None and time.time() < deadline, "Azurite did not start"
            time.sleep(0.3)
    options = {"account_name": ACCOUNT, "account_key": KEY, "allow_http": "true",
               "azure_storage_endpoint": f"http://127.0.0.1:{port}/{ACCOUNT}"}
    yield options, "vectors", fs
    os.killpg(proc.pid, signal.SIGKILL)  # Azurite waits for open connections on SIGTERM
    proc.wait(timeout=20)


def keys(fs, prefix):
    return {i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
            if i.type == pafs.FileType.File}


def test_build_resume_and_cleanup_on_azure(spark, azure, caplog):
    import faults

    options, container, fs = azure
    uri = f"az://{container}/items/ds"
    vectors = clustered_vectors(4100, 32, seed=5)
    data, queries = vectors[:4000], vectors[4000:]
    lance.write_dataset(pa.table({"id": np.arange(4000), "vector": fsl(data)}), uri, max_rows_per_file=1000,
                        storage_options=options)
    # a file of the user's in the dataset's _indices: never the job's to delete
    with fs.open_output_stream(f"{container}/items/ds/_indices/users-notes/readme.txt") as f:
        f.write(b"not the job's")
    version = lance.dataset(uri, storage_options=options).version
    config = make_config({}, {"uri": uri, "column": "vector", "num_partitions": 8, "rows_per_task": 1000,
                              "verify_queries": 20, "storage_options": options,
                              "report": f"az://{container}/reports/items.json"})

    faults.ship()
    with pytest.raises(SparkStageError):  # the last task fails every attempt, after the others built
        pipeline.run(config, spark=spark, task_fn=faults.always_fail(3, delay=3))
    assert lance.dataset(uri, storage_options=options).version == version  # nothing committed
    recorded = [k for k in keys(fs, f"{container}/items/ds.index-jobs") if "/segments/" in k and k.endswith(".json")]
    assert len(recorded) >= 2, recorded  # the job's state is on Azure, beside the dataset

    result = pipeline.run(config, spark=spark)  # the same command again: it resumes
    assert result.outcome == "succeeded" and result.segments_reused >= 2
    ds = lance.dataset(uri, storage_options=options)
    stats = ds.stats.index_stats("vector_idx")
    assert (stats["num_indexed_rows"], stats["num_unindexed_rows"], len(stats["segments"])) == (4000, 0, 1)
    truth = exact_topk(data, queries, 10)
    assert recall_at_k(truth, ann_topk(ds, "vector", queries, 10, 4, 10)) > 0.8

    report = json.loads(fs.open_input_stream(f"{container}/reports/items.json").read())
    jsonschema.validate(report, report_schema())
    assert report["outcome"] == "succeeded" and report["counts"]["segments_reused"] >= 2
    assert KEY not in json.dumps(report) and KEY not in caplog.text
    # cleaned up: the job directory is gone, _indices holds the committed segment and the user's file
    assert keys(fs, f"{container}/items/ds.index-jobs") == set()
    left = {k.split("/")[4] for k in keys(fs, f"{container}/items/ds/_indices")}
    assert left == {stats["segments"][0]["uuid"], "users-notes"}
