"""The recall check: after a build's commit (phase "recall"), and as `spark-lance-index verify`.

Exact search runs on the executors (see exact_search.py); the committed index is queried from the
driver at each setting the user will query with.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from . import spark as spark_layer
from .config import BuildConfig
from .dataset import (
    IndexInfo,
    IndexParams,
    fragment_infos,
    index_infos,
    open_dataset,
    require_vector_column,
    resolve_vector_field,
    sampled_row_bytes,
    snapshot_dataset,
    vector_shape,
)
from .errors import CommitCheckError, InputError, SparkStageError
from .exact_search import (
    ExactSearchTask,
    RecallFigure,
    RecallSetting,
    ann_recall,
    default_refine_factors,
    drop_own_rows,
    exact_topk_of_fragments,
    merge_topk,
    sample_multivector_queries,
    sample_queries,
)
from .index_check import (
    MAX_DIGEST_ROWS,
    FilterCheck,
    FilterScanTask,
    SearchCheck,
    add_digests,
    compare,
    filter_of,
    index_side,
    probes_for,
    sample_values,
    scan_digests,
    search_check,
)
from .index_types import INDEX_TYPES
from .plan import default_rows_per_task, plan_groups
from .query_settings import QuerySettings, sweep
from .recall_advice import is_low, what_limits_recall, wider_nprobes
from .report import JobResult, reporting, settings_of
from .storage import read_file
from .timing import PhaseClock, phase
from .transport import transport_for

log = logging.getLogger("spark_lance_index")


def load_queries(config: BuildConfig, dim: int,
                 multivector: bool = False) -> Optional[Union[np.ndarray, list[np.ndarray]]]:
    """The --query-file vectors, checked against the column's dimension (None if not given):
    (queries, dim), or for a multivector column (queries, vectors per query, dim), returned as a
    list of (vectors, dim) queries."""
    if not config.checks.query_file:
        return None
    try:
        data = read_file(config.checks.query_file, config.dataset.storage_options)
        queries = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read --query-file {config.checks.query_file}: {str(e).splitlines()[0]}") from None
    shape = "(queries, vectors per query, {dim})" if multivector else "(queries, {dim})"
    if queries.ndim != (3 if multivector else 2) or queries.shape[-1] != dim or 0 in queries.shape:
        raise InputError(
            f"--query-file {config.checks.query_file} holds an array of shape {queries.shape}; "
            f"it needs {shape.format(dim=dim)} to match the column"
        )
    queries = queries.astype(np.float32)
    return list(queries) if multivector else queries


def sole_vector_index(ds: Any, column: str, index_name: str) -> IndexInfo:
    """The IndexInfo of `index_name`; refuse unless it is the only vector index on `column`
    at this version.

    Lance's nearest query has no index selector: with two vector indexes on a column it
    queries one of them, and the recall measured would be another index's."""
    indexes = index_infos(ds)
    vector = sorted(i.name for i in indexes if i.is_vector and column in i.columns)
    if vector != [index_name]:
        others = [n for n in vector if n != index_name]
        raise InputError(
            f"cannot measure the recall of index {index_name!r}: column {column!r} has the vector "
            f"indexes {vector} at version {ds.version}, and Lance queries one vector index per "
            f"column without saying which; drop {others} (or rebuild it with --replace --index-name)"
            if others else f"no vector index named {index_name!r} on column {column!r} at version {ds.version}"
        )
    return next(i for i in indexes if i.name == index_name)


