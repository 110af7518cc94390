"""The two pipelines, `build` and `update`, each a short list of phases (phases.py).

    build:  inspect | start Spark (Lance's trainer already running) | plan, train | build | merge
            | commit | read back | check a scalar index | clean up | recall check
    update: inspect | start Spark | plan with the index's own model | build | merge | commit
            | read back | clean up | recall check | drift

`run(config)` is the one entry point the CLI, spark-submit, Databricks and the tests call. Both
pipelines run inside a `Driver`: the Spark session, the preflight and the job's lease, and on a
failure the one policy of `FAILURE_POLICIES` that fits it. The job directory (`state.py`) makes a
rerun of the same command resume where a dead driver stopped; `resume.py` decides what of an
earlier run can be trusted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Optional

from . import interrupts
from . import spark as spark_layer
from .checks import check_index, measure_recall
from .cleanup import cleanup, discard_own_work
from .commit import CommitReport
from .config import BuildConfig
from .dataset import forget_handles, open_dataset
from .errors import CommitCheckError, DatasetChangedError, JobBusyError, JobError
from .exact_search import RecallFigure
from .lease import Lease
from .phases import (  # some re-exported for tests that run one phase; to replace one, patch `phases`
    Spark,
    TaskFn,
    build,
    build_and_commit,
    discard_command,
    finish_interrupted_cleanup,
    make_tasks,
    merge,
    plan,
    preflight,
    prepare,
    read_back,
    start_session,
    state_moved_on,
    train,
)
from .plan import largest_task_bytes, max_segment_rows, merge_peak_bytes
from .report import JobResult, reporting, settings_of
from .resume import Inspection, inspect_inputs, inspect_update
from .segment_build import run_task
from .timing import PhaseClock
from .train import TrainingInBackground, trains_on_driver
from .transport import Transport, transport_for
from .update_job import finish_noop, measure_drift, update_summary
from .update_plan import index_changed

__all__ = ["run", "build_pipeline", "update_pipeline", "inspect_inputs", "inspect_update", "plan", "train",
           "make_tasks", "build", "merge", "cleanup", "update_summary", "index_changed"]

log = logging.getLogger("spark_lance_index")


def run(config: BuildConfig, spark: Optional[Spark] = None, *, task_fn: TaskFn = run_task) -> JobResult:
    """Build (or, with `config.runtime.mode == "update"`, update) and commit the index described by
    `config`. Raises JobError on a known failure.

    Inputs are checked before any Spark session is started or used. If `spark` is None an
    active session is reused, or one is created (and stopped at the end). `task_fn` is what
    each Spark task runs (tests wrap it to inject failures).
    """
    result = JobResult(job_id=None, uri=config.dataset.uri, index_name=config.index.name, column=config.index.column,
                       min_recall=config.checks.min_recall, settings=settings_of(config))
    pipeline = update_pipeline if config.runtime.mode == "update" else build_pipeline
    with reporting(config, result):
        pipeline(config, spark, task_fn, result)
    return result


def build_pipeline(config: BuildConfig, spark: Optional[Spark], task_fn: TaskFn, result: JobResult) -> None:
    """A new index over every live fragment of the pinned version (or the rest of an earlier run's)."""
    with JobClock(result) as clock:
        insp = inspect_inputs(config)
        _record_inspection(result, insp)
        if _finish_earlier_commit(config, insp, result):
            return
        with Driver(config, spark, insp, result, clock, train_early=True) as driver:
            groups, artifacts = prepare(config, insp, driver.parallelism, driver.lease, driver.transport, driver.early)
            _record_plan(result, groups, artifacts)
            merged, committed_ds = _build_merge_commit(driver, insp, groups, artifacts, task_fn)
            report = read_back(config, insp, groups, committed_ds, merged, artifacts)
            _record_read_back(result, report, merged)
            if not insp.params.kind.is_vector and config.checks.verify_queries:  # exact answers: checked before cleanup
                result.index_check = check_index(driver.spark, config, insp.snap.uri, report.version,
                                                 insp.snap.column, insp.params.index_type, config.index.name,
                                                 driver.parallelism)
            result.leftovers_removed, result.leftovers_unaccounted = cleanup(config, insp.snap, insp.state, merged,
                                                                             driver.lease)
            if insp.params.kind.is_vector and (config.checks.verify_queries or insp.queries is not None):
                _recall_check(driver, insp, report)


def update_pipeline(config: BuildConfig, spark: Optional[Spark], task_fn: TaskFn, result: JobResult) -> None:
    """The rows added since the index was built, encoded with the index's own model and committed
    beside its segments (small tail segments re-encoded with them)."""
    with JobClock(result) as clock:
        insp = inspect_update(config)
        _record_inspection(result, insp)
        if _finish_earlier_commit(config, insp, result):
            return
        assert insp.update is not None
        result.update = update_summary(insp.update)
        if insp.update.is_noop and insp.committed is None:
            finish_noop(config, insp, result)
            return
        with Driver(config, spark, insp, result, clock) as driver:
            groups, artifacts = prepare(config, insp, driver.parallelism, driver.lease, driver.transport)
            _record_plan(result, groups, artifacts)
            merged, committed_ds = _build_merge_commit(driver, insp, groups, artifacts, task_fn)
            report = read_back(config, insp, groups, committed_ds, merged, artifacts)
            _record_read_back(result, report, merged)
            if not insp.params.kind.is_vector and config.checks.verify_queries:  # as the build: before cleanup
                result.index_check = check_index(driver.spark, config, insp.snap.uri, report.version,
                                                 insp.snap.column, insp.params.index_type, config.index.name,
                                                 driver.parallelism)
            result.leftovers_removed, result.leftovers_unaccounted = cleanup(config, insp.snap, insp.state, merged,
                                                                             driver.lease)
            if insp.params.kind.is_vector:
                by_origin = None
                if config.checks.verify_queries or insp.queries is not None:
                    by_origin = _recall_check(driver, insp, report)
                result.drift = measure_drift(config, insp.update, committed_ds, by_origin, insp.snap)


def update_task_bytes(config: BuildConfig) -> int:
    """The bytes the largest task of an update of `config` holds (0: nothing to encode), read
    without Spark and writing nothing: one session made for several updates is sized for the
    largest of them."""
    insp = inspect_update(config)
    return 0 if insp.update is None or insp.update.is_noop else largest_task_of(config, insp)


# --- what both pipelines share ------------------------------------------------------------------

def largest_task_of(config: BuildConfig, insp: Inspection) -> int:
    """The bytes the run's largest build or merge task holds, which sizes the executors' memory."""
    snap, params = insp.snap, insp.params
    rows = sum(f.num_rows for f in insp.fragments_to_index)  # an update merges its own rows only
    return largest_task_bytes(insp.fragments_to_index, snap.bytes_per_row, params.kind.mergeable,
                              max_segment_rows(config, params, snap), config.sizing.rows_per_task,
                              params.num_partitions,
                              merge_peak_bytes(config, params, snap, rows) if params.kind.mergeable else 0)


class JobClock:
    """The phases' seconds (`@phase`) and the job's total, put on the result once, when the job's
    work ends (before a session the job created is stopped)."""

    def __init__(self, result: JobResult) -> None:
        self.result, self.started, self._clock = result, time.perf_counter(), PhaseClock()

    def __enter__(self) -> JobClock:
        forget_handles()
        self._clock.__enter__()
        return self

    def finish(self) -> None:
        if "total" not in self._clock.seconds:
            self._clock.seconds["total"] = time.perf_counter() - self.started
            self.result.seconds = dict(self._clock.seconds)

    def __exit__(self, kind: Optional[type[BaseException]], *rest: object) -> None:
        if kind is None:  # a failure in the Driver has finished the clock; one before it reports no time
            self.finish()
        self._clock.__exit__(kind, *rest)


class Driver:
    """The driver's side of a run: Lance's trainer started early (a fresh build trains while the
    session starts), the Spark session, the preflight, the job's lease, an earlier run's unusable
    work discarded. On leaving: the failure's policy (`FAILURE_POLICIES`), then the trainer
    waited for, the lease released, the clock stopped and a session the job created stopped."""

    def __init__(self, config: BuildConfig, spark: Optional[Spark], insp: Inspection, result: JobResult,
                 clock: JobClock, *, train_early: bool = False) -> None:
        self.config, self.insp, self.result, self.clock = config, insp, result, clock
        self.spark, self.created, self.train_early = spark, False, train_early
        self.lease: Lease = None  # type: ignore[assignment]  # held from __enter__ on
        self.early: Optional[TrainingInBackground] = None
        self.parallelism = 1

    @property
    def transport(self) -> Transport:
        return transport_for(self.spark, self.insp.state.files, self.config.runtime.progress_interval)

    def __enter__(self) -> Driver:
        try:
            self._start()
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _start(self) -> None:
        config, insp = self.config, self.insp
        snap, params, state = insp.snap, insp.params, insp.state
        task_bytes = largest_task_of(config, insp)
        if self.spark is None:
            spark_layer.check_can_start(config.runtime.master)  # refusals in one line come first
        # Lance's trainer needs no Spark and writes nothing: it trains while the session starts
        if (self.train_early and insp.job is None and insp.committed is None and insp.model is None
                and not state.leased() and trains_on_driver(config, snap, params)):
            self.early = TrainingInBackground(config, snap, params)
        if self.spark is None:
            self.spark, self.created = start_session(config, task_bytes)
        self.result.spark_app_id = spark_layer.application_id(self.spark)
        self.result.spark_master = spark_layer.master(self.spark)
        self.parallelism = spark_layer.default_parallelism(self.spark)
        preflight(self.spark, self.result, task_bytes)
        self.lease = state.acquire_lease()
        state_moved_on(insp)
        if insp.stale:
            log.info("the state of an earlier run in %s cannot be resumed (%s): starting afresh", state.uri, insp.stale)
            discard_own_work(config, snap, state, self.lease)

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        interrupts.closing()  # the cleanup below runs to its end, Ctrl-C or not
        try:
            if error is not None:
                failure_policy(error)(error, self)
        finally:
            if self.early is not None:
                self.early.wait()  # a failed run leaves no training behind in a long-lived driver
            if self.lease is not None:
                self.lease.release()
            self.clock.finish()
            if self.created and self.spark is not None:
                spark_layer.stop_session(self.spark)


def _build_merge_commit(driver: Driver, insp: Inspection, groups: Any, artifacts: Any,
                        task_fn: TaskFn) -> tuple[list[str], Any]:
    """The segments built, merged and committed, or an earlier run's landed commit taken as it is."""
    if insp.committed is None:
        return build_and_commit(driver.spark, driver.config, insp, groups, artifacts, task_fn, driver.lease,
                                driver.result)
    log.info("an earlier run of job %s committed its index; finishing its checks and cleanup", insp.job_id)
    driver.result.segments_reused = driver.result.segments_built = 0
    driver.result.finished_earlier = True
    return insp.committed, open_dataset(insp.snap.uri, driver.config.dataset.storage_options)


def _finish_earlier_commit(config: BuildConfig, insp: Inspection, result: JobResult) -> bool:
    """An earlier run committed and its plan is gone: finish its cleanup, with no Spark."""
    if insp.job is None and insp.committed is not None:
        finish_interrupted_cleanup(config, insp, result)
        return True
    return False


def _recall_check(driver: Driver, insp: Inspection,
                  report: CommitReport) -> Optional[tuple[RecallFigure, RecallFigure, float]]:
    """recall@k against exact search (and the query settings for --target-recall). -> the
    figures by the queries' origin (an update's new rows and older rows), or None."""
    config, snap, params = driver.config, insp.snap, insp.params
    new_fragments = [f.fragment_id for f in insp.update.new_fragments] if insp.update else None
    check = measure_recall(driver.spark, config, snap.uri, report.version, snap.column, params.metric,
                           params.index_type, insp.queries, driver.parallelism, config.index.name,
                           new_fragments=new_fragments)
    driver.result.recall, driver.result.query_settings = check.figures, check.query_settings
    driver.result.recall_diagnosis = check.diagnosis
    return check.by_origin


def _record_inspection(result: JobResult, insp: Inspection) -> None:
    result.job_id, result.pinned_version, result.params = insp.job_id, insp.snap.version, insp.params
    result.job_dir = insp.state.uri


def _record_plan(result: JobResult, groups: Any, artifacts: Any) -> None:
    result.fingerprints, result.artifacts = artifacts.fingerprints(), artifacts
    result.num_tasks = len(groups)


def _record_read_back(result: JobResult, report: CommitReport, merged: list[str]) -> None:
    result.committed_version, result.num_rows = report.version, report.num_indexed_rows
    result.num_fragments, result.segments_committed = report.num_indexed_fragments, len(merged)
    result.unindexed_rows = report.num_unindexed_rows
    result.unindexed_fragments = report.num_unindexed_fragments
    result.deleted_rows = report.num_deleted_rows


# --- what a failure leaves ------------------------------------------------------------------------

def _discard_refused(error: BaseException, driver: Driver) -> None:
    """The segments index fragments that no longer exist, or another index took the place:
    nothing to resume, and nothing of ours was committed."""
    insp = driver.insp
    discard_own_work(driver.config, insp.snap, insp.state, driver.lease)


def _cancel_jobs(error: BaseException, driver: Driver) -> None:
    """Ctrl-C: a Connect server's tasks would outlive this client."""
    if driver.spark is not None:
        spark_layer.cancel_jobs(driver.spark)


def _touch_nothing(error: BaseException, driver: Driver) -> None:
    """Another run holds the job: nothing of it is ours to change."""


def _wrong_commit(error: BaseException, driver: Driver) -> None:
    """Committed, but not what was planned."""
    assert isinstance(error, JobError)
    state = driver.insp.state
    if driver.insp.update is None:
        # A rerun with --replace rebuilds it, from scratch. Its plan and segments are forgotten,
        # so the rerun reuses none of them and runs under a new run id (new segment uuids, never
        # a directory this index uses); the markers stay, so that the rerun's cleanup removes
        # this index's directories once its own commit has replaced it.
        state.forget_commit()  # marked wrong first, then the plan, then the record
        error.hint = f"rerun with --replace to rebuild it; job state kept in {state.uri}"
    else:
        # The record stays: every rerun of the update checks that commit again and fails the
        # same way, instead of finding nothing new and calling the index up to date.
        error.hint = f"rebuild it with `spark-lance-index build --replace`; job state kept in {state.uri}"


def _say_how_to_resume(error: BaseException, driver: Driver) -> None:
    assert isinstance(error, JobError)
    state = driver.insp.state
    if state.exists():
        error.hint = (f"job state kept in {state.uri}: rerun the same command to resume, or "
                      f"`{discard_command(driver.config)}` to start afresh")


def _leave_as_is(error: BaseException, driver: Driver) -> None:
    """Anything unforeseen: the state stays for a rerun to judge."""


# The first entry whose type fits is the failure's policy (a subclass before its base).
FAILURE_POLICIES: tuple[tuple[type[BaseException], Callable[[BaseException, Driver], None]], ...] = (
    (DatasetChangedError, _discard_refused),
    (KeyboardInterrupt, _cancel_jobs),
    (JobBusyError, _touch_nothing),
    (CommitCheckError, _wrong_commit),
    (JobError, _say_how_to_resume),
    (BaseException, _leave_as_is),
)


def failure_policy(error: BaseException) -> Callable[[BaseException, Driver], None]:
    if interrupts.caused_by_interrupt(error):  # the cancelled jobs' failure (interrupts.py)
        return _cancel_jobs
    return next(policy for kind, policy in FAILURE_POLICIES if isinstance(error, kind))
