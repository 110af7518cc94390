"""Phase 8 (cleanup): remove what the job wrote and no index uses, and only that.

Only segment directories the job marked (attempt markers in its job directory) are ever
deleted, and never one an index at the latest version uses; then the job's own files.
"""

from __future__ import annotations

import logging
from typing import Sequence

from .commit import interrupted_merge_leftovers, remove_leftovers
from .dataset import DatasetSnapshot, index_infos, open_dataset
from .state import JobState
from .timing import phase

log = logging.getLogger("spark_lance_index")


@phase("cleanup")
def cleanup(config, snap, state: JobState, keep: Sequence[str], lease) -> tuple[int, list[str]]:
    """Remove our segment directories the index does not use, then our files in the job
    directory. -> (directories removed, unaccounted directories left after interrupted merges)"""
    lease.check()
    attempts = state.attempts()
    unaccounted = interrupted_merge_leftovers(snap.location, config.storage_options, state.merges(), attempts, keep)
    if unaccounted:
        log.warning(
            "%d directories under _indices appeared while this job built or merged segments and are not accounted for "
            "(a task killed mid-write, or another writer): %s; left in place, since the job cannot "
            "prove they are its own", len(unaccounted), ", ".join(unaccounted[:8]),
        )
    removed = remove_leftovers(snap.location, config.storage_options, attempts, keep)
    state.discard()
    return len(removed), unaccounted


def discard_own_work(config, snap: DatasetSnapshot, state: JobState, lease, commit_landed: bool) -> None:
    """Remove the segment directories the job marked and its files, keeping any segment an
    index at the latest version uses, and, when an earlier run's recorded commit may have
    landed (`commit_landed`), the segments it recorded (older versions reference them). Only
    while this run still holds the job."""
    lease.check()
    latest = open_dataset(snap.uri, config.storage_options)
    in_use = {u for i in index_infos(latest) for u in i.segments}
    if commit_landed:
        in_use |= set(state.committing() or [])
    remove_leftovers(snap.location, config.storage_options, state.attempts(), keep=in_use)
    state.discard()
