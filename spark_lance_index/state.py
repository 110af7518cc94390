"""The job directory: what lets a job resume after its driver died, and clean up after itself.

Layout (under `<dataset uri>.index-jobs/<job id>/` unless --job-dir says otherwise):

    job.json                 the pinned version, parameters, plan and artifact fingerprints
    artifacts/centroids.npy  artifacts/codebook.npy  artifacts/rotation.json
    attempts/<uuid>          one empty marker per segment directory the job writes, written
                             before the directory is: cleanup removes only what is listed here
    segments/<group>.pkl     one finished segment per group, written by the task that built it

Executors write markers and segments themselves, so a driver that dies mid-build loses nothing
that finished.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from dataclasses import asdict
from typing import Mapping, Optional, Sequence

import numpy as np

from .build import SegmentResult
from .plan import FragmentGroup
from .storage import Files
from .train import SharedArtifacts

log = logging.getLogger("spark_lance_index")


def default_job_dir(uri: str, job_id: str) -> str:
    """Beside the dataset, on the same storage: `<uri>.index-jobs/<job id>`."""
    return f"{uri.rstrip('/')}.index-jobs/{job_id}"


class JobState:
    """Reads and writes one job directory. Cheap to pickle: tasks carry one to executors."""

    def __init__(self, uri: str, storage_options: Mapping[str, str]):
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options)
        self._files: Optional[Files] = None

    def __getstate__(self):
        return {"uri": self.uri, "storage_options": self.storage_options, "_files": None}

    @property
    def files(self) -> Files:
        if self._files is None:
            self._files = Files(self.uri, self.storage_options)
        return self._files

    # --- driver: the plan and the artifacts ---------------------------------------------

    def exists(self) -> bool:
        return self.files.exists("job.json")

    def save_job(
        self, job: Mapping, groups: Sequence[FragmentGroup], artifacts: SharedArtifacts
    ) -> None:
        """Write the artifacts first and job.json last: job.json marks a usable directory."""
        self.files.write("artifacts/centroids.npy", _npy(artifacts.centroids))
        if artifacts.codebook is not None:
            self.files.write("artifacts/codebook.npy", _npy(artifacts.codebook))
        if artifacts.rq_model is not None:
            self.files.write("artifacts/rotation.json", artifacts.rq_model.encode())
        record = {
            **job,
            "groups": [asdict(g) for g in groups],
            "fingerprints": artifacts.fingerprints(),
        }
        self.files.write("job.json", json.dumps(record, indent=1, default=str).encode())

    def load_job(self) -> tuple[dict, tuple[FragmentGroup, ...], SharedArtifacts]:
        """The saved job, plan and artifacts; the artifacts are checked against job.json."""
        job = json.loads(self.files.read("job.json"))
        groups = tuple(
            FragmentGroup(g["group_id"], tuple(g["fragment_ids"]), g["num_rows"]) for g in job["groups"]
        )
        names = set(self.files.list("artifacts"))
        artifacts = SharedArtifacts(
            centroids=_load_npy(self.files.read("artifacts/centroids.npy")),
            codebook=_load_npy(self.files.read("artifacts/codebook.npy")) if "codebook.npy" in names else None,
            rq_model=self.files.read("artifacts/rotation.json").decode() if "rotation.json" in names else None,
        )
        if artifacts.fingerprints() != job["fingerprints"]:
            raise ValueError(f"the artifacts in {self.uri} do not match its job.json")
        return job, groups, artifacts

    # --- executors: what they wrote ------------------------------------------------------

    def mark_attempt(self, index_uuid: str) -> None:
        self.files.write(f"attempts/{index_uuid}", b"")

    def save_segment(self, result: SegmentResult) -> None:
        self.files.write(f"segments/{result.group_id}.pkl", pickle.dumps(result))

    # --- driver: resume and cleanup ------------------------------------------------------

    def finished_segments(self) -> dict[int, SegmentResult]:
        out = {}
        for name in self.files.list("segments"):
            result = pickle.loads(self.files.read(f"segments/{name}"))
            out[result.group_id] = result
        return out

    def attempts(self) -> list[str]:
        return self.files.list("attempts")

    def discard(self) -> None:
        self.files.delete_dir()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
