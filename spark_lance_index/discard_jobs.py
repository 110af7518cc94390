"""`spark-lance-index discard`: remove the state of an index's jobs, to start afresh.

What "delete the job directory" used to be, without its hazards: only the folders of this
index's jobs (the dataset, column and index name of the flags; a `build` or an `update`, with
any parameters), only the files the job writes there (a user's file survives), and only the
segment directories the job marked that no version of the dataset references. A live run keeps
its job (the lease); a dead run's lease, or one that cannot be read, is cleared. No Spark.
"""

from __future__ import annotations

import logging
import re

from .cleanup import remove_own_leftovers
from .config import BuildConfig
from .errors import JobError
from .lease import read_runs
from .resume import index_key, job_identity, make_job_id, update_identity
from .state import JobState, default_jobs_root
from .storage import Files, locate

log = logging.getLogger("spark_lance_index")

_JOB_FOLDER = re.compile(r"^[0-9a-f]{16}$")


def jobs_of_index(config: BuildConfig) -> list[JobState]:
    """The job folders under the root that belong to this index: the ids the flags give (a
    build's and an update's), and any folder whose job.json names the same dataset, column and
    index."""
    dataset = locate(config.dataset.uri)
    root = locate(config.dataset.job_dir) if config.dataset.job_dir else default_jobs_root(dataset)
    ids = {make_job_id(job_identity(config, dataset)), make_job_id(update_identity(config, dataset))}
    ids |= {name for name in Files(root, config.dataset.storage_options).entries() if _JOB_FOLDER.match(name)}
    states = [JobState(root, job_id, config.dataset.storage_options, owns_root=not config.dataset.job_dir)
              for job_id in sorted(ids)]
    return [s for s in states if _same_index(s, config)]


def _same_index(state: JobState, config: BuildConfig) -> bool:
    """The folder says it is this index's job (`index.json`, or a job.json of an older release);
    a folder that says nothing is this index's only by its name (the hash of the flags' identity)."""
    found = state.index_of()
    if found is None:
        return state.job_id in {make_job_id(job_identity(config, locate(config.dataset.uri))),
                                make_job_id(update_identity(config, locate(config.dataset.uri)))}
    return found == index_key(config, locate(config.dataset.uri))


def run_discard(config: BuildConfig) -> list[str]:
    """Discard every job of the index the flags name. -> one line per job (JobBusyError if a
    live run holds one: nothing of that job is touched)."""
    try:
        return _discard(config)
    except OSError as e:
        raise JobError(f"cannot discard the job state: {str(e).splitlines()[0][:300]} (check --job-dir and the "
                       "storage options)") from None


def _discard(config: BuildConfig) -> list[str]:
    lines = []
    for state in jobs_of_index(config):
        if not (state.exists() or state.has_leftovers() or read_runs(state.files, tasks=False)):
            continue
        lease = state.acquire_lease()
        try:
            state.forget_plan()
            removed = remove_own_leftovers(config.dataset.uri, locate(config.dataset.uri),
                                           config.dataset.storage_options, state)
            state.discard()
        finally:
            lease.release()
        lines.append(f"discarded job {state.job_id} in {state.uri}: removed {len(removed)} segment directories "
                     "it wrote "
                     "that no version of the dataset uses, and its state files")
        log.info("%s", lines[-1])
    if not lines:
        where = config.dataset
        lines.append(f"nothing to discard: no state of index {config.index.name!r} on {where.uri} under "
                     f"{locate(where.job_dir) if where.job_dir else default_jobs_root(locate(where.uri))}")
    return lines
