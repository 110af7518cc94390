"""What a run did, as one JSON document; the human summary is rendered from the same document.

The schema is `report.schema.json` beside this file (documented in the README).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from . import interrupts
from .config import BuildConfig
from .dataset import IndexParams
from .errors import InputError, JobError, RecallTooLowError
from .exact_search import RecallFigure, recall_advice
from .storage import write_file
from .train import SharedArtifacts

if TYPE_CHECKING:
    from .query_settings import QuerySettings

log = logging.getLogger("spark_lance_index")

SCHEMA_VERSION = 1
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "report.schema.json")

# outcomes, and the exit code each gives
INTERRUPTED = "interrupted (Ctrl-C); rerun the same command to resume"  # the report's error then
OUTCOMES = {"succeeded": 0, "failed": 1, "refused": 2, "recall_below_minimum": 3, "interrupted": 130,
            "running": None}


def short(fingerprint: str) -> str:
    return fingerprint[:12]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out: dict[str, Optional[str]] = {}
    for name in ("spark-lance-index", "pylance", "pyspark"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class JobResult:
    """One run of the build job (or of `verify`)."""

    job_id: Optional[str]
    uri: str
    index_name: str
    column: str
    pinned_version: Optional[int] = None
    committed_version: Optional[int] = None
    params: Optional[IndexParams] = None
    num_rows: Optional[int] = None
    num_fragments: Optional[int] = None
    num_tasks: Optional[int] = None
    num_segments: Optional[int] = None
    segments_reused: Optional[int] = None
    segments_built: Optional[int] = None
    segments_committed: Optional[int] = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    unindexed_rows: Optional[int] = None
    unindexed_fragments: Optional[int] = None
    leftovers_removed: Optional[int] = None
    leftovers_unaccounted: list[str] = field(default_factory=list)
    deleted_rows: Optional[int] = None
    executors: list[str] = field(default_factory=list)  # "host: libraries", from the preflight
    job_dir: Optional[str] = None
    spark_app_id: Optional[str] = None
    spark_master: Optional[str] = None
    recall: list[RecallFigure] = field(default_factory=list)
    recall_diagnosis: Optional[str] = None  # recall low at every setting: what limits it and what to do
    min_recall: Optional[float] = None
    outcome: str = "succeeded"
    error: Optional[str] = None
    started_at: str = field(default_factory=now_iso)
    finished_at: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)
    artifacts: Optional[SharedArtifacts] = field(default=None, repr=False)
    update: Optional[dict] = None  # `update`: what it encoded (pipeline.update_summary)
    drift: Optional[Any] = None  # `update`: DriftFigures
    query_settings: Optional[Any] = None  # --target-recall: query_settings.QuerySettings
    index_check: Optional[Any] = None  # scalar and text indexes: checks.IndexCheck
    finished_earlier: bool = False  # an earlier run of the job committed; this one finished it

    def to_report(self) -> dict[str, Any]:
        p = self.params
        return {
            "schema_version": SCHEMA_VERSION,
            "outcome": self.outcome,
            "error": self.error,
            "job_id": self.job_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at or now_iso(),
            "dataset": {
                "uri": self.uri,
                "pinned_version": self.pinned_version,
                "committed_version": self.committed_version,
            },
            "index": {
                "name": self.index_name,
                "column": self.column,
                "type": p.index_type if p else None,
                "metric": (p.metric or None) if p else None,
                "num_partitions": (p.num_partitions or None) if p else None,
                "num_bits": (p.num_bits or None) if p else None,
                "num_sub_vectors": (p.num_sub_vectors or None) if p else None,
                "hnsw": {"m": p.m, "ef_construction": p.ef_construction, "max_level": p.max_level}
                if p and p.m else None,
                "options": json.loads(p.options) if p and p.options else None,
            },
            "settings": self.settings,
            "artifacts": {k: self.fingerprints.get(k) for k in ("centroids", "codebook", "rotation", "options")},
            "index_check": None if self.index_check is None else {
                "filters": [{**asdict(c), "ok": c.ok} for c in self.index_check.filters],
                "search": None if self.index_check.search is None else asdict(self.index_check.search),
                "unchecked": self.index_check.unchecked},
            "counts": {
                "rows_indexed": self.num_rows,
                "fragments_indexed": self.num_fragments,
                "tasks": self.num_tasks,
                "segments": self.num_segments,
                "segments_reused": self.segments_reused,
                "segments_built": self.segments_built,
                "segments_committed": self.segments_committed,
                "rows_unindexed": self.unindexed_rows,
                "fragments_unindexed": self.unindexed_fragments,
                "leftovers_removed": self.leftovers_removed,
                "rows_deleted_since_pinned": self.deleted_rows,
                "committed_by_earlier_run": self.finished_earlier,
            },
            "leftovers_unaccounted": list(self.leftovers_unaccounted),
            "timings_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "spark": {"application_id": self.spark_app_id, "master": self.spark_master},
            "recall": [asdict(f) for f in self.recall],
            "recall_diagnosis": self.recall_diagnosis,
            "min_recall": self.min_recall,
            "job_dir": self.job_dir,
            "versions": _versions(),
            "executors": list(self.executors),
            "query_settings": None if self.query_settings is None else query_settings_doc(
                self.query_settings, self.params.index_type if self.params else ""),
            "update": None if self.update is None else {**self.update, "drift": None if self.drift is None else {
                **asdict(self.drift), "advice": self.drift.advice}},
        }

    def summary(self) -> str:
        from .summary import render_summary

        return render_summary(self.to_report())


def measured_figures(result: JobResult) -> list[RecallFigure]:
    """Every recall measured: the check's settings and the --target-recall sweep's."""
    q = result.query_settings
    swept = [RecallFigure(s.nprobes, s.refine_factor, s.recall, q.queries, q.k) for s in q.grid] if q else []
    return [*result.recall, *swept]


def query_settings_doc(q: QuerySettings, index_type: str) -> dict[str, Any]:
    """The report's `query_settings` from a QuerySettings."""
    return {
        "target": q.target, "k": q.k, "queries": q.queries, "where": q.where,
        "recommended": asdict(q.recommended) if q.recommended else None,
        "grid": [asdict(s) for s in q.grid], "advice": q.advice(index_type),
    }


