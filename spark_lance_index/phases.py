"""The phases of the build and update pipelines (pipeline.py runs them in order).

Each phase is a function of its own, timed by `@phase` under the name the JSON report gives it;
the Spark-specific ones only hand work to `spark.py` and `transport.py`. In run order:
start_session and preflight (the driver's Spark), prepare (plan and train, or resume an earlier
run's plan and artifacts), build (one uncommitted segment per task on the executors), merge,
commit, read_back (the committed index read back and checked against the plan).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Optional

from . import interrupts
from . import spark as spark_layer
from .cleanup import discard_own_work
from .commit import (
    CommitReport,
    MergeTask,
    build_conflict,
    check_segments,
    commit_segments,
    merge_batches,
    merge_segments,
    read_back_index,
)
from .config import BuildConfig
from .dataset import (
    DatasetSnapshot,
    FragmentInfo,
    IndexParams,
    fragment_infos,
    fragment_signature,
    index_infos,
    open_dataset,
)
from .errors import JobBusyError, JobError, SparkStageError
from .index_model import committed_model_mismatch
from .lease import Lease
from .plan import (
    MANY_SEGMENTS,
    FragmentGroup,
    default_rows_per_task,
    max_segment_rows,
    plan_groups,
    segment_rows_origin,
    unmerged_rows_per_task,
)
from .preflight import require_driver_libraries
from .report import JobResult
from .resume import Inspection
from .segment_build import SegmentResult, SegmentTask, run_task
from .state import JobState
from .storage import index_dirs
from .timing import phase, record_seconds
from .train import SharedArtifacts, TrainingInBackground, train_artifacts
from .transport import Transport, task_attempt, transport_for
from .update_plan import index_changed, pinned_segments

log = logging.getLogger("spark_lance_index")

Spark = Any  # a SparkSession, classic or Connect
TaskFn = Callable[[SegmentTask, SharedArtifacts, JobState, int], SegmentResult]  # what a build task runs

@phase("spark start")
def start_session(config: BuildConfig, task_bytes: int = 0) -> tuple[Spark, bool]:
    """Create the Spark session (only when none is active). -> (session, created)"""
    return spark_layer.get_session(config.runtime.master, config.runtime.app_name, config.runtime.verbose, task_bytes)


@phase("preflight")
def preflight(spark: Spark, result: JobResult, task_bytes: int = 0) -> None:
    """Before any training: every executor imports this job's libraries, at the driver's versions,
    and the executors' memory settings can hold the job's tasks (a warning if not)."""
    with spark_layer.job_group(spark, "spark-lance-index-preflight", "spark-lance-index: executors' libraries"):
        try:
            executors = spark_layer.run_preflight(spark)
        except Exception as e:
            raise SparkStageError(f"the preflight task failed on the executors: {spark_layer.failure_reason(e)}") from e
    result.executors = [f"{v.host.rsplit(':', 1)[0]}: {v.describe()}" for v in executors]
    driver = require_driver_libraries(executors)
    log.info("preflight: %d executor processes, all with %s", len(executors), driver.describe())
    advice = spark_layer.executor_memory_advice(spark, task_bytes)
    if advice:
        log.warning("preflight: %s", advice)


@phase("plan")
def plan(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams, live: Sequence[FragmentInfo],
         parallelism: int) -> tuple[FragmentGroup, ...]:
    """Group the fragments to index (`live`, at the pinned version) into balanced tasks.

    Segments of a type that merges are merged later, so tasks are sized for parallel work.
    Segments of a type that does not (SQ, HNSW: see index_types) are committed as built, so each
    task is one segment of the index, as large as a segment and a task's memory allow."""
    kind, rows_per_task = params.kind, config.sizing.rows_per_task
    if not rows_per_task and not config.sizing.fragments_per_task:
        rows_per_task = (default_rows_per_task(sum(f.num_rows for f in live), snap.bytes_per_row, parallelism,
                                               params.num_partitions if kind.is_vector else 0)
                         if kind.mergeable else unmerged_rows_per_task(
                             sum(f.num_rows for f in live), max_segment_rows(config, params, snap), snap.bytes_per_row,
                             # an update's rows go in as few segments as tasks can hold: the next
                             # update would fold its small ones again (the segment policy)
                             1 if config.runtime.mode == "update" else parallelism))
    groups = plan_groups(live, rows_per_task=rows_per_task, fragments_per_task=config.sizing.fragments_per_task)
    sizes = [g.num_rows for g in groups]
    log.info(
        "planned %d tasks over %d fragments: %d to %d rows each",
        len(groups), len(live), min(sizes), max(sizes),
    )
    if not kind.mergeable:
        log.info("%s: %s; the index will have %d segments", kind.name, kind.why_unmerged, len(groups))
        if len(groups) > MANY_SEGMENTS:
            log.warning("%d segments: every segment costs every query. Give --rows-per-task (a task needs about "
                        "1.1 x its vector bytes of memory) for fewer, larger segments", len(groups))
    return groups


