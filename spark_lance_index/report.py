"""What a run did, as one JSON document; the human summary is rendered from the same document.

The schema is `report.schema.json` beside this file (documented in the README).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .dataset import IndexParams
from .errors import InputError, JobError, RecallTooLowError
from .exact_search import RecallFigure, recall_advice
from .storage import write_file
from .train import SharedArtifacts

log = logging.getLogger("spark_lance_index")

SCHEMA_VERSION = 1
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "report.schema.json")

# outcomes, and the exit code each gives
OUTCOMES = {"succeeded": 0, "failed": 1, "refused": 2, "recall_below_minimum": 3, "interrupted": 130,
            "running": None}


def short(fingerprint: str) -> str:
    return fingerprint[:12]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out = {}
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
        return render_summary(self.to_report())


def render_summary(r: dict[str, Any]) -> str:
    """The lines printed at the end of a run, from the report document."""
    idx, ds, c = r["index"], r["dataset"], r["counts"]
    lines = []
    if r["outcome"] in ("failed", "refused"):
        lines.append(f"index {idx['name']!r} on {ds['uri']}: {r['outcome']}: {r['error']}")
    u = r.get("update")
    if u and r["outcome"] == "succeeded" and not u["new_rows"]:
        lines.append(f"index {idx['name']!r} on {ds['uri']} is up to date at version {ds['pinned_version']}: "
                     "every fragment is indexed; nothing committed")
    if c["rows_indexed"] is not None and ds["committed_version"] is not None:
        kind = f"{idx['type']}, {idx['metric']}, {idx['num_partitions']} partitions" if idx["metric"] else idx["type"]
        if idx["num_bits"]:
            kind += f", {idx['num_bits']} bit"
        if idx["num_sub_vectors"]:
            kind += f", {idx['num_sub_vectors']} sub-vectors"
        if idx.get("options"):
            kind += ", " + ", ".join(f"{k}={v}" for k, v in sorted(idx["options"].items()))
        if idx.get("hnsw"):
            kind += ", HNSW m={m} ef_construction={ef_construction} max_level={max_level}".format(**idx["hnsw"])
        lines.append(f"index {idx['name']!r} ({kind}) committed on {ds['uri']} at version {ds['committed_version']}")
        if c.get("committed_by_earlier_run"):
            lines.append(f"  rows indexed {c['rows_indexed']:,} in {c['fragments_indexed']} fragments, "
                         f"{c['segments_committed']} segments: committed by an earlier run of this job, which "
                         f"stopped before it finished; this run finished its "
                         + ("checks and cleanup" if c["tasks"] is not None else "cleanup")
                         + f" (leftover segment directories removed {c['leftovers_removed'] or 0})")
        elif c["tasks"] is not None:
            lines.append(
                f"  rows indexed {c['rows_indexed']:,} in {c['fragments_indexed']} fragments "
                f"(pinned version {ds['pinned_version']}); {c['tasks']} tasks, "
                + (f"{c['segments']} segments merged into {c['segments_committed']}"
                   if c["segments"] != c["segments_committed"] or c["segments"] == 1
                   else f"{c['segments_committed']} segments committed as built")
            )
            lines.append(
                f"  segments built {c['segments_built']}, reused from an earlier run {c['segments_reused']}; "
                f"leftover segment directories removed {c['leftovers_removed']}"
            )
        else:
            lines.append(f"  rows indexed {c['rows_indexed']:,} in {c['fragments_indexed']} fragments")
    if u and u["new_rows"] and ds["committed_version"] is not None:
        lines.append(f"  update: {u['new_rows']:,} new rows in {u['new_fragments']} fragments, encoded with the "
                     "index's "
                     f"model; {u['segments_reencoded']} small segments ({u['rows_reencoded']:,} rows) re-encoded with "
                     f"them, {u['segments_kept']} kept")
    drift = (u or {}).get("drift")
    if drift:
        shift = "too few new rows to tell" if drift["partition_shift"] is None else f"{drift['partition_shift']:.3f}"
        line = f"  drift: partition shift {shift}"
        if drift["recall_new_rows"] is not None:
            line += (f"; recall@k {drift['recall_new_rows']:.3f} on new rows, {drift['recall_old_rows']:.3f} on "
                     f"older rows ({drift['recall_setting']})")
        lines.append(line)
        if drift["advice"]:
            lines.append(f"  REBUILD ADVISED: {drift['advice']}")
    if c.get("rows_deleted_since_pinned"):
        lines.append(f"  rows deleted after the pinned version: {c['rows_deleted_since_pinned']:,} "
                     "(the index covers their fragments; Lance skips deleted rows)")
    if r.get("leftovers_unaccounted"):
        lines.append(f"  left in _indices, not provably this job's: {', '.join(r['leftovers_unaccounted'][:8])}")
    if c["rows_unindexed"]:
        lines.append(
            f"  not yet indexed: {c['rows_unindexed']:,} rows in {c['fragments_unindexed']} fragments "
            "added after the pinned version (run the job again, or Lance's optimize_indices)"
        )
    if any(r["artifacts"].values()):
        lines.append("  artifacts: " + ", ".join(
            f"{k} {short(v)}" for k, v in sorted(r["artifacts"].items()) if v))
    check = r.get("index_check")
    if check and check["filters"]:
        exact = sum(c["ok"] and c["same_rows"] is True for c in check["filters"])
        counted = sum(c["ok"] and c["same_rows"] is None for c in check["filters"])
        lines.append(f"  filter check: {exact} of {len(check['filters'])} filters on sampled values return through the "
                     "index exactly the rows a scan without it returns"
                     + (f", {counted} more the same number of rows (row ids not compared)" if counted else "")
                     + f", e.g. `{check['filters'][0]['filter']}` ({check['filters'][0]['rows_index']:,} rows)")
    if check and check.get("unchecked"):
        lines.append(f"  filter check: NOT CHECKED: {check['unchecked']}")
    if check and check["search"]:
        s = check["search"]
        lines.append(f"  full-text check: {s['found']} of {s['queries']} sampled rows are in the top {s['k']} of a "
                     "query of their own text")
    for f in r["recall"]:
        refine = f"refine_factor {f['refine_factor']}" if f["refine_factor"] else "no refine"
        lines.append(
            f"  recall@{f['k']} {f['recall']:.3f} at nprobes {f['nprobes']}, {refine} "
            f"({f['queries']} queries, exact search on the executors)"
        )
    if any(f["refine_factor"] for f in r["recall"]) and any(not f["refine_factor"] for f in r["recall"]):
        lines.append("  (a refine_factor R re-ranks R x k candidates by exact distance, reading their vectors: "
                     "higher recall for more work per query)")
    q = r.get("query_settings")
    if q:
        split = bool(q["grid"]) and q["grid"][0].get("confirm_recall") is not None
        lines.append(f"  query settings for recall@{q['k']} >= {q['target']} ({q['queries']} queries"
                     + (", a setting chosen on half of them and confirmed on the other "
                        f"{q['queries'] - q['queries'] // 2}"
                        if split else "") + f"; on {q['where']}):")
        lines.append("    nprobes  refine  recall" + ("  choose  confirm" if split else "") + "  p50 ms  p95 ms")
        for s in q["grid"]:
            mark = "  <- recommended" if s == q["recommended"] else ""
            halves = f"  {s['select_recall']:.3f}   {s['confirm_recall']:.3f}" if split else ""
            lines.append(f"    {s['nprobes']:>7}  {s['refine_factor'] or '-':>6}  {s['recall']:.3f}{halves}  "
                         f"{s['latency_ms_p50']:>6.2f}  {s['latency_ms_p95']:>6.2f}{mark}")
        if q["recommended"]:
            s = q["recommended"]
            refine = f"refine_factor={s['refine_factor']}" if s["refine_factor"] else "no refine"
            if split:
                low, high = s["confirm_interval"]
                figure = (f"recall@{q['k']} {s['confirm_recall']:.3f} on the queries it was not chosen with "
                          f"(95% interval {low:.3f}-{high:.3f})")
            else:
                figure = f"recall@{q['k']} {s['recall']:.3f}"
            lines.append(f"  query with nprobes={s['nprobes']}, {refine}: {figure}, {s['latency_ms_p50']:.1f} ms p50")
            if split and s["confirm_recall"] < q["target"]:
                lines.append(f"  NOT CONFIRMED: on the queries it was not chosen with it reads under {q['target']}: "
                             f"{q['queries'] // 2} queries a half are few; give more --verify-queries (or a "
                             "--query-file of more queries) for a surer choice")
        else:
            lines.append(f"  NO SETTING REACHES recall@{q['k']} {q['target']}: {q['advice']}")
    if r["outcome"] == "recall_below_minimum":
        lines.append(f"  RECALL BELOW --min-recall {r['min_recall']}: {r['error']}")
    if r["timings_seconds"]:
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_seconds"].items()))
    return "\n".join(lines)


def measured_figures(result: JobResult) -> list[RecallFigure]:
    """Every recall measured: the check's settings and the --target-recall sweep's."""
    q = result.query_settings
    swept = [RecallFigure(s.nprobes, s.refine_factor, s.recall, q.queries, q.k) for s in q.grid] if q else []
    return [*result.recall, *swept]


def query_settings_doc(q, index_type: str) -> dict[str, Any]:
    """The report's `query_settings` from a QuerySettings."""
    return {
        "target": q.target, "k": q.k, "queries": q.queries, "where": q.where,
        "recommended": asdict(q.recommended) if q.recommended else None,
        "grid": [asdict(s) for s in q.grid], "advice": q.advice(index_type),
    }


