"""Run the whole job against a local Spark Connect session (a subprocess of the tests).

python connect_job.py URI: prints the summary, then "CONNECT" if the session really was a
Connect session. The local server listens on Spark Connect's default port, 15002.
"""

import os
import sys

import numpy as np

os.environ["PYSPARK_PYTHON"] = sys.executable  # Connect's local server ignores the conf key

from pyspark.sql import SparkSession

from spark_lance_index import spark as spark_layer
from spark_lance_index import transport
from spark_lance_index.config import make_config
from spark_lance_index.pipeline import run

# Centroids and artifacts go through the job directory, as large ones do on a real cluster
# (Connect's plan is one message); count how many values took that way.
transport.INLINE_SHARED_BYTES = 1024
through_files = []
_share = transport.ConnectTransport._share


def counting_share(self, shared):
    handle = _share(self, shared)
    through_files.append(handle.files is not None)
    return handle


transport.ConnectTransport._share = counting_share

uri = sys.argv[1]
spark = SparkSession.builder.remote("local[2]").getOrCreate()
config = make_config({}, {"uri": uri, "column": "vector", "num_partitions": 16, "rows_per_task": 2000,
                          "query_file": uri + ".queries.npy", "nprobes": (4,), "refine_factor": (0, 10),
                          "trainer": "distributed"})
result = run(config, spark=spark)
print(result.summary())
print(f"best recall {max(f.recall for f in result.recall):.3f}; {sum(through_files)} values shared through files")
# a scalar index too: its segment uuids are Lance's (intent records written from the executors),
# and its check scans through the Connect path of map_reduce
scalar = run(make_config({}, {"uri": uri, "column": "id", "index_type": "BTREE", "rows_per_task": 2000}), spark=spark)
print(scalar.summary())
# the distributed trainer's second level (past 256 partitions) through Connect: one shuffle,
# each first-level cluster trained in one task (transport.group_map)
from spark_lance_index.dataset import resolve_params, snapshot_dataset  # noqa: E402
from spark_lance_index.train import train_artifacts  # noqa: E402

deep = make_config({}, {"uri": uri, "column": "vector", "num_partitions": 300, "trainer": "distributed",
                        "index_type": "IVF_FLAT"})
snap = snapshot_dataset(deep)
trained = train_artifacts(deep, snap, resolve_params(deep, snap), transport.transport_for(spark), 2)
print(f"second level through Connect: {len(trained.centroids)} centroids, "
      f"{len(np.unique(trained.centroids, axis=0))} distinct")
print("CONNECT" if spark_layer.is_connect(spark) else "CLASSIC")
spark.stop()
