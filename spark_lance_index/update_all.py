"""`update --uri U` with neither --column nor --index-name: every index of the table, one after
another in one Spark session, with one summary and one report.

Each index is its own update job (its own state, lease, resume and checks, `pipeline.run`), so
a rerun of the same command finishes what a killed run left, and an index an earlier run already
updated has nothing new and commits nothing: none is updated twice. An index `update` cannot
extend (`status` says why: its type; or the update refuses it before
writing anything: a model it cannot read) is named with its reason and skipped; one that fails
is named with its error; the others still update, and the exit code
says what happened (`TableUpdate.exit_code`). No Spark starts when no index has rows to add.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from . import interrupts
from . import spark as spark_layer
from .config import BuildConfig
from .errors import CannotExtend, InputError, JobError, RecallTooLowError
from .index_status import IndexStatus, index_status, size_text
from .report import SCHEMA_VERSION, JobResult, now_iso, report_schema, write_report

log = logging.getLogger("spark_lance_index")

SKIPPED_EXIT = 4  # every index that could be updated was; some could not (named, with why)

ConfigFor = Callable[[str, str], BuildConfig]  # (column, index name) -> that index's update config


@dataclass
class IndexUpdate:
    """One index's part of a table update."""

    name: str
    columns: list[str]
    type: str
    outcome: str  # updated | up to date | skipped | failed | recall below minimum
    reason: str = ""  # why it was skipped or failed
    result: Optional[JobResult] = None

    def line(self) -> str:
        where = f"{self.name} ({self.type} on {', '.join(self.columns)})"
        if self.result is not None and self.outcome in ("updated", "recall below minimum"):
            counts = self.result.update or {}
            detail = (f"{counts.get('new_rows', 0):,} new rows, version {self.result.committed_version}"
                      + (f"; {self.reason}" if self.reason else ""))
        else:
            detail = self.reason
        return f"  {where}: {self.outcome}" + (f": {detail}" if detail else "")

    def to_report(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"index_name": self.name, "columns": self.columns, "type": self.type,
                               "outcome": self.outcome, "reason": self.reason or None}
        if self.result is not None:
            doc["run"] = self.result.to_report()
        return doc


@dataclass
class TableUpdate:
    """Every index of one table, updated one after another."""

    uri: str
    indexes: list[IndexUpdate] = field(default_factory=list)
    started_at: str = field(default_factory=now_iso)

    @property
    def exit_code(self) -> int:
        outcomes = {i.outcome for i in self.indexes}
        if "failed" in outcomes:
            return 1
        if "recall below minimum" in outcomes:
            return RecallTooLowError.exit_code
        return SKIPPED_EXIT if "skipped" in outcomes else 0

    @property
    def outcome(self) -> str:
        return {0: "succeeded", 1: "failed", RecallTooLowError.exit_code: "recall_below_minimum",
                SKIPPED_EXIT: "some_skipped"}[self.exit_code]

    def summary(self) -> str:
        parts = []
        for i in self.indexes:
            if i.result is not None and i.outcome == "updated":
                parts.append(i.result.summary())
        tally: dict[str, int] = {}
        for i in self.indexes:
            tally[i.outcome] = tally.get(i.outcome, 0) + 1
        head = f"{self.uri}: {len(self.indexes)} index{'es' if len(self.indexes) != 1 else ''}, " + ", ".join(
            f"{n} {outcome}" for outcome, n in tally.items())
        return "\n".join([*parts, head, *(i.line() for i in self.indexes)])

    def to_report(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "command": "update", "dataset": self.uri,
                "outcome": self.outcome, "started_at": self.started_at, "finished_at": now_iso(),
                "indexes": [i.to_report() for i in self.indexes]}


def table_report_schema() -> dict[str, Any]:
    """The JSON schema of a table update's report: each updated index's entry holds a run report."""
    entry = {"type": "object", "additionalProperties": False,
             "required": ["index_name", "columns", "type", "outcome", "reason"],
             "properties": {"index_name": {"type": "string"}, "columns": {"type": "array", "items": {"type": "string"}},
                            "type": {"type": "string"}, "reason": {"type": ["string", "null"]},
                            "outcome": {"enum": ["updated", "up to date", "skipped", "failed",
                                                 "recall below minimum"]},
                            "run": report_schema()}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "additionalProperties": False,
            "required": ["schema_version", "command", "dataset", "outcome", "started_at", "finished_at", "indexes"],
            "properties": {"schema_version": {"const": SCHEMA_VERSION}, "command": {"const": "update"},
                           "dataset": {"type": "string"}, "started_at": {"type": "string"},
                           "finished_at": {"type": "string"}, "indexes": {"type": "array", "items": entry},
                           "outcome": {"enum": ["running", "succeeded", "failed", "recall_below_minimum",
                                               "some_skipped", "interrupted"]}}}


