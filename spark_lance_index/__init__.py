"""Build Lance IVF vector indexes across a Spark cluster.

The pipeline, one module per phase:
    resume.py    inspect  the job's identity and state, what to resume (driver)
    dataset.py   inspect  pin a version, check the inputs          (driver)
    index_types.py        each index type: defaults, what it trains, how a segment is built, whether segments merge
    plan.py      plan     balanced groups of contiguous fragments  (driver)
    train.py     train    centroids, PQ codebook, RaBitQ rotation  (driver)
    build.py     build    one uncommitted segment per group        (executors)
    commit.py    check, merge, commit, verify                      (driver)
    pipeline.py  run(config): the phases in order
    state.py     the job directory: plan, artifacts, markers, lease
    spark.py     the thin Spark layer: session, broadcast, map, collect
    cli.py       flags and TOML into one BuildConfig
"""

import os

# Index statistics carry every centroid unless told otherwise (and warn about it); the job
# reads statistics only to check coverage.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

__version__ = "0.1.0"