@phase("recall")
def measure_recall(spark: Any, config: BuildConfig, uri: str, version: int, column: str, metric: str,
                   index_type: str, queries: Any, parallelism: int,
                   index_name: str, new_fragments: Optional[Sequence[int]] = None) -> RecallCheck:
    """recall@k of the committed index at each query setting, against exact search.

    With `new_fragments` (an update) and sampled queries, half the queries come from those
    fragments and half from the rest, in one exact search (`by_origin`: the figures at the
    first setting for new-row queries and older-row queries). With --target-recall, the same
    truth serves the sweep of query settings (`query_settings`)."""
    ds = open_dataset(uri, config.dataset.storage_options, version)
    index = sole_vector_index(ds, column, index_name)
    dim, _, multivector = vector_shape(resolve_vector_field(ds.schema, column), column)
    split = None
    own: Any = None  # the row each query was drawn from, which is not counted
    sample = sample_multivector_queries if multivector else sample_queries
    if queries is None and new_fragments:
        older = index.fragment_ids - set(new_fragments)
        fresh, fresh_own = sample(ds, column, (config.checks.verify_queries + 1) // 2, fragment_ids=new_fragments)
        old, old_own = sample(ds, column, config.checks.verify_queries - len(fresh), seed=1, fragment_ids=older) \
            if older else (fresh[:0], fresh_own[:0])
        queries = [*fresh, *old] if multivector else np.vstack([fresh, old])
        own, split = np.concatenate([fresh_own, old_own]), len(fresh)
    elif queries is None:
        queries, own = sample(ds, column, config.checks.verify_queries)
    # The index's recall, not the table's: the truth covers the fragments it indexes, and the
    # queries skip the rest (Lance would otherwise search unindexed rows exactly, and count them).
    fragments = [f for f in fragment_infos(ds, column) if f.num_rows > 0 and f.fragment_id in index.fragment_ids]
    bytes_per_row = sampled_row_bytes(ds, column) if multivector else dim * 4
    groups = plan_groups(fragments, rows_per_task=default_rows_per_task(
        sum(f.num_rows for f in fragments), bytes_per_row, parallelism))
    k = config.checks.recall_k
    tasks = [ExactSearchTask(uri, version, column, metric, g.fragment_ids, k + (own is not None),
                             g.num_rows, dict(config.dataset.storage_options), multivector) for g in groups]
    queries = queries if multivector else np.asarray(queries, dtype=np.float32)
    with spark_layer.job_group(spark, f"spark-lance-index-recall-{version}",
                               f"spark-lance-index: exact search for {len(queries)} queries"):
        try:
            truth = transport_for(spark, progress_interval=config.runtime.progress_interval).map_reduce(
                tasks, exact_topk_of_fragments, merge_topk, queries, label="exact search")
        except Exception as e:
            raise SparkStageError(f"exact search for the recall check failed after Spark's retries: "
                                  f"{spark_layer.failure_reason(e)}") from e
    truth_ids = drop_own_rows(truth.ids, own, k)
    refines = config.checks.refine_factor or default_refine_factors(index_type)
    settings = [RecallSetting(n, r or None) for n in config.checks.nprobes for r in refines]
    runs = ann_recall(ds, column, queries, truth_ids, settings, own)
    figures = [r.figure() for r in runs]
    for f in figures:  # the summary prints them: the log has them for --verbose only
        log.debug("recall@%d %.3f at nprobes %d refine %s (%d queries)", f.k, f.recall, f.nprobes,
                  f.refine_factor, f.queries)
    @functools.cache  # read once, and only when a check below needs it
    def partitions() -> int:
        return (ds.stats.index_stats(index_name).get("indices") or [{}])[0].get("num_partitions", 1)

    diagnosis = None
    if is_low(figures, config.checks.min_recall):  # what limits it: measured once more at a wider nprobes, read off
        wider = wider_nprobes(figures, partitions())
        extra = [r.figure() for r in ann_recall(ds, column, queries, truth_ids, [RecallSetting(wider, None)], own)] \
            if wider else []
        diagnosis = what_limits_recall(figures + extra, partitions(), index_type)
        log.warning("low recall (at most %.3f): %s", max(f.recall for f in figures), diagnosis)
    by_origin = None
    if split is not None and 0 < split < len(queries):  # the first setting's answers, split by origin
        new_rows, older_rows = slice(0, split), slice(split, None)
        by_origin = (runs[0].figure(new_rows), runs[0].figure(older_rows),
                     float(np.hypot(runs[0].standard_error(new_rows), runs[0].standard_error(older_rows))))
    swept = None
    if config.checks.target_recall is not None and len(queries):
        swept = sweep(ds, column, queries, truth_ids, index_type, partitions(), config.checks.target_recall, own=own)
        log.info("query settings: recommended %s", swept.recommended.describe(swept.k) if swept.recommended
                 else swept.advice(index_type))
    return RecallCheck(figures, by_origin, swept, diagnosis)


SCALAR_CHECK_VALUES = 20  # values sampled for the filter check (bounded by --verify-queries)


@phase("check")
def check_index(spark: Any, config: BuildConfig, uri: str, version: int, column: str, index_type: str,
                index_name: str, parallelism: int) -> IndexCheck:
    """A scalar index answers sampled filters exactly as a scan does, through itself; a full-text
    index finds sampled rows by their own text (index_check.py). CommitCheckError when a filter
    differs: the index is committed but wrong."""
    ds = open_dataset(uri, config.dataset.storage_options, version)
    kind = INDEX_TYPES[index_type]
    if kind.family == "text":
        search = search_check(ds, column, config.checks.verify_queries)
        log.info("full-text check: %d of %d sampled rows are in the top %d for a query of their own text",
                 search.found, search.queries, search.k)
        return IndexCheck(search=search)
    column_type = resolve_vector_field(ds.schema, column).type
    values = sample_values(ds, column, min(SCALAR_CHECK_VALUES, config.checks.verify_queries))
    probes = probes_for(index_type, column, column_type, values)
    if not probes:
        log.warning("filter check: no filter the %s index serves could be made from %r (%s): NOT CHECKED",
                    index_type, column, column_type)
        return IndexCheck(unchecked=f"no filter could be made from the sampled values of {column_type}")
    through_index = [index_side(ds, index_name, kind.stats_name, filter_of(p, column)) for p in probes]
    fragments = [f for f in fragment_infos(ds, column) if f.num_rows > 0]
    groups = plan_groups(fragments, rows_per_task=default_rows_per_task(
        sum(f.num_rows for f in fragments), sampled_row_bytes(ds, column), parallelism))
    storage = dict(config.dataset.storage_options)
    tasks = [FilterScanTask(uri, version, g.fragment_ids, g.num_rows, storage) for g in groups]
    if not tasks:
        return IndexCheck(unchecked="the table has no rows")
    with spark_layer.job_group(spark, f"spark-lance-index-check-{version}",
                               f"spark-lance-index: scan for {len(probes)} filters"):
        try:
            scanned = transport_for(spark, progress_interval=config.runtime.progress_interval).map_reduce(
                tasks, scan_digests, add_digests, (column, probes), label="filter scan")
        except Exception as e:
            raise SparkStageError(f"the scan for the filter check failed after Spark's retries: "
                                  f"{spark_layer.failure_reason(e)}") from e
    checks = [compare(p.sql, *side, scan) for p, side, scan in zip(probes, through_index, scanned)]
    log.info("filter check: %s", describe_filter_checks(checks))
    bad = next((c for c in checks if not c.ok), None)
    if bad is not None:
        what = ("the plan does not use it" if not bad.index_used
                else f"{bad.rows_index} rows through the index, {bad.rows_scan} by a scan"
                + ("" if bad.rows_index != bad.rows_scan else ", other row ids"))
        raise CommitCheckError(f"index {index_name!r} was committed at version {version} but is wrong: the filter "
                               f"`{bad.filter}` gives {what}")
    return IndexCheck(filters=checks)


def describe_filter_checks(checks: Sequence[FilterCheck]) -> str:
    """One line: how many filters matched a scan row for row, and how many by count only."""
    exact = sum(c.ok and c.same_rows is True for c in checks)
    counted = sum(c.ok and c.same_rows is None for c in checks)
    line = f"{exact} of {len(checks)} filters on sampled values return through the index exactly the rows a scan " \
           "without it returns"
    if counted:
        line += f"; {counted} more the same number of rows (over {MAX_DIGEST_ROWS:,} rows: row ids not compared)"
    return line


@dataclass(frozen=True)
class IndexCheck:
    """What the check phase of a scalar or text index found."""

    filters: list = field(default_factory=list)  # FilterCheck, one per filter
    search: Optional[SearchCheck] = None
    unchecked: Optional[str] = None  # why no filter was checked


@dataclass(frozen=True)
class RecallCheck:
    """What the recall phase measured."""

    figures: list[RecallFigure]
    # update: (new-row figure, older-row figure, standard error of their difference from the
    # spread of per-query recall) at the first setting
    by_origin: Optional[tuple[RecallFigure, RecallFigure, float]] = None
    query_settings: Optional[QuerySettings] = None  # --target-recall
    diagnosis: Optional[str] = None  # recall low at every setting: what limits it (recall_advice.py)


def run_verify(config: BuildConfig, spark: Any = None) -> JobResult:
    """`spark-lance-index verify`: measure recall@k of an existing index."""
    result = JobResult(job_id=None, uri=config.dataset.uri, index_name=config.index.name, column=config.index.column,
                       min_recall=config.checks.min_recall, settings=settings_of(config))
    with reporting(config, result):
        started = time.perf_counter()
        with PhaseClock() as clock:
            config.validate()
            if not INDEX_TYPES[config.index.index_type].is_vector:
                raise InputError(f"verify measures the recall of vector indexes; a {config.index.index_type} index is "
                                 "checked by build, right after its commit (filters against a scan)")
            require_vector_column(config, "verify")
            snap = snapshot_dataset(config)
            if config.index.name not in snap.index_names:
                raise InputError(f"no index named {config.index.name!r} on {snap.uri}: build it first, or give "
                                 "--index-name")
            queries = load_queries(config, snap.dim, snap.multivector)
            ds = open_dataset(snap.uri, config.dataset.storage_options, snap.version)
            sole_vector_index(ds, snap.column, config.index.name)
            stats = ds.stats.index_stats(config.index.name)
            if stats["index_type"] not in INDEX_TYPES:
                raise InputError(f"the index {config.index.name!r} is {stats['index_type']}; verify measures the "
                                 f"recall of {', '.join(INDEX_TYPES)} indexes")
            segment = (stats.get("segments") or stats.get("indices"))[0]
            result.params = IndexParams(stats["index_type"], segment["metric_type"], segment["num_partitions"],
                                        segment.get("sub_index", {}).get("num_bits", 0)
                                        if stats["index_type"] == "IVF_RQ" else 0,
                                        0, config.training.sample_rate)
            result.pinned_version = result.committed_version = snap.version
            result.num_rows, result.num_fragments = stats["num_indexed_rows"], stats["num_indexed_fragments"]
            result.unindexed_rows = stats["num_unindexed_rows"]
            result.unindexed_fragments = stats["num_unindexed_fragments"]
            spark, created = (spark, False) if spark is not None else spark_layer.get_session(
                config.runtime.master, config.runtime.app_name, config.runtime.verbose)
            try:
                result.spark_app_id, result.spark_master = spark_layer.application_id(spark), spark_layer.master(spark)
                check = measure_recall(spark, config, snap.uri, snap.version, snap.column,
                                       result.params.metric, result.params.index_type, queries,
                                       spark_layer.default_parallelism(spark), config.index.name)
                result.recall, result.query_settings = check.figures, check.query_settings
                result.recall_diagnosis = check.diagnosis
            finally:
                if created:
                    spark_layer.stop_session(spark)
        result.seconds = {**clock.seconds, "total": time.perf_counter() - started}
    return result