@phase("train")
def train(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams, transport: Optional[Transport] = None,
          parallelism: int = 1, early: Optional[TrainingInBackground] = None) -> SharedArtifacts:
    """Train the shared artifacts once, from a bounded sample: on the driver with Lance's k-means,
    or on the executors (--trainer; a scalar or text index trains nothing: its segments share
    their build options only). Lance's training may have started before Spark (`early`): this
    phase then times only the wait for it."""
    if early is not None:
        artifacts = early.result()
        record_seconds("train (background)", early.seconds)
        log.info("trained on the driver while Spark started: %.1f s of training", early.seconds)
    else:
        artifacts = train_artifacts(config, snap, params, transport, parallelism)
    log.info("shared artifacts: %s", artifacts.describe() or "none (nothing to train)")
    return artifacts


def prepare(config: BuildConfig, insp: Inspection, parallelism: int, lease: Lease,
            transport: Optional[Transport] = None, early: Optional[TrainingInBackground] = None,
            ) -> tuple[tuple[FragmentGroup, ...], SharedArtifacts]:
    """Plan and train (an update takes the index's own model instead), or take both from an
    earlier run of the same job. -> (groups, artifacts)"""
    snap, params, state = insp.snap, insp.params, insp.state
    sizes = {"rows_per_task": config.sizing.rows_per_task, "fragments_per_task": config.sizing.fragments_per_task,
             "max_segment_rows": max_segment_rows(config, params, snap)}  # resolved: as saved before it had a default
    if insp.job is not None:
        if insp.job["params"] != asdict(params):
            raise JobError(f"the job directory {state.uri} was written with other parameters "
                           f"({insp.job['params']}): `{discard_command(config)}` starts afresh")
        if not params.kind.mergeable and insp.job.get("sizes", sizes) != sizes:
            # each task is a committed segment of these types: other sizes make another index
            raise JobError(f"the job directory {state.uri} holds a plan made with other task sizes "
                           f"({insp.job['sizes']}): rerun with those, or `{discard_command(config)}` to start afresh")
        groups, artifacts = state.load_plan(insp.job)
        insp.run = insp.job.get("run", "")
        log.info(
            "resuming job %s from %s: pinned version %d, its plan (%d tasks) and artifacts (%s)",
            insp.job_id, state.uri, snap.version, len(groups), artifacts.describe(),
        )
        return groups, artifacts
    groups = plan(config, snap, params, insp.fragments_to_index, parallelism)
    artifacts = insp.model or train(config, snap, params, transport, parallelism, early)
    # A fresh run's segment directories must never be an earlier run's, which a committed index
    # may use (a one-task segment is committed as built): the run id is part of their uuids.
    insp.run = uuid.uuid4().hex
    job = {"job_id": insp.job_id, "run": insp.run, "identity": insp.identity, "uri": snap.uri, "version": snap.version,
           "column": snap.column, "index_name": config.index.name, "params": asdict(params),
           "fragments": fragment_signature(planned_fragments(snap, groups)), "sizes": sizes}
    if insp.update is not None:  # what the update's commit replaces and keeps must still be there
        job["index_segments"] = pinned_segments(insp.update)
    lease.check()  # training takes minutes: never overwrite the state of a run that took over
    state.save_job(job, groups, artifacts)
    return groups, artifacts


