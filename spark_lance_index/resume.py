"""Inspect (with dataset.py): which job this is, what an earlier run of it left, and every input checked.

A job is its identity: the dataset (where Lance keeps it), the column, the index name and the
parameters the user gave. Its id is a hash of that identity, not of the dataset's latest
version, so a rerun after rows were appended finds the crashed run's state. What it finds is
used only when job.json carries the same identity, its pinned version still exists, and the
fragments it planned are still valid; otherwise the rerun starts afresh.

Nothing here writes: the state of a stale run is removed later, once this run holds the lease.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from .checks import load_queries
from .commit import check_fragments_unchanged
from .config import BuildConfig
from .dataset import (
    DatasetSnapshot,
    FragmentInfo,
    IndexParams,
    fragment_signature,
    index_conflict,
    index_infos,
    open_dataset,
    resolve_params,
    snapshot_dataset,
)
from .errors import CannotExtend, DatasetChangedError, InputError, MissingVersionError
from .index_types import type_of_index
from .plan import policy_segment_rows
from .state import JobState, default_jobs_root
from .storage import Location, locate
from .summary import plural
from .timing import phase
from .train import SharedArtifacts
from .update_plan import SegmentPolicy, UpdatePlan, index_changed, plan_update, read_index_model

log = logging.getLogger("spark_lance_index")


def job_identity(config: BuildConfig, dataset: Location) -> dict:
    """What makes two runs the same job: the same index on the same data, with the same
    user-given parameters. Task sizes are not part of it (they do not change the index)."""
    identity: dict[str, Any] = {
        "dataset": str(dataset), "column": config.index.column, "index_name": config.index.name,
        "index_type": config.index.index_type, "metric": config.index.metric, "version": config.dataset.version,
        "num_partitions": config.index.num_partitions, "num_bits": config.index.num_bits,
        "num_sub_vectors": config.index.num_sub_vectors, "sample_rate": config.training.sample_rate,
        "max_sample_rows": config.training.max_sample_rows, "max_iters": config.training.max_iters,
    }
    # the HNSW flags join the identity only when given, so the ids of other jobs stay as they were
    hnsw = {"m": config.index.m, "ef_construction": config.index.ef_construction, "max_level": config.index.max_level}
    identity.update({k: v for k, v in hnsw.items() if v is not None})
    if config.index.text_options:  # likewise the tokenizer options of a full-text index
        identity["text_options"] = config.index.text_options
    return identity


def update_identity(config: BuildConfig, dataset: Location) -> dict:
    """An update is the same job while it extends the same index with the same segment policy."""
    return {
        "mode": "update", "dataset": str(dataset), "column": config.index.column, "index_name": config.index.name,
        "max_segment_rows": config.sizing.max_segment_rows, "segment_ratio": config.sizing.segment_ratio,
    }


def make_job_id(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Inspection:
    """Everything inspect found: the pinned snapshot, and what the job directory holds."""

    snap: DatasetSnapshot
    params: IndexParams
    queries: Optional[Union[np.ndarray, list[np.ndarray]]]  # --query-file; a list of (vectors, dim) for multivectors
    state: JobState
    identity: dict
    job: Optional[dict]  # job.json of an earlier run of this job, when it can be resumed
    stale: Optional[str] = None  # why an earlier run's state cannot be resumed
    committed: Optional[list[str]] = None  # an earlier run's commit landed: these segments
    update: Optional[UpdatePlan] = None  # `update`: what it encodes and which segments stay
    model: Optional[SharedArtifacts] = None  # `update`: the index's own model, instead of training
    run: str = ""  # the run's id (job.json), part of its segment uuids
    job_file_seen: bool = False  # job.json was there at inspect (checked again once the run holds the job)

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def fragments_to_index(self) -> tuple[FragmentInfo, ...]:
        """The fragments the job encodes: every live one for a build, the update's for an update."""
        return self.update.fragments if self.update is not None else self.snap.live_fragments


@phase("inspect")
def inspect_inputs(config: BuildConfig) -> Inspection:
    """Pin the dataset version and check every input; raises InputError, writes nothing."""
    config.validate()
    identity, state = _job_state(config, job_identity)
    latest = open_dataset(config.dataset.uri, config.dataset.storage_options)
    job = state.load_job(identity)
    seen = job is not None
    snap, stale = None, None
    if job is not None:
        snap, stale = _resumable_snapshot(config, job, latest)
    if snap is None:
        snap = snapshot_dataset(config)
    params = resolve_params(config, snap)
    resuming = job if job is not None and stale is None else None
    if job is None and state.has_leftovers():  # a run stopped in its cleanup: finished once leased
        stale = "an earlier run of this job stopped while cleaning up"
    own = state.committing()
    live = [f.fragment_id for f in snap.live_fragments]
    latest_indexes = index_infos(latest)
    for where, indexes in ((f"version {snap.version}", snap.indexes),
                           (f"the latest version {latest.version}", latest_indexes)):
        conflict = index_conflict(config.index.name, config.index.column, bool(config.index.replace), indexes,
                                  own_segments=own, planned=live, index_type=config.index.index_type)
        if conflict:
            raise InputError(f"{conflict} (at {where} of {config.dataset.uri})")
    committed = None
    if own is not None and any(i.name == config.index.name and set(i.segments) == set(own) for i in latest_indexes):
        committed = own
        if resuming is None:  # its plan cannot be resumed (gone or stale): only its cleanup is left
            job = None
    queries = load_queries(config, snap.dim, snap.multivector)
    shape = f"{snap.value_type}[{snap.dim}]" if params.kind.is_vector else snap.value_type
    log.info("dataset %s version %d: %s rows in %s, column %r %s", snap.uri, snap.version,
             f"{snap.num_rows:,}", plural(len(snap.fragments), "fragment"), snap.column, shape)
    return Inspection(snap, params, queries, state, identity, resuming if job is not None else None, stale, committed,
                      job_file_seen=seen)