def settings_of(config: BuildConfig) -> dict:
    """The run's settings for the report: storage option values never leave the process."""
    out = copy.deepcopy(config.flat())
    out["storage_options"] = sorted(config.dataset.storage_options)
    return out


@contextlib.contextmanager
def reporting(config: BuildConfig, result: JobResult) -> Iterator[JobResult]:
    """Fill in the outcome, write the --report document whatever happens, apply --min-recall.

    The report is first written as "running" before anything else: a place it cannot be written
    is refused in one line before Spark starts, not found out at the end. A final write that fails
    fails the run (the README promises the report)."""
    if config.runtime.report:
        result.outcome = "running"
        try:
            write_report(config.runtime.report, config.dataset.storage_options, result.to_report())
        except Exception as e:
            raise InputError(f"cannot write --report {config.runtime.report}: {str(e).splitlines()[0][:300]}") from None
        result.outcome = "succeeded"
    failed = True
    try:
        yield result
        advice = recall_advice(measured_figures(result), config.checks.min_recall, result.params.index_type,
                               swept=result.query_settings is not None, diagnosis=result.recall_diagnosis) \
            if config.checks.min_recall is not None and result.params else None
        if advice:
            result.outcome, result.error = "recall_below_minimum", advice
        failed = False
    except KeyboardInterrupt:
        result.outcome, result.error = "interrupted", INTERRUPTED
        raise
    except Exception as e:  # JobError, and anything unforeseen: the report says it failed
        result.outcome = "refused" if isinstance(e, InputError) else "failed"
        if interrupts.caused_by_interrupt(e):  # the failure of jobs Ctrl-C cancelled (interrupts.py)
            result.outcome, result.error = "interrupted", INTERRUPTED
            raise
        first = str(e).splitlines()[0][:300] if str(e) else ""
        result.error = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {first}"
        raise
    finally:
        result.finished_at = now_iso()
        if config.runtime.report:
            try:
                write_report(config.runtime.report, config.dataset.storage_options, result.to_report())
                log.info("report written to %s", config.runtime.report)
            except Exception as e:
                reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                if not failed:  # the run's own outcome wins when it already failed
                    raise JobError(f"the run finished ({result.outcome}) but its report could not be written "
                                   f"to {config.runtime.report}: {reason}") from None
                log.error("could not write the report to %s: %s", config.runtime.report, reason)
    if result.outcome == "recall_below_minimum":
        raise RecallTooLowError(result.error or "recall below --min-recall", result)


def write_report(path: str, storage_options: Mapping[str, str], report: dict[str, Any]) -> None:
    """Write the report to a local path or an object-store URI."""
    write_file(path, storage_options, json.dumps(report, indent=2).encode())


def report_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as f:
        return json.load(f)
