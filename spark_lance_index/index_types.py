"""What each index type is, in one place: its one-node defaults, what its segments share, how a
segment is built, whether segments merge, and what raises its recall.

The defaults are one-node Lance's (pylance 14.0.2), read from its source: with no
`num_partitions`, `create_index` takes `clamp(live_rows // target_partition_size, 1, 4096)`
(`recommended_num_partitions`, lance-index `ivf/builder.rs`), where the target is the type's
`IndexType::target_partition_size` (4096 rows for IVF_FLAT and IVF_RQ, 8192 for IVF_PQ and IVF_SQ,
1 << 20 for the HNSW types); k-means samples 256 rows per partition for 50 iterations
(`IvfBuildParams::default`); IVF_RQ codes have 5 bits; HNSW graphs are built with m = 20,
ef_construction = 150, max_level = 7 (`HnswBuildParams::default`). A test builds each type with the
job and with one-node `create_index` at defaults and compares the committed settings.

Why some segments are never merged (measured on pylance 14.0.2, `docs/benchmarks.md`):
- SQ codes (IVF_SQ, IVF_HNSW_SQ) are scaled by bounds each segment takes from its own rows, and no
  API hands a segment build shared bounds. `merge_existing_index_segments` keeps the first
  segment's bounds and re-encodes nothing: recall@10 fell from .968 (unmerged) to .710 (merged) on
  data whose last fragment spans a wider range, with no error. Unmerged, each segment is searched
  with its own bounds and is as good as one-node's.
- An HNSW merge rebuilds every partition's graph from the merged vectors in one process (measured:
  merging 4 IVF_HNSW_FLAT segments of 25k rows took 4.8 s, the 4 builds together 4.4 s), which
  is the build's whole cost again, on one executor.
So for these types each build task writes one committed segment, and tasks are sized as segments
(see `plan.segment_rows`), not as units of parallel work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MAX_DEFAULT_PARTITIONS = 4096  # lance-index: MAX_PARTITIONS
DEFAULT_SAMPLE_RATE = 256  # IvfBuildParams::default().sample_rate ("see faiss")
DEFAULT_MAX_ITERS = 50  # IvfBuildParams::default().max_iters
# HnswBuildParams::default(); Lance refuses m < 4, ef_construction < m and max_level 0.
DEFAULT_HNSW_M, DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_MAX_LEVEL = 20, 150, 7
MIN_HNSW_M = 4


@dataclass(frozen=True)
class IndexType:
    """One Lance vector index type, as this job builds it."""

    name: str
    target_partition_size: int  # rows per IVF partition when num_partitions is not given
    default_num_bits: int = 0  # IVF_RQ bits per dimension
    codebook: bool = False  # segments share a PQ codebook trained on the driver
    rotation: bool = False  # segments share a RaBitQ rotation minted on the driver
    graph: bool = False  # an HNSW graph per partition (--m, --ef-construction, --max-level)
    mergeable: bool = True  # segments may be merged into larger ones (else committed as built)
    why_unmerged: str = ""  # one line for the log and the README when not mergeable
    exact_ranking: bool = False  # ranks by exact distance already: a refine adds nothing
    updatable: bool = False  # `update` can encode new rows like the committed segments

    def default_partitions(self, live_rows: int) -> int:
        return min(max(1, live_rows // self.target_partition_size), MAX_DEFAULT_PARTITIONS)

    @property
    def flags(self) -> tuple[str, ...]:
        """The type-specific flags that apply to this type."""
        return (("--num-bits",) if self.rotation else ()) + (("--num-sub-vectors",) if self.codebook else ()) + (
            ("--m", "--ef-construction", "--max-level") if self.graph else ())

    def segment_kwargs(self, params, artifacts) -> dict[str, Any]:
        """What `create_index_uncommitted` takes for this type, besides the IVF centroids."""
        kwargs: dict[str, Any] = {}
        if self.codebook:
            kwargs.update(pq_codebook=artifacts.codebook_arrow(), num_sub_vectors=params.num_sub_vectors)
        if self.rotation:
            # num_bits is passed explicitly on both sides (here and in build_rq_model): a mismatch fails.
            kwargs.update(rabitq_model=artifacts.rq_model, num_bits=params.num_bits)
        if self.graph:
            kwargs.update(m=params.m, ef_construction=params.ef_construction, max_level=params.max_level)
        return kwargs

    def rebuild_tips(self) -> list[str]:
        """Build flags that raise this type's recall, for advice when a target is not reached."""
        tips = []
        if self.rotation:
            tips.append("more --num-bits")
        if self.codebook:
            tips.append("more --num-sub-vectors")
        if self.graph:
            tips.append("a larger --ef-construction or --m")
        return tips


_NO_SHARED_BOUNDS = ("SQ bounds are taken by each segment from its own rows and a merge keeps the "
                     "first segment's, so segments are committed as built")
_GRAPH_REBUILD = "an HNSW merge rebuilds every graph in one process, so segments are committed as built"

INDEX_TYPES: Mapping[str, IndexType] = {
    t.name: t
    for t in (
        IndexType("IVF_RQ", 4096, default_num_bits=5, rotation=True, updatable=True),
        IndexType("IVF_PQ", 8192, codebook=True, updatable=True),
        IndexType("IVF_FLAT", 4096, exact_ranking=True, updatable=True),
        IndexType("IVF_SQ", 8192, mergeable=False, why_unmerged=_NO_SHARED_BOUNDS),
        IndexType("IVF_HNSW_FLAT", 1 << 20, graph=True, mergeable=False, why_unmerged=_GRAPH_REBUILD,
                  exact_ranking=True),
        IndexType("IVF_HNSW_SQ", 1 << 20, graph=True, mergeable=False,
                  why_unmerged=_NO_SHARED_BOUNDS.replace("SQ bounds", "SQ bounds (and HNSW graphs)")),
        IndexType("IVF_HNSW_PQ", 1 << 20, codebook=True, graph=True, mergeable=False, why_unmerged=_GRAPH_REBUILD),
    )
}