def reusable_segments(snap: DatasetSnapshot, config: BuildConfig, state: JobState, groups: Sequence[FragmentGroup],
                      expected: dict[str, str]) -> dict[int, SegmentResult]:
    """Segments an earlier run finished that fit this plan and these artifacts, by group."""
    planned = {g.group_id: g for g in groups}
    # The segment's directory must still be there (a merge may rewrite the files inside it: an
    # INVERTED merge finalizes its sources' staging files in place).
    present = set(index_dirs(snap.location, config.dataset.storage_options).entries())
    return {
        gid: r
        for gid, r in state.finished_segments().items()
        if gid in planned
        and tuple(r.fragment_ids) == planned[gid].fragment_ids
        and dict(r.fingerprints) == expected
        and r.index_uuid in present
    }


def make_tasks(
    config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
    groups: Sequence[FragmentGroup], job_id: str, lease_owner: str = "",
) -> list[SegmentTask]:
    return [
        SegmentTask(
            uri=snap.uri, version=snap.version, column=snap.column, index_name=config.index.name,
            params=params, group=g, job_id=job_id,
            replace=bool(config.index.replace) or config.runtime.mode == "update",
            storage_options=dict(config.dataset.storage_options),
            lance_log="info" if config.runtime.verbose else "error", lease_owner=lease_owner,
            # a multivector row's vectors fall in several partitions: the table maps a row to one
            assignment=config.training.assignment if params.kind.is_vector and not snap.multivector else "lance",
        )
        for g in groups
    ]


@phase("build")
def build(spark: Spark, tasks: Sequence[SegmentTask], artifacts: SharedArtifacts, state: JobState, job_id: str,
          task_fn: TaskFn = run_task, progress_interval: float = 30.0) -> list[SegmentResult]:
    """Build one uncommitted segment per task on the executors."""
    if not tasks:
        return []
    with spark_layer.job_group(
        spark, f"spark-lance-index-{job_id}-build",
        f"spark-lance-index: build {len(tasks)} index segments",
    ):
        try:
            results = transport_for(spark, state.files, progress_interval).map(
                tasks, lambda task, shared: task_fn(task, shared, state, task_attempt()), artifacts,
                label="build segments")
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
    assigning = sum(r.assign_seconds for r in results)
    if assigning:  # what is left is Lance's: residuals, encoding, files (the floor; bench/assignment.py)
        record_seconds("build tasks (sum)", sum(took))
        record_seconds("build tasks assigning (sum)", assigning)
        log.info("of %.1f s of task time, %.1f s (%.0f%%) assigned rows to partitions (GEMM), the rest was Lance's "
                 "encoding and writing", sum(took), assigning, 100 * assigning / max(sum(took), 1e-9))
    return results


