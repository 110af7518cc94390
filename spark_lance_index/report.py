"""What a run did, as one value: the human summary and the JSON report are both made from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from .dataset import IndexParams
from .train import SharedArtifacts


def short(fingerprint: str) -> str:
    return fingerprint[:12]


@dataclass
class JobResult:
    """One run of the build job."""

    job_id: str
    uri: str
    index_name: str
    pinned_version: int
    committed_version: int
    params: IndexParams
    num_rows: int
    num_fragments: int
    num_tasks: int
    num_segments: int
    segments_reused: int
    segments_built: int
    fingerprints: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    unindexed_rows: int = 0
    unindexed_fragments: int = 0
    leftovers_removed: int = 0
    job_dir: str = ""
    spark_app_id: Optional[str] = None
    artifacts: Optional[SharedArtifacts] = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("artifacts")
        return out

    def summary(self) -> str:
        p = self.params
        kind = f"{p.index_type}, {p.metric}, {p.num_partitions} partitions"
        if p.index_type == "IVF_RQ":
            kind += f", {p.num_bits} bit"
        if p.index_type == "IVF_PQ":
            kind += f", {p.num_sub_vectors} sub-vectors"
        lines = [
            f"index {self.index_name!r} ({kind}) committed on {self.uri} at version {self.committed_version}",
            f"  rows indexed {self.num_rows:,} in {self.num_fragments} fragments "
            f"(pinned version {self.pinned_version}); {self.num_tasks} tasks, "
            f"{self.num_segments} segments merged into 1",
            f"  segments built {self.segments_built}, reused from an earlier run {self.segments_reused}; "
            f"leftover segment directories removed {self.leftovers_removed}",
        ]
        if self.unindexed_rows:
            lines.append(
                f"  not yet indexed: {self.unindexed_rows:,} rows in {self.unindexed_fragments} fragments "
                "added after the pinned version (run the job again, or Lance's optimize_indices)"
            )
        lines.append(
            "  artifacts: " + ", ".join(f"{k} {short(v)}" for k, v in sorted(self.fingerprints.items()))
        )
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)
