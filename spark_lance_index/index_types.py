"""What each index type is, in one place: its one-node defaults and what its segments share.

The defaults are one-node Lance's (pylance 14.0.2), read from its source: with no
`num_partitions`, `create_index` takes `clamp(live_rows // target_partition_size, 1, 4096)`
(`recommended_num_partitions`, lance-index `ivf/builder.rs`), where the target is the type's
`IndexType::target_partition_size`; k-means samples 256 rows per partition for 50 iterations
(`IvfBuildParams::default`); IVF_RQ codes have 5 bits. A test builds each type with the job
and with one-node `create_index` at defaults and compares the committed settings.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEFAULT_PARTITIONS = 4096  # lance-index: MAX_PARTITIONS
DEFAULT_SAMPLE_RATE = 256  # IvfBuildParams::default().sample_rate ("see faiss")
DEFAULT_MAX_ITERS = 50  # IvfBuildParams::default().max_iters


@dataclass(frozen=True)
class IndexType:
    name: str
    target_partition_size: int  # rows per IVF partition when num_partitions is not given
    default_num_bits: int = 0  # IVF_RQ bits per dimension
    codebook: bool = False  # segments share a PQ codebook
    rotation: bool = False  # segments share a RaBitQ rotation

    def default_partitions(self, live_rows: int) -> int:
        return min(max(1, live_rows // self.target_partition_size), MAX_DEFAULT_PARTITIONS)


INDEX_TYPES = {
    t.name: t
    for t in (
        IndexType("IVF_RQ", 4096, default_num_bits=5, rotation=True),
        IndexType("IVF_PQ", 8192, codebook=True),
        IndexType("IVF_FLAT", 4096),
    )
}
