"""`update`'s own steps around the shared pipeline: the no-op, the report entry, the drift check.

What the update encodes and which segments it replaces is decided in `update.py` (no Spark);
the build, check, merge, commit and read-back phases are the build's (`phases.py`), run in
their order by `pipeline.update_pipeline`.
"""

from __future__ import annotations

import logging

from .cleanup import discard_own_work
from .report import JobResult
from .resume import Inspection
from .timing import phase
from .update import DriftFigures, UpdatePlan, partition_shift, partition_sizes

log = logging.getLogger("spark_lance_index")


def update_summary(plan: UpdatePlan) -> dict:
    """What an update encodes, for the report."""
    return {
        "new_rows": plan.new_rows, "new_fragments": len(plan.new_fragments),
        "segments_reencoded": len(plan.reencoded), "rows_reencoded": sum(s.num_rows for s in plan.reencoded),
        "segments_kept": len(plan.kept),
    }


def finish_noop(config, insp: Inspection, result: JobResult) -> None:
    """Nothing to index: commit nothing, start no Spark, and remove what an earlier run of this
    update left (its state cannot be used: the index covers everything now)."""
    log.info("index %r covers every fragment of %s at version %d: nothing to update",
             config.name, insp.snap.uri, insp.snap.version)
    if insp.state.exists() or insp.state.has_leftovers():
        lease = insp.state.acquire_lease()
        try:
            discard_own_work(config, insp.snap, insp.state, lease)
        finally:
            lease.release()
    result.committed_version = None
    result.num_rows = sum(s.num_rows for s in insp.update.kept)
    result.segments_committed = 0


@phase("drift")
def measure_drift(config, plan: UpdatePlan, committed_ds, by_origin) -> DriftFigures:
    """Whether the index's model still fits the data: how differently the new rows fall into
    partitions than the older rows, and recall on new rows against older rows (when measured)."""
    before = {s.uuid: s.partitions for s in (*plan.kept, *plan.reencoded)}  # read at the pinned version
    shift, uncertainty, rows = partition_shift(
        before, partition_sizes(committed_ds.stats.index_stats(config.name)),
        [s.uuid for s in plan.kept], {s.uuid: s.num_rows for s in plan.reencoded})
    recall = {}
    if by_origin is not None:
        new, old = by_origin
        recall = dict(recall_new_rows=new.recall, recall_old_rows=old.recall,
                      recall_setting=f"nprobes {new.nprobes}"
                      + (f", refine {new.refine_factor}" if new.refine_factor else ""),
                      recall_samples=min(new.queries, old.queries) * new.k)
    figures = DriftFigures(shift, rows, uncertainty, **recall)
    if figures.advice:
        log.warning("%s", figures.advice)
    return figures