@phase("merge")
def merge(spark: Spark, config: BuildConfig, snap: DatasetSnapshot, params: IndexParams,
          results: Sequence[SegmentResult], state: JobState, lease_owner: str = "") -> list:
    """Merge the checked segments on the executors, in batches of at most max_segment_rows.

    Never on the driver: a merge holds its output in memory (about 100 MiB plus 1.5x the stored
    bytes, measured), which would make driver memory grow with the table. Segments of a
    type that must not be merged (index_types) are committed as they were built.
    """
    if not params.kind.mergeable:
        return [r.segment for r in results]
    limit = max_segment_rows(config, params, snap)
    batches = merge_batches(results, limit)
    log.info("merging into segments of at most %s rows (%s)", f"{limit:,}", segment_rows_origin(config, params, snap))
    if len(batches) > MANY_SEGMENTS:
        log.warning("%d segments: every segment costs every query. A larger --merge-memory (a merge task holds "
                    "about 2x what its segment stores) or --max-segment-rows gives fewer", len(batches))
    tasks = [
        MergeTask(snap.uri, snap.location, snap.version, tuple(r.segment for r in b),
                  sum(r.num_rows for r in b), dict(config.dataset.storage_options), lease_owner)
        for b in batches
    ]
    with spark_layer.job_group(
        spark, f"spark-lance-index-merge-{snap.version}",
        f"spark-lance-index: merge {len(results)} segments into {len(tasks)}",
    ):
        try:
            merged = transport_for(spark, state.files, config.runtime.progress_interval).map(
                tasks, lambda task, _: merge_segments(task, state), label="merge segments")
        except Exception as e:
            raise SparkStageError(
                f"merging segments failed after Spark's retries: {spark_layer.failure_reason(e)}; "
                "nothing was committed (the executor logs have the full trace)"
            ) from e
    log.info("merged %d segments into %d", len(results), len(merged))
    return merged


def planned_fragments(snap: DatasetSnapshot, groups: Sequence[FragmentGroup]) -> list[FragmentInfo]:
    in_plan = {f for g in groups for f in g.fragment_ids}
    return [f for f in snap.fragments if f.fragment_id in in_plan]


@phase("commit")
def commit(config: BuildConfig, insp: Inspection, groups: Sequence[FragmentGroup], merged: Sequence,
           lease: Lease) -> Any:
    """Commit the merged segments in one commit on the latest version.

    A build commits a new index (or replaces one, with --replace). An update adds its segments
    to the index under the same name; Lance drops the segments they cover entirely (the
    re-encoded ones), and the commit is refused if the index changed since the pin.
    The segments are recorded first, so a rerun after a driver death right after the commit
    finishes the job instead of refusing the index it finds."""
    snap, state = insp.snap, insp.state
    planned = planned_fragments(snap, groups)
    if insp.update is not None:
        pinned = pinned_segments(insp.update)
        conflict_of = lambda indexes: index_changed(config.index.name, indexes, pinned)  # noqa: E731
    else:
        conflict_of = build_conflict(config.index.name, snap.column, bool(config.index.replace), planned,
                                     config.index.index_type)
    interrupts.raise_if_requested()  # a Ctrl-C held back during the last Spark call lands here, not after
    lease.check()
    state.record_commit([str(m.uuid) for m in merged])
    return commit_segments(
        lambda: open_dataset(snap.uri, config.dataset.storage_options), config.index.name, snap.column,
        merged, planned, snap.version, conflict_of,
    )


@phase("verify")  # the report's name for this phase
def read_back(config: BuildConfig, insp: Inspection, groups: Sequence[FragmentGroup], committed_ds: Any,
              merged_uuids: Sequence[str], artifacts: SharedArtifacts) -> CommitReport:
    """Read the committed index back: right type, our segments (and, after an update, the kept
    ones), exactly the planned fragments, the model the job encoded with."""
    snap, expected_uuids = insp.snap, list(merged_uuids)
    covered = encoded = planned_fragments(snap, groups)
    if insp.committed is not None:
        encoded = []  # an earlier run checked them before its commit; they may be gone since
    if insp.update is not None:
        # The kept segments cover what the committed manifest says they cover now: a compaction
        # with a deferred remap that landed between the last check and the commit rewrites their
        # fragment lists in place (same uuids, same rows, new fragments). The rows are compared
        # below all the same: every row of the fragments covered must be indexed.
        kept = {s.uuid for s in insp.update.kept}
        expected_uuids += sorted(kept)
        now = dict(next((i.segment_fragments for i in index_infos(committed_ds) if i.name == config.index.name), ()))
        in_kept = {f for u in kept for f in now.get(u, ())}
        pinned = {f.fragment_id: f for f in snap.fragments}  # rows deleted since the pin are counted from these
        covered = [pinned.get(f.fragment_id, f) for f in fragment_infos(committed_ds, snap.column)
                   if f.fragment_id in in_kept] + list(covered)
    return read_back_index(
        committed_ds, config.index.name, insp.params.index_type, expected_uuids, covered, encoded=encoded,
        model_mismatch=(lambda stats: committed_model_mismatch(snap.location, config.dataset.storage_options, stats,
                                                               artifacts))
        if insp.params.kind.is_vector else None,
    )


