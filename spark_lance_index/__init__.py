"""Build and update Lance indexes (vector, multivector, scalar, full-text) across a Spark cluster.

    import spark_lance_index as sli
    run = sli.build("/data/table.lance", "embedding", spark=spark)

Entry points:
    api.py          the Python API: build, update, verify, status, discard (this package's names)
    cli.py          the `spark-lance-index` command: flags and TOML into one BuildConfig
    pipeline.py     run(config): the build and update pipelines, each a list of phases
    index_status.py, discard_jobs.py, doctor.py, demo.py   the other subcommands (demo.py: its data too)

The phases (phases.py calls them in this order):
    resume.py, dataset.py   inspect: the job's identity, what to resume, a pinned version, the inputs
    plan.py                 plan: balanced groups of fragments, one task each
    train.py, kmeans.py     train: centroids, PQ codebook, RaBitQ rotation (driver or executors)
    segment_build.py, assign.py   build: one uncommitted segment per task (executors, no Spark)
    commit.py               check, merge, commit, read back
    cleanup.py              clean up: only what the job wrote and no version uses
    checks.py               the recall check (exact_search.py, query_settings.py) and the
                            filter check of scalar indexes (index_check.py)
    update_plan.py, update_job.py, index_model.py   what an update encodes, with the index's own model
    update_all.py           `update --uri U` alone: every index of the table in one session

Beside them:
    config.py, index_types.py   the settings in six typed groups; each index type in one place
    state.py, lease.py          the job directory; one run of a job at a time
    storage.py                  local disk and object stores behind one Files
    spark.py, transport.py      the session; the only code that runs things on the cluster
    interrupts.py, jvm_archive.py   Ctrl-C inside a Spark call; the local driver JVM's class archive
    report.py, progress.py, timing.py, errors.py, preflight.py, resources.py
    testing.py                  brute-force top-k and recall@k: the yardstick of the tests and benchmarks
"""

import os

# Index statistics carry every centroid unless told otherwise (and warn about it); the job
# reads statistics only to check coverage.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

__version__ = "0.1.0"

from .api import Run, build, discard, status, update, update_all, verify  # noqa: E402
from .errors import (  # noqa: E402
    CannotExtend,
    CommitCheckError,
    DatasetChangedError,
    IndexConflictError,
    InputError,
    JobBusyError,
    JobError,
    PreflightError,
    RecallTooLowError,
    SegmentCheckError,
    SparkStageError,
)
from .index_status import IndexStatus  # noqa: E402
from .update_all import IndexUpdate, TableUpdate  # noqa: E402

__all__ = [
    "build", "update", "update_all", "verify", "status", "discard", "Run", "IndexStatus", "TableUpdate", "IndexUpdate",
    "JobError", "InputError", "CannotExtend", "RecallTooLowError", "CommitCheckError", "DatasetChangedError",
    "IndexConflictError", "JobBusyError", "PreflightError", "SegmentCheckError", "SparkStageError", "__version__",
]
