"""`update`'s own steps around the shared pipeline: the no-op, the report entry, the drift check.

What the update encodes and which segments it replaces is decided in `update.py` (no Spark);
the build, check, merge, commit and read-back phases are the build's (`phases.py`), run in
their order by `pipeline.update_pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from .cleanup import discard_own_work
from .config import BuildConfig
from .dataset import DatasetSnapshot
from .errors import InputError
from .exact_search import RecallFigure
from .report import JobResult
from .resume import Inspection
from .timing import phase
from .update_plan import (
    MIN_ROWS_PER_PARTITION_FOR_SHIFT,
    DriftFigures,
    UpdatePlan,
    partition_shift,
    partition_sizes,
)

log = logging.getLogger("spark_lance_index")


def update_summary(plan: UpdatePlan) -> dict:
    """What an update encodes, for the report."""
    return {
        "new_rows": plan.new_rows, "new_fragments": len(plan.new_fragments),
        "segments_reencoded": len(plan.reencoded), "rows_reencoded": sum(s.num_rows for s in plan.reencoded),
        "segments_kept": len(plan.kept),
    }


def finish_noop(config: BuildConfig, insp: Inspection, result: JobResult) -> None:
    """Nothing to index: commit nothing, start no Spark, and remove what an earlier run of this
    update left (its state cannot be used: the index covers everything now)."""
    log.info("index %r covers every fragment of %s at version %d: nothing to update",
             config.index.name, insp.snap.uri, insp.snap.version)
    if insp.state.exists() or insp.state.has_leftovers():
        lease = insp.state.acquire_lease()
        try:
            discard_own_work(config, insp.snap, insp.state, lease)
        finally:
            lease.release()
    result.committed_version = None
    assert insp.update is not None
    result.num_rows = sum(s.num_rows for s in insp.update.kept)
    result.segments_committed = 0


@phase("drift")
def measure_drift(config: BuildConfig, plan: UpdatePlan, committed_ds: Any,
                  by_origin: Optional[tuple[RecallFigure, RecallFigure, float]],
                  snap: DatasetSnapshot) -> DriftFigures:
    """Whether the index's model still fits the data: how differently the new rows fall into
    partitions than the older rows, and recall on new rows against older rows (when measured)."""
    before = {s.uuid: s.partitions for s in (*plan.kept, *plan.reencoded)}  # read at the pinned version
    shift, uncertainty, rows = partition_shift(
        before, partition_sizes(committed_ds.stats.index_stats(config.index.name)),
        [s.uuid for s in plan.kept], reencoded_live_entries(plan, snap))
    partitions = len(next(iter(before.values()), ()))
    if snap.multivector and plan.new_rows < MIN_ROWS_PER_PARTITION_FOR_SHIFT * partitions:
        shift, uncertainty = None, 0.0  # a row's vectors are not independent: as many rows as a row index needs
    recall: dict[str, Any] = {}
    if by_origin is not None:
        new, old, gap_error = by_origin
        recall = dict(recall_new_rows=new.recall, recall_old_rows=old.recall,
                      recall_setting=f"nprobes {new.nprobes}"
                      + (f", refine {new.refine_factor}" if new.refine_factor else ""),
                      recall_samples=min(new.queries, old.queries) * new.k, recall_gap_error=gap_error)
    figures = DriftFigures(shift, rows, uncertainty, shift_unit="vectors" if snap.multivector else "rows", **recall)
    if figures.advice:
        log.warning("%s", figures.advice)
    return figures


def reencoded_live_entries(plan: UpdatePlan, snap: DatasetSnapshot) -> dict[str, int]:
    """The live entries, as Lance counts them in a segment's partitions, of each segment the
    update re-encoded: its live rows. A multivector index counts vectors, and which vectors of a
    segment were deleted cannot be known without reading them: all of them when nothing of its
    fragments was deleted, else none are taken as live, so the shift's uncertainty bounds it."""
    if not snap.multivector:
        return {s.uuid: s.num_rows for s in plan.reencoded}
    fragments = {f.fragment_id: f for f in snap.fragments}
    untouched = lambda s: s.num_rows > 0 and all(  # noqa: E731
        f in fragments and fragments[f].num_rows == fragments[f].physical_rows for f in s.fragment_ids)
    return {s.uuid: sum(s.partitions) if untouched(s) else 0 for s in plan.reencoded}


def update_target(uri: str, column: Optional[str], index_name: Optional[str],
                  storage_options: Mapping[str, str]) -> tuple[str, Optional[str]]:
    """(column, index name) for an `update` that did not name its column: the column of the
    index `index_name`, or of the table's only vector index. InputError otherwise."""
    if column:
        return column, index_name
    if not uri:
        raise InputError("--uri is required: the Lance dataset whose index to update")
    from .dataset import index_infos, open_dataset

    indexes = index_infos(open_dataset(uri, storage_options))
    vector = [i for i in indexes if i.is_vector]
    if index_name is not None:
        found = next((i for i in indexes if i.name == index_name), None)
        if found is None:
            names = ", ".join(i.name for i in indexes) or "none"
            raise InputError(f"no index named {index_name!r} on {uri} (its indexes: {names})")
        return found.columns[0], index_name
    if len(vector) == 1:
        return vector[0].columns[0], vector[0].name
    if not vector:
        if indexes:
            raise InputError(f"{uri} has no vector index: give column= or index_name= for one of its other "
                             "indexes, or update them all with update_all")
        raise InputError(f"{uri} has no index to update: build one first (spark-lance-index build)")
    listed = ", ".join(f"{i.name} on {i.columns[0]}" for i in vector)
    raise InputError(f"{uri} has {len(vector)} vector indexes ({listed}): give column= or index_name=, "
                     "or update them all with update_all")


def fill_update_target(file_values: Mapping[str, Any], flags: dict) -> None:
    """Put the column (and index name) an update without --column extends into `flags`."""
    given = {**file_values, **{k: v for k, v in flags.items() if v is not None}}
    storage = {**(file_values.get("storage_options") or {}), **(flags.get("storage_options") or {})}  # as make_config
    if not given.get("column"):
        column, name = update_target(str(given.get("uri") or ""), None, given.get("index_name"), storage)
        flags["column"], flags["index_name"] = column, name