def _job_state(config: BuildConfig, identity_of: Callable[[BuildConfig, Location], dict]) -> tuple[dict, JobState]:
    """The job's identity and its state folder, which must lie outside the dataset."""
    dataset = locate(config.dataset.uri)
    root = locate(config.dataset.job_dir) if config.dataset.job_dir else default_jobs_root(dataset)
    if dataset.contains(root):
        raise InputError(
            f"the job directory {root} is {'the dataset' if root.contains(dataset) else 'inside the dataset'} "
            f"{dataset}: give a --job-dir outside it"
        )
    identity = identity_of(config, dataset)
    return identity, JobState(root, make_job_id(identity), config.dataset.storage_options,
                              owns_root=not config.dataset.job_dir, index_key=index_key(config, dataset))


def index_key(config: BuildConfig, dataset: Location) -> dict:
    """What `discard` finds a job's folder by, whatever the job's other parameters."""
    return {"dataset": str(dataset), "column": config.index.column, "index_name": config.index.name}


@phase("inspect")
def inspect_update(config: BuildConfig) -> Inspection:
    """Pin the latest version, read the index's model and plan what the update encodes.

    An earlier run's state is resumed when its pinned version and planned fragments are still
    valid and the index still has the segments it pinned; if the index holds the segments that
    run recorded for its commit, the commit landed and this run finishes it. Writes nothing.
    """
    config.validate()
    if config.dataset.version is not None:
        raise InputError("update always extends the index at the latest version: drop --version")
    latest = open_dataset(config.dataset.uri, config.dataset.storage_options)
    config = _as_its_index_type(config, latest)
    identity, state = _job_state(config, update_identity)
    job = state.load_job(identity)
    snap, stale, committed = None, None, None
    if job is None and state.has_leftovers():  # a run stopped in its cleanup: finished once leased
        now = next((i for i in index_infos(latest) if i.name == config.index.name), None)
        own = state.committing()
        committed = own if own and now is not None and set(own) <= set(now.segments) else None
        stale = "an earlier run of this job stopped while cleaning up"
    if job is not None:
        snap, stale = _resumable_snapshot(config, job, latest)
        indexes = index_infos(latest)
        now = next((i for i in indexes if i.name == config.index.name), None)
        own = state.committing()
        if own and now is not None and set(own) <= set(now.segments):
            try:  # the earlier run's commit landed: finish it at its pinned version
                snap, stale, committed = snap or snapshot_dataset(config, job["version"]), None, own
            except MissingVersionError:
                # That version was cleaned up: nothing to check against; what the run left is
                # removed (its segments, in use, are kept) and the update starts afresh.
                snap, stale = None, f"its commit landed, and its pinned version {job['version']} no longer exists"
        elif stale is None and index_changed(config.index.name, indexes, job.get("index_segments", [])):
            snap, stale = None, "the index changed since it pinned it"
    if snap is None:
        snap = snapshot_dataset(config)
    model = read_index_model(snap, config.index.name, config.dataset.storage_options)
    policy = SegmentPolicy(policy_segment_rows(config, model.params, snap), config.sizing.segment_ratio)
    plan = plan_update(model, snap, policy)
    log.info(
        "dataset %s version %d: index %r (%s, %d partitions, %d segments): %s",
        snap.uri, snap.version, config.index.name, model.params.index_type, model.params.num_partitions,
        len(model.segments), plan.describe(),
    )
    queries = load_queries(config, snap.dim, snap.multivector) if model.params.kind.is_vector else None
    resuming = job if job is not None and stale is None else None
    return Inspection(snap, model.params, queries, state, identity, resuming, stale, committed,
                      update=plan, model=model.artifacts, job_file_seen=job is not None)


def _as_its_index_type(config: BuildConfig, latest: Any) -> BuildConfig:
    """An update takes its type from the index: a scalar or full-text index's column is read as
    the build reads it (the index type in the config). A column with no index of that name is
    refused in one line."""
    info = next((i for i in index_infos(latest) if i.name == config.index.name), None)
    if info is None:
        names = ", ".join(f"{i.name} on {i.columns[0]}" for i in index_infos(latest)) or "none"
        raise InputError(f"no index named {config.index.name!r} on {config.dataset.uri} (its indexes: {names}): "
                         "build it first (spark-lance-index build), or give --index-name")
    if info.is_vector:
        return config
    kind = type_of_index(info.index_type)
    if kind is None:
        raise CannotExtend(f"cannot update the index {config.index.name!r}: it is {info.index_type}, a type this job "
                         "does not build")
    return dataclasses.replace(config, index=dataclasses.replace(config.index, index_type=kind.name))


def _resumable_snapshot(config: BuildConfig, job: dict, latest: Any) -> tuple[Optional[DatasetSnapshot], Optional[str]]:
    """(the snapshot at the earlier run's pinned version, None) if its state can be resumed,
    else (None, why not)."""
    version = job["version"]
    try:
        snap = snapshot_dataset(config, version)
    except MissingVersionError:  # (the store unreachable, say, raises on: the state is kept for a rerun)
        return None, f"its pinned version {version} no longer exists"
    planned_ids = {f for g in job["groups"] for f in g["fragment_ids"]}
    planned = [f for f in snap.fragments if f.fragment_id in planned_ids]
    if fragment_signature(planned) != job.get("fragments"):  # the dataset was recreated under the same name
        return None, f"version {version} no longer holds the fragments it planned"
    try:
        check_fragments_unchanged(latest, config.index.column, planned, version)
    except DatasetChangedError as e:
        return None, str(e).split(";")[0]
    return snap, None
