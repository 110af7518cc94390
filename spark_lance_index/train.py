"""Phase 2 (train): the artifacts every segment must share, made once on the driver.

Segments built independently fit together only if they partition and encode vectors the
same way: the same IVF centroids, the same PQ codebook (IVF_PQ), the same RaBitQ rotation
(IVF_RQ). Lance refuses most mismatches only at merge time, after all the executor work, so
each artifact carries a sha256 fingerprint that every task reports back and the driver
checks before merging.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from .dataset import DatasetSnapshot, IndexParams, open_dataset
from .config import BuildConfig

log = logging.getLogger(__name__)


def array_fingerprint(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SharedArtifacts:
    """The trained pieces every segment build must use, and nothing else.

    Plain numpy and str so that it pickles small and cheaply into a Spark broadcast.
    """

    centroids: Optional[np.ndarray] = None  # vector types: (num_partitions, dim), the column's float type
    codebook: Optional[np.ndarray] = None  # IVF_PQ, IVF_HNSW_PQ: (256, dim)
    rq_model: Optional[str] = None  # IVF_RQ: the JSON from build_rq_model
    options: Optional[str] = None  # INVERTED: the tokenizer options every segment is built with (JSON)

    def fingerprints(self) -> dict[str, str]:
        """{artifact name: sha256} for the artifacts present."""
        out = {"centroids": array_fingerprint(self.centroids)} if self.centroids is not None else {}
        if self.options:
            out["options"] = text_fingerprint(self.options)
        if self.codebook is not None:
            out["codebook"] = array_fingerprint(self.codebook)
        if self.rq_model is not None:
            out["rotation"] = text_fingerprint(self.rq_model)
        return out

    def describe(self) -> str:
        """"centroids 1a2b3c4d5e6f, rotation ..." for logs: the first 12 hex digits of each."""
        return ", ".join(f"{k} {v[:12]}" for k, v in sorted(self.fingerprints().items()))

    @property
    def rotation_signs(self) -> Optional[list[int]]:
        """The RaBitQ fast-rotation sign bytes: the part of the rotation that differs per mint."""
        return json.loads(self.rq_model)["fast_rotation_signs"] if self.rq_model else None

    def centroids_arrow(self) -> pa.FixedSizeListArray:
        return to_fixed_size_list(self.centroids)

    def codebook_arrow(self) -> Optional[pa.FixedSizeListArray]:
        return None if self.codebook is None else to_fixed_size_list(self.codebook)


def to_fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])


def to_matrix(array: pa.FixedSizeListArray) -> np.ndarray:
    dim = array.type.list_size
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, dim).copy()


def training_sample_rate(params: IndexParams, max_sample_rows: int) -> int:
    """Rows per partition to sample, lowered so the driver never holds more than the cap."""
    return max(1, min(params.sample_rate, max_sample_rows // params.num_partitions))


def train_artifacts(config: BuildConfig, snap: DatasetSnapshot, params: IndexParams) -> SharedArtifacts:
    """Train IVF centroids (and the PQ codebook), and mint the RaBitQ rotation exactly once.

    What a type needs is said by its `IndexType` (index_types.py). SQ bounds are not among the
    shared artifacts: Lance takes them per segment from the segment's rows (see index_types).

    Training reads a bounded sample (`training_sample_rate` x partitions rows) through
    Lance's own k-means, so the centroids are what a one-node `create_index` would train.
    """
    if not params.kind.is_vector:  # scalar and text segments share their build options only
        return SharedArtifacts(options=params.options or None)
    from lance.lance import indices as lance_indices

    ds = open_dataset(snap.uri, config.storage_options, snap.version)
    rate = training_sample_rate(params, config.max_sample_rows)
    if rate < params.sample_rate:
        log.info(
            "training sample capped at %d rows: %d rows per partition instead of %d",
            rate * params.num_partitions, rate, params.sample_rate,
        )
    centroids = lance_indices.train_ivf_model(
        ds._ds, snap.column, snap.dim, params.num_partitions, params.metric, rate,
        config.max_iters, None,
    )
    codebook = None
    if params.kind.codebook:
        codebook = to_matrix(
            lance_indices.train_pq_model(
                ds._ds, snap.column, snap.dim, params.num_sub_vectors, params.metric,
                rate, config.max_iters, centroids, None,
            )
        )
    rq_model = None
    if params.kind.rotation:
        # num_bits is passed explicitly on both sides (here and in every build): a mismatch fails.
        rq_model = lance_indices.build_rq_model(snap.dim, num_bits=params.num_bits)
    return SharedArtifacts(centroids=to_matrix(centroids), codebook=codebook, rq_model=rq_model)
