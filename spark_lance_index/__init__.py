"""Build and update Lance indexes (vector, multivector, scalar, full-text) across a Spark cluster.

Entry points:
    cli.py          the `spark-lance-index` command: flags and TOML into one BuildConfig
    pipeline.py     run(config): the build and update pipelines, each a list of phases
    discard.py, doctor.py, demo.py   the other subcommands

The phases (phases.py calls them in this order):
    resume.py, dataset.py   inspect: the job's identity, what to resume, a pinned version, the inputs
    plan.py                 plan: balanced groups of fragments, one task each
    train.py, kmeans.py     train: centroids, PQ codebook, RaBitQ rotation (driver or executors)
    build.py, assign.py     build: one uncommitted segment per task (executors, no Spark)
    commit.py               check, merge, commit, read back
    cleanup.py              clean up: only what the job wrote and no version uses
    checks.py               the recall check (exact_search.py, query_settings.py) and the
                            filter check of scalar indexes (index_check.py)
    update.py, update_job.py, index_model.py   what an update encodes, with the index's own model

Beside them:
    config.py, index_types.py   the settings; each index type in one place
    state.py, lease.py          the job directory; one run of a job at a time
    storage.py                  local disk and object stores behind one Files
    spark.py, transport.py      the session; the only code that runs things on the cluster
    report.py, progress.py, timing.py, errors.py, preflight.py, resources.py
    recall.py                   recall@k and the clustered data of the demo and the benchmarks
"""

import os

# Index statistics carry every centroid unless told otherwise (and warn about it); the job
# reads statistics only to check coverage.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

__version__ = "0.1.0"
