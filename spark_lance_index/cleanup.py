"""The cleanup phase: remove what the job wrote and no version of the dataset uses, and only that.

Only segment directories the job marked (attempt markers in its job directory) are ever
deleted, and never one that any version of the dataset references: a directory the job marked
and then committed is no longer a leftover, and older versions keep their files until Lance's
own `cleanup_old_versions` (as with Lance's own replace). Then the job's own files, in an order a
kill at any point leaves for a rerun to finish (state.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from .commit import interrupted_write_leftovers
from .config import BuildConfig
from .dataset import DatasetSnapshot, open_dataset
from .lease import Lease
from .state import JobState
from .storage import Location, index_dirs
from .timing import phase

log = logging.getLogger("spark_lance_index")

VERSION_READS = 16  # versions read at a time: one manifest request each on an object store


def referenced_segments(uri: str, storage_options: Mapping[str, str], since: Optional[int]) -> set[str]:
    """The segment uuids any index references at any version of the dataset from `since` on
    (every version: None). A directory the job wrote cannot be referenced by a version before
    the one its run pinned, so markers carry that version and the walk starts there."""
    latest = open_dataset(uri, storage_options)
    numbers = [v["version"] for v in latest.versions() if since is None or v["version"] >= since]

    def segments_at(version: int) -> set[str]:
        try:
            ds = latest.checkout_version(version)
        except OSError:  # removed meanwhile (cleanup_old_versions): it references nothing any more
            if version == latest.version:
                raise
            return set()
        return {str(s.uuid) for i in ds.describe_indices() for s in i.segments}

    with ThreadPoolExecutor(VERSION_READS) as pool:
        return set().union(*pool.map(segments_at, numbers)) if numbers else set()


def remove_own_leftovers(uri: str, where: Location, storage_options: Mapping[str, str], state: JobState,
                         keep: Iterable[str] = ()) -> list[str]:
    """Delete the segment directories the job marked that are present, not in `keep`, and
    referenced by no version of the dataset. -> the uuids removed."""
    files = index_dirs(where, storage_options)
    present: set[str] = set(files.entries())  # one listing, not one request per marker
    marked = {u: v for u, v in state.attempts().items() if u in present and u not in set(keep)}
    if not marked:
        return []
    since = None if any(v is None for v in marked.values()) else min(v for v in marked.values() if v is not None)
    in_use = referenced_segments(uri, storage_options, since)
    kept = sorted(set(marked) & in_use)
    if kept:
        log.info("%d directories the job wrote are used by a committed version of the dataset and stay until "
                 "Lance's cleanup_old_versions removes that version: %s", len(kept), ", ".join(kept[:4]))
    removed = sorted(set(marked) - in_use)
    files.delete_many(removed, dirs=True)
    return removed


@phase("cleanup")
def cleanup(config: BuildConfig, snap: DatasetSnapshot, state: JobState, keep: Iterable[str],
            lease: Lease) -> tuple[int, list[str]]:
    """Remove our segment directories no version uses, then our files in the job directory.
    -> (directories removed, unaccounted directories left after interrupted merges)"""
    lease.check()
    keep = list(keep)
    unaccounted = interrupted_write_leftovers(snap.location, config.dataset.storage_options, state.pending_writes(),
                                              state.attempts(), keep)
    if unaccounted:
        log.warning(
            "%d directories under _indices appeared while this job built or merged segments and are not accounted for "
            "(a task killed mid-write, or another writer): %s; left in place, since the job cannot "
            "prove they are its own", len(unaccounted), ", ".join(unaccounted[:8]),
        )
    state.forget_plan()  # first: see state.py
    removed = remove_own_leftovers(snap.uri, snap.location, config.dataset.storage_options, state, keep)
    state.discard()
    return len(removed), unaccounted


def discard_own_work(config: BuildConfig, snap: DatasetSnapshot, state: JobState, lease: Lease) -> list[str]:
    """Remove the segment directories the job marked that no version uses, and its files: what
    a run refused before its commit, or an earlier run that cannot be resumed, left. Only while
    this run still holds the job. -> the uuids removed."""
    lease.check()
    state.forget_plan()  # first: see state.py
    removed = remove_own_leftovers(snap.uri, snap.location, config.dataset.storage_options, state)
    state.discard()
    return removed
