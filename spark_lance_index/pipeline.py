"""The build job, phase by phase: inspect, plan, train, build, check, commit, verify.

`run(config)` is the one entry point the CLI, spark-submit and Databricks call. Each phase is a
function of its own, timed by `@phase`; the Spark-specific ones only hand work to `spark.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from . import spark as spark_layer
from .build import SegmentResult, SegmentTask, segment_uuid
from .commit import CommitReport, check_segments, merge_and_commit, short, verify_commit
from .config import BuildConfig
from .dataset import DatasetSnapshot, IndexParams, open_dataset, resolve_params, snapshot_dataset
from .plan import FragmentGroup, default_rows_per_task, plan_groups
from .timing import PhaseClock, phase
from .train import SharedArtifacts, train_artifacts

log = logging.getLogger("spark_lance_index")

_BYTES = {"float16": 2, "float32": 4, "float64": 8}


@dataclass
class JobResult:
    """What one run did: the summary a user reads, and the values tests check."""

    job_id: str
    uri: str
    index_name: str
    pinned_version: int
    committed_version: int
    params: IndexParams
    num_rows: int
    num_fragments: int
    num_tasks: int
    num_segments: int
    fingerprints: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    unindexed_rows: int = 0
    spark_app_id: Optional[str] = None
    artifacts: Optional[SharedArtifacts] = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("artifacts")
        return out

    def summary(self) -> str:
        p = self.params
        lines = [
            f"index {self.index_name!r} ({p.index_type}, {p.metric}, {p.num_partitions} partitions"
            + (f", {p.num_bits} bit" if p.index_type == "IVF_RQ" else "")
            + (f", {p.num_sub_vectors} sub-vectors" if p.index_type == "IVF_PQ" else "")
            + f") committed on {self.uri} at version {self.committed_version}",
            f"  rows indexed {self.num_rows:,} in {self.num_fragments} fragments "
            f"(pinned version {self.pinned_version}); {self.num_tasks} tasks, "
            f"{self.num_segments} segments merged into 1",
        ]
        if self.unindexed_rows:
            lines.append(f"  rows added since the pinned version, not yet indexed: {self.unindexed_rows:,}")
        lines.append(
            "  artifacts: " + ", ".join(f"{k} {short(v)}" for k, v in sorted(self.fingerprints.items()))
        )
        lines.append(
            "  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        )
        return "\n".join(lines)


def make_job_id(snap: DatasetSnapshot, config: BuildConfig, params: IndexParams) -> str:
    """Stable for the same dataset version, index and parameters."""
    key = json.dumps(
        [snap.uri, snap.version, snap.column, config.name, asdict(params)], sort_keys=True
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@phase("inspect")
def inspect_inputs(config: BuildConfig) -> tuple[DatasetSnapshot, IndexParams]:
    """Pin the dataset version and check every input; raises InputError, writes nothing."""
    config.validate()
    snap = snapshot_dataset(config)
    params = resolve_params(config, snap)
    log.info(
        "dataset %s version %d: %d rows in %d fragments, column %r %s[%d]",
        snap.uri, snap.version, snap.num_rows, len(snap.fragments), snap.column,
        snap.value_type, snap.dim,
    )
    return snap, params


@phase("plan")
def plan(config: BuildConfig, snap: DatasetSnapshot, parallelism: int) -> tuple[FragmentGroup, ...]:
    """Group the pinned fragments into balanced tasks."""
    rows_per_task = config.rows_per_task
    if not rows_per_task and not config.fragments_per_task:
        rows_per_task = default_rows_per_task(
            snap.num_rows, snap.dim * _BYTES[snap.value_type], parallelism
        )
    live = [f for f in snap.fragments if f.num_rows > 0]
    groups = plan_groups(live, rows_per_task=rows_per_task, fragments_per_task=config.fragments_per_task)
    sizes = [g.num_rows for g in groups]
    log.info(
        "planned %d tasks over %d fragments: %d to %d rows each",
        len(groups), len(live), min(sizes), max(sizes),
    )
    return groups


@phase("train")
def train(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams) -> SharedArtifacts:
    """Train the shared artifacts once on the driver from a bounded sample."""
    artifacts = train_artifacts(config, snap, params)
    log.info(
        "shared artifacts: %s",
        ", ".join(f"{k} {short(v)}" for k, v in sorted(artifacts.fingerprints().items())),
    )
    return artifacts


def make_tasks(
    config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
    groups: Sequence[FragmentGroup], job_id: str,
) -> list[SegmentTask]:
    return [
        SegmentTask(
            uri=snap.uri, version=snap.version, column=snap.column, index_name=config.name,
            params=params, group=g, index_uuid=segment_uuid(job_id, g), replace=config.replace,
            storage_options=dict(config.storage_options),
        )
        for g in groups
    ]


@phase("build")
def build(spark, tasks: Sequence[SegmentTask], artifacts: SharedArtifacts, job_id: str) -> list[SegmentResult]:
    """Build one uncommitted segment per task on the executors."""
    with spark_layer.job_group(
        spark, f"spark-lance-index-{job_id}-build",
        f"spark-lance-index: build {len(tasks)} index segments",
    ):
        results = spark_layer.run_segment_builds(spark, tasks, artifacts)
    took = sorted(r.seconds for r in results)
    log.info(
        "built %d segments; task seconds min %.1f median %.1f max %.1f",
        len(results), took[0], took[len(took) // 2], took[-1],
    )
    return results


@phase("commit")
def commit(config: BuildConfig, snap: DatasetSnapshot, results: Sequence[SegmentResult]):
    """Merge the checked segments into one and commit it."""
    ds = open_dataset(snap.uri, config.storage_options, snap.version)
    return merge_and_commit(ds, config.name, snap.column, results)


@phase("verify")
def verify(config, snap, params, groups, committed_ds, merged, artifacts) -> CommitReport:
    """Read the committed index back: right type, one segment, exactly the planned rows."""
    report = verify_commit(
        committed_ds, config.name, params.index_type, str(merged.uuid),
        planned_rows=sum(g.num_rows for g in groups),
        planned_fragments=sum(len(g.fragment_ids) for g in groups),
        rotation_signs=artifacts.rotation_signs,
    )
    return report


def run(config: BuildConfig, spark=None) -> JobResult:
    """Build and commit the index described by `config`. Raises JobError on a known failure.

    Inputs are checked before any Spark session is started or used. If `spark` is None an
    active session is reused, or one is created (and stopped at the end).
    """
    started = time.perf_counter()
    with PhaseClock() as clock:
        snap, params = inspect_inputs(config)
        created = False
        if spark is None:
            spark, created = spark_layer.get_session(config.master, config.app_name, config.verbose)
        try:
            groups = plan(config, snap, spark_layer.default_parallelism(spark))
            job_id = make_job_id(snap, config, params)
            artifacts = train(config, snap, params)
            expected = artifacts.fingerprints()
            results = build(spark, make_tasks(config, snap, params, groups, job_id), artifacts, job_id)
            results = check_segments(groups, results, expected)
            committed_ds, merged = commit(config, snap, results)
            report = verify(config, snap, params, groups, committed_ds, merged, artifacts)
            app_id = _app_id(spark)
        finally:
            if created:
                spark.stop()
    clock.seconds["total"] = time.perf_counter() - started
    return JobResult(
        job_id=job_id, uri=snap.uri, index_name=config.name, pinned_version=snap.version,
        committed_version=report.version, params=params, num_rows=report.num_indexed_rows,
        num_fragments=report.num_indexed_fragments, num_tasks=len(groups),
        num_segments=len(results), fingerprints=expected, seconds=dict(clock.seconds),
        unindexed_rows=report.num_unindexed_rows, spark_app_id=app_id, artifacts=artifacts,
    )


def _app_id(spark) -> Optional[str]:
    try:
        return spark.sparkContext.applicationId
    except Exception:
        return None