def settings_of(config) -> dict:
    """The run's settings for the report: storage option values never leave the process."""
    out = asdict(config)
    out["storage_options"] = sorted(config.storage_options)
    return out


@contextlib.contextmanager
def reporting(config, result: JobResult):
    """Fill in the outcome, write the --report document whatever happens, apply --min-recall.

    The report is first written as "running" before anything else: a place it cannot be written
    is refused in one line before Spark starts, not found out at the end. A final write that fails
    fails the run (the README promises the report)."""
    if config.report:
        result.outcome = "running"
        try:
            write_report(config.report, config.storage_options, result.to_report())
        except Exception as e:
            raise InputError(f"cannot write --report {config.report}: {str(e).splitlines()[0][:300]}") from None
        result.outcome = "succeeded"
    failed = True
    try:
        yield result
        advice = recall_advice(measured_figures(result), config.min_recall, result.params.index_type,
                               swept=result.query_settings is not None) \
            if config.min_recall is not None and result.params else None
        if advice:
            result.outcome, result.error = "recall_below_minimum", advice
        failed = False
    except KeyboardInterrupt:
        result.outcome, result.error = "interrupted", "interrupted (Ctrl-C); rerun the same command to resume"
        raise
    except Exception as e:  # JobError, and anything unforeseen: the report says it failed
        result.outcome = "refused" if isinstance(e, InputError) else "failed"
        first = str(e).splitlines()[0][:300] if str(e) else ""
        result.error = str(e) if isinstance(e, JobError) else f"{type(e).__name__}: {first}"
        raise
    finally:
        result.finished_at = now_iso()
        if config.report:
            try:
                write_report(config.report, config.storage_options, result.to_report())
                log.info("report written to %s", config.report)
            except Exception as e:
                reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                if not failed:  # the run's own outcome wins when it already failed
                    raise JobError(f"the run finished ({result.outcome}) but its report could not be written "
                                   f"to {config.report}: {reason}") from None
                log.error("could not write the report to %s: %s", config.report, reason)
    if result.outcome == "recall_below_minimum":
        raise RecallTooLowError(result.error, result)


def write_report(path: str, storage_options, report: dict[str, Any]) -> None:
    """Write the report to a local path or an object-store URI."""
    write_file(path, storage_options, json.dumps(report, indent=2).encode())


def report_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as f:
        return json.load(f)