def update_every_index(base: BuildConfig, config_for: ConfigFor, spark: Any = None) -> TableUpdate:
    """Update each index of the table `base.dataset.uri`. `base` is the run's settings (the dataset, its
    storage, the Spark master, the table's --report); `config_for(column, name)` makes each index's
    update config, checked as a single update's before any Spark, and written to no report of its
    own. Raises InputError when the table has no index."""
    from .pipeline import run

    uri, storage_options, report = base.dataset.uri, dict(base.dataset.storage_options), base.runtime.report
    statuses = index_status(uri, storage_options)
    if not statuses:
        raise InputError(f"{uri} has no index to update: build one first (spark-lance-index build)")
    table = TableUpdate(uri)
    targets: list[tuple[IndexStatus, BuildConfig]] = []
    for s in statuses:
        if s.updatable:
            targets.append((s, config_for(s.columns[0], s.name).with_settings(report=None)))
        else:
            table.indexes.append(IndexUpdate(s.name, s.columns, s.type, "skipped", s.why_not_updatable or ""))
    _write(report, storage_options, table, "running")  # a place it cannot be written: refused before Spark
    created = False
    try:
        if spark is None and any(s.unindexed_fragments for s, _ in targets):
            task_bytes = max(_task_bytes(c) for s, c in targets if s.unindexed_fragments)
            log.info("one Spark session for the updates, sized for their largest task (%s): starting it",
                     size_text(task_bytes))
            runtime = base.runtime
            spark, created = spark_layer.get_session(runtime.master, runtime.app_name, runtime.verbose, task_bytes)
        log.info("updating %d of the %d indexes of %s one after another%s", len(targets), len(statuses), uri,
                 f" (skipping {', '.join(i.name for i in table.indexes)})" if table.indexes else "")
        for s, config in targets:
            log.info("index %s (%s on %s): update", s.name, s.type, ", ".join(s.columns))
            table.indexes.append(_update_one(s, config, spark, run))
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt) or interrupts.caused_by_interrupt(e)
        _write(report, storage_options, table, "interrupted" if interrupted else "failed")
        raise
    finally:
        if created:
            spark_layer.stop_session(spark)
    _write(report, storage_options, table)
    return table


def _task_bytes(config: BuildConfig) -> int:
    """What the largest task of one index's update holds; 0 when it cannot be told here (that
    index's own update then says why, in its turn)."""
    from .pipeline import update_task_bytes  # imported when called, as `run` is

    try:
        return update_task_bytes(config)
    except Exception as e:  # noqa: BLE001 - reported by that index's update
        log.warning("the session is sized without the update of %s, which could not be inspected here (%s)",
                    config.index.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 0


def _update_one(s: IndexStatus, config: BuildConfig, spark: Any, run: Callable[..., JobResult]) -> IndexUpdate:
    """One index's update; a failure is recorded and the next index goes on (Ctrl-C stops all)."""
    try:
        result = run(config, spark)
    except RecallTooLowError as e:
        result = e.result  # type: ignore[assignment]
        return IndexUpdate(s.name, s.columns, s.type, "recall below minimum", str(e).splitlines()[0], result)
    except CannotExtend as e:  # refused before anything was written: this index cannot be extended
        log.warning("index %s: skipped: %s", s.name, e)
        return IndexUpdate(s.name, s.columns, s.type, "skipped", str(e).splitlines()[0][:500])
    except Exception as e:  # any other failure is this index's: named, and the next one goes on
        if interrupts.caused_by_interrupt(e):
            raise
        log.error("index %s: %s", s.name, e)
        text = str(e).splitlines()[0][:500] if str(e) else ""
        return IndexUpdate(s.name, s.columns, s.type, "failed",
                           text if isinstance(e, JobError) else f"{type(e).__name__}: {text}")
    outcome = "updated" if result.committed_version is not None else "up to date"
    return IndexUpdate(s.name, s.columns, s.type, outcome, "", result)


def _write(path: Optional[str], storage_options: Optional[dict], table: TableUpdate,
           outcome: Optional[str] = None) -> None:
    if not path:
        return
    doc = table.to_report()
    if outcome:
        doc["outcome"] = outcome
    try:
        write_report(path, storage_options or {}, doc)
        if outcome is None:
            log.info("report written to %s", path)
    except Exception as e:
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        if outcome == "running":
            raise InputError(f"cannot write --report {path}: {reason}") from None
        if outcome is None:
            raise JobError(f"the update finished ({table.outcome}) but its report could not be written to "
                           f"{path}: {reason}") from None
        log.error("could not write the report to %s: %s", path, reason)
