"""The build job, phase by phase: inspect, plan, train, build, check, commit, verify, clean up.

`run(config)` is the one entry point the CLI, spark-submit and Databricks call. Each phase is a
function of its own, timed by `@phase`; the Spark-specific ones only hand work to `spark.py`.
The job directory (`state.py`) makes a rerun of the same command resume where a dead driver
stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from typing import Optional, Sequence

import numpy as np

from . import spark as spark_layer
from .build import SegmentResult, SegmentTask, run_task
from .commit import (
    CommitReport, MergeTask, check_segments, commit_segments, merge_batches, remove_leftovers,
    verify_commit,
)
from .config import BuildConfig
from .dataset import DatasetSnapshot, IndexParams, open_dataset, resolve_params, snapshot_dataset
from .errors import DatasetChangedError, JobError, SparkStageError
from .plan import FragmentGroup, default_rows_per_task, plan_groups
from .report import JobResult, reporting, settings_of
from .state import JobState, default_job_dir
from .storage import index_dirs
from .timing import PhaseClock, phase
from .train import SharedArtifacts, train_artifacts
from .verify_job import load_queries, measure_recall

log = logging.getLogger("spark_lance_index")

_BYTES = {"float16": 2, "float32": 4, "float64": 8}


def make_job_id(snap: DatasetSnapshot, config: BuildConfig, params: IndexParams) -> str:
    """Stable for the same dataset version, index and parameters: a rerun finds its state."""
    key = json.dumps(
        [snap.uri, snap.version, snap.column, config.name, asdict(params)], sort_keys=True
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@phase("inspect")
def inspect_inputs(config: BuildConfig) -> tuple[DatasetSnapshot, IndexParams, Optional[np.ndarray]]:
    """Pin the dataset version and check every input; raises InputError, writes nothing."""
    config.validate()
    snap = snapshot_dataset(config)
    params = resolve_params(config, snap)
    queries = load_queries(config, snap.dim)
    log.info(
        "dataset %s version %d: %d rows in %d fragments, column %r %s[%d]",
        snap.uri, snap.version, snap.num_rows, len(snap.fragments), snap.column,
        snap.value_type, snap.dim,
    )
    return snap, params, queries


@phase("spark start")
def start_session(config: BuildConfig):
    """Create the Spark session (only when none is active). -> (session, created)"""
    return spark_layer.get_session(config.master, config.app_name, config.verbose)


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
    log.info("shared artifacts: %s", artifacts.describe())
    return artifacts


def prepare(config, snap, params, state: JobState, job_id: str, parallelism: int):
    """Plan and train, or take both from an earlier run of the same job. -> (groups, artifacts)"""
    if state.exists():
        try:
            _, groups, artifacts = state.load_job()
        except (ValueError, KeyError, OSError) as e:
            raise JobError(
                f"the job directory {state.uri} is damaged ({e}): delete it to start afresh"
            ) from None
        log.info(
            "resuming job %s from %s: reusing its plan (%d tasks) and artifacts (%s)",
            job_id, state.uri, len(groups), artifacts.describe(),
        )
        return groups, artifacts
    groups = plan(config, snap, parallelism)
    artifacts = train(config, snap, params)
    job = {"job_id": job_id, "uri": snap.uri, "version": snap.version, "column": snap.column,
           "index_name": config.name, "params": asdict(params)}
    state.save_job(job, groups, artifacts)
    return groups, artifacts


def reusable_segments(snap, config, state: JobState, groups, expected) -> dict[int, SegmentResult]:
    """Segments an earlier run finished that fit this plan and these artifacts, by group."""
    planned = {g.group_id: g for g in groups}
    indices = index_dirs(snap.uri, config.storage_options)
    return {
        gid: r
        for gid, r in state.finished_segments().items()
        if gid in planned
        and tuple(r.fragment_ids) == planned[gid].fragment_ids
        and dict(r.fingerprints) == expected
        and indices.exists(f"{r.index_uuid}/index.idx")
    }


def make_tasks(
    config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
    groups: Sequence[FragmentGroup], job_id: str,
) -> list[SegmentTask]:
    return [
        SegmentTask(
            uri=snap.uri, version=snap.version, column=snap.column, index_name=config.name,
            params=params, group=g, job_id=job_id, replace=config.replace,
            storage_options=dict(config.storage_options),
            lance_log="info" if config.verbose else "error",
        )
        for g in groups
    ]


@phase("build")
def build(spark, tasks, artifacts, state, job_id, task_fn=run_task, progress_interval=30.0) -> list[SegmentResult]:
    """Build one uncommitted segment per task on the executors."""
    if not tasks:
        return []
    with spark_layer.job_group(
        spark, f"spark-lance-index-{job_id}-build",
        f"spark-lance-index: build {len(tasks)} index segments",
    ):
        try:
            results = spark_layer.run_segment_builds(spark, tasks, artifacts, state, task_fn, progress_interval)
        except Exception as e:  # a task failed more often than Spark retries it
            raise SparkStageError(
                f"segment builds failed after Spark's retries: {spark_layer.failure_reason(e)}; "
                "nothing was committed (the executor logs have the full trace)"
            ) from e
    took = sorted(r.seconds for r in results)
    log.info(
        "built %d segments; task seconds min %.1f median %.1f max %.1f",
        len(results), took[0], took[len(took) // 2], took[-1],
    )
    return results


@phase("merge")
def merge(spark, config: BuildConfig, snap: DatasetSnapshot, results, state: JobState) -> list:
    """Merge the checked segments on the executors, in batches of at most max_segment_rows.

    Never on the driver: a merge holds its whole output in memory (~100 MB per million
    128-d rows, measured), which would make driver memory grow with the table.
    """
    batches = merge_batches(results, config.max_segment_rows)
    tasks = [
        MergeTask(snap.uri, snap.version, tuple(r.segment for r in b), sum(r.num_rows for r in b),
                  dict(config.storage_options))
        for b in batches
    ]
    with spark_layer.job_group(
        spark, f"spark-lance-index-merge-{snap.version}",
        f"spark-lance-index: merge {len(results)} segments into {len(tasks)}",
    ):
        merged = spark_layer.run_merges(spark, tasks, state)
    log.info("merged %d segments into %d", len(results), len(merged))
    return merged


@phase("commit")
def commit(config: BuildConfig, snap: DatasetSnapshot, groups, merged: Sequence):
    """Commit the merged segments in one commit on the latest version."""
    in_plan = {f for g in groups for f in g.fragment_ids}
    planned = [f for f in snap.fragments if f.fragment_id in in_plan]
    return commit_segments(
        lambda: open_dataset(snap.uri, config.storage_options), config.name, snap.column,
        merged, planned, snap.version,
    )


@phase("verify")
def verify(config, params, groups, committed_ds, merged, artifacts) -> CommitReport:
    """Read the committed index back: right type, our segments, exactly the planned rows."""
    return verify_commit(
        committed_ds, config.name, params.index_type, [str(m.uuid) for m in merged],
        planned_rows=sum(g.num_rows for g in groups),
        planned_fragments=sum(len(g.fragment_ids) for g in groups),
        rotation_signs=artifacts.rotation_signs,
    )


@phase("cleanup")
def cleanup(config, snap, state: JobState, merged) -> int:
    """Remove our segment directories the index does not use, then the job directory."""
    removed = remove_leftovers(snap.uri, config.storage_options, state.attempts(), [str(m.uuid) for m in merged])
    state.discard()
    return len(removed)


def run(config: BuildConfig, spark=None, *, task_fn=run_task) -> JobResult:
    """Build and commit the index described by `config`. Raises JobError on a known failure.

    Inputs are checked before any Spark session is started or used. If `spark` is None an
    active session is reused, or one is created (and stopped at the end). `task_fn` is what
    each Spark task runs (tests wrap it to inject failures).
    """
    result = JobResult(job_id=None, uri=config.uri, index_name=config.name, column=config.column,
                       min_recall=config.min_recall, settings=settings_of(config))
    with reporting(config, result):
        _build(config, spark, task_fn, result)
    return result


def _build(config: BuildConfig, spark, task_fn, result: JobResult) -> None:
    started = time.perf_counter()
    with PhaseClock() as clock:
        snap, params, queries = inspect_inputs(config)
        job_id = make_job_id(snap, config, params)
        result.job_id, result.pinned_version, result.params = job_id, snap.version, params
        state = JobState(config.job_dir or default_job_dir(snap.uri, job_id), config.storage_options)
        created = False
        if spark is None:
            spark, created = start_session(config)
        try:
            result.spark_app_id, result.spark_master = spark_layer.application_id(spark), spark_layer.master(spark)
            parallelism = spark_layer.default_parallelism(spark)
            groups, artifacts = prepare(config, snap, params, state, job_id, parallelism)
            expected = result.fingerprints = artifacts.fingerprints()
            result.artifacts, result.job_dir = artifacts, state.uri
            reused = reusable_segments(snap, config, state, groups, expected)
            if reused:
                log.info("reusing %d finished segments; %d to build", len(reused), len(groups) - len(reused))
            todo = [t for t in make_tasks(config, snap, params, groups, job_id) if t.group.group_id not in reused]
            built = build(spark, todo, artifacts, state, job_id, task_fn, config.progress_interval)
            results = check_segments(groups, [*reused.values(), *built], expected)
            merged = merge(spark, config, snap, results, state)
            committed_ds = commit(config, snap, groups, merged)
            report = verify(config, params, groups, committed_ds, merged, artifacts)
            result.committed_version, result.num_rows = report.version, report.num_indexed_rows
            result.num_fragments, result.num_tasks, result.num_segments = report.num_indexed_fragments, len(groups), len(results)
            result.segments_reused, result.segments_built = len(reused), len(built)
            result.segments_committed = len(merged)
            result.unindexed_rows, result.unindexed_fragments = report.num_unindexed_rows, report.num_unindexed_fragments
            result.leftovers_removed = cleanup(config, snap, state, merged)
            if config.verify_queries or queries is not None:
                result.recall = measure_recall(spark, config, snap.uri, report.version, snap.column,
                                               params.metric, params.index_type, queries, parallelism)
        except DatasetChangedError:
            # The segments index fragments that no longer exist: nothing to resume.
            remove_leftovers(snap.uri, config.storage_options, state.attempts(), keep=[])
            state.discard()
            raise
        except JobError as e:
            if state.exists():
                e.args = (
                    f"{e} [job state kept in {state.uri}: rerun the same command to resume, "
                    f"or delete that directory to start afresh]",
                )
            raise
        finally:
            clock.seconds["total"] = time.perf_counter() - started
            result.seconds = dict(clock.seconds)
            if created:
                spark.stop()