def build_and_commit(spark: Spark, config: BuildConfig, insp: Inspection, groups: Sequence[FragmentGroup],
                     artifacts: SharedArtifacts, task_fn: TaskFn, lease: Lease,
                     result: JobResult) -> tuple[list[str], Any]:
    """Build the segments not already built, check, merge and commit them. -> (uuids, dataset)"""
    snap, params, state = insp.snap, insp.params, insp.state
    expected = artifacts.fingerprints()
    reused = reusable_segments(snap, config, state, groups, expected)
    if reused:
        log.info("reusing %d finished segments; %d to build", len(reused), len(groups) - len(reused))
    todo = [t for t in make_tasks(config, snap, params, groups, f"{insp.job_id}:{insp.run}", lease.owner)
            if t.group.group_id not in reused]
    built = build(spark, todo, artifacts, state, insp.job_id, task_fn, config.runtime.progress_interval)
    results = check_segments(groups, [*reused.values(), *built], expected)
    result.num_segments, result.segments_reused, result.segments_built = len(results), len(reused), len(built)
    lease.check()
    merged = merge(spark, config, snap, params, results, state, lease.owner)
    committed_ds = commit(config, insp, groups, merged, lease)
    return [str(m.uuid) for m in merged], committed_ds


def state_moved_on(insp: Inspection) -> None:
    """What inspect decided (resume, start afresh, finish a commit) was read before this run held
    the job; another run may have finished or stopped in between. Refuse, writing nothing, when
    the job directory is not what it was."""
    if insp.state.exists() != insp.job_file_seen:
        raise JobBusyError(f"another run of this job changed its state ({insp.state.uri}) while this one started: "
                           "rerun the same command")


def finish_interrupted_cleanup(config: BuildConfig, insp: Inspection, result: JobResult) -> None:
    """An earlier run of this job committed its index and stopped before it finished (in its
    cleanup, or where its plan can no longer be resumed): finish that cleanup and report the
    index, with no Spark."""
    state, snap = insp.state, insp.snap
    log.info("an earlier run of job %s committed index %r and stopped while cleaning up: finishing its cleanup",
             insp.job_id, config.index.name)
    lease = state.acquire_lease()
    try:
        result.leftovers_removed = len(discard_own_work(config, snap, state, lease))
    finally:
        lease.release()
    latest = open_dataset(snap.uri, config.dataset.storage_options)
    stats = latest.stats.index_stats(config.index.name)
    result.committed_version, result.segments_committed = latest.version, len(insp.committed or ())
    result.num_rows, result.num_fragments = stats["num_indexed_rows"], stats["num_indexed_fragments"]
    result.unindexed_rows, result.unindexed_fragments = stats["num_unindexed_rows"], stats["num_unindexed_fragments"]
    result.finished_earlier = True


def discard_command(config: BuildConfig) -> str:
    """The command that removes this job's state (what used to be "delete that directory")."""
    parts = ["spark-lance-index discard", f"--uri {config.dataset.uri}", f"--column {config.index.column}"]
    if config.index.index_name:
        parts.append(f"--index-name {config.index.index_name}")
    if config.dataset.job_dir:
        parts.append(f"--job-dir {config.dataset.job_dir}")
    if config.dataset.storage_options:
        parts.append("--storage-option ... (as given to this command)")
    return " ".join(parts)
