"""`spark-lance-index status` and `sli.status`: every index of a table, as Lance's own statistics
give it, one line each. Reads the dataset's manifest and index metadata; no Spark, no writes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .dataset import open_dataset
from .index_types import INDEX_TYPES, type_of_index


@dataclass(frozen=True)
class IndexStatus:
    """One index of the table. The row and segment counts are Lance's (`index_stats`,
    `describe_indices`); `updatable` says whether `update` can extend it with its own model."""

    name: str
    type: str  # as Lance's statistics name it: IVF_RQ, BTree, Inverted, ...
    columns: list[str]
    segments: int
    indexed_rows: int
    unindexed_rows: int
    indexed_fragments: int
    unindexed_fragments: int
    size_bytes: int  # the index files on disk, as Lance reports them
    metric: Optional[str] = None  # vector indexes: the model
    num_partitions: Optional[int] = None
    num_bits: Optional[int] = None  # IVF_RQ
    num_sub_vectors: Optional[int] = None  # IVF_PQ, IVF_HNSW_PQ
    updatable: bool = False
    why_not_updatable: Optional[str] = None

    @property
    def unindexed_share(self) -> float:
        total = self.indexed_rows + self.unindexed_rows
        return self.unindexed_rows / total if total else 0.0

    def line(self) -> str:
        model = ", ".join(f"{k} {v}" for k, v in (("partitions", self.num_partitions), ("bits", self.num_bits),
                                                   ("sub-vectors", self.num_sub_vectors)) if v)
        update = "update: yes" if self.updatable else f"update: no ({self.why_not_updatable})"
        described = f" ({self.metric}, {model})" if model else ""
        return (f"{self.name}: {self.type} on {', '.join(self.columns)}{described}; "
                f"{self.segments} segment{'s' if self.segments != 1 else ''}, {self.indexed_rows:,} rows indexed, "
                f"{self.unindexed_rows:,} not ({self.unindexed_share:.1%}); {size_text(self.size_bytes)}; {update}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "unindexed_share": round(self.unindexed_share, 6)}


def index_status(uri: str, storage_options: Optional[Mapping[str, str]] = None,
                 version: Optional[int] = None) -> list[IndexStatus]:
    """Every index of the dataset at `version` (default: the latest), by name."""
    ds = open_dataset(uri, storage_options or {}, version)
    # Lance's own bookkeeping (`__lance_frag_reuse` after compact_files(defer_index_remap=True))
    # is no index of the user's: no statistics of an index, nothing to update
    described = {d.name: d for d in ds.describe_indices() if not d.name.startswith("__lance")}
    return [_status(ds, name, described[name]) for name in sorted(described)]


def _status(ds: Any, name: str, described: Any) -> IndexStatus:
    stats = ds.stats.index_stats(name)
    segment = (stats.get("segments") or stats.get("indices") or [{}])[0]
    sub = segment.get("sub_index") or {}
    kind = type_of_index(stats["index_type"])
    is_vector = kind is not None and kind.is_vector
    why_not = None
    if kind is None or not kind.updatable:
        updatable = ", ".join(t.name for t in INDEX_TYPES.values() if t.updatable)
        why_not = f"it extends {updatable}; rebuild this one with build --replace"
    return IndexStatus(
        name=name, type=stats["index_type"], columns=list(described.field_names),
        segments=int(stats.get("num_segments", stats.get("num_indices", 0))),
        indexed_rows=int(stats["num_indexed_rows"]), unindexed_rows=int(stats["num_unindexed_rows"]),
        indexed_fragments=int(stats["num_indexed_fragments"]),
        unindexed_fragments=int(stats["num_unindexed_fragments"]),
        size_bytes=int(described.total_size_bytes or 0),
        metric=segment.get("metric_type") if is_vector else None,
        num_partitions=segment.get("num_partitions") if is_vector else None,
        num_bits=sub.get("num_bits") if stats["index_type"] == "IVF_RQ" else None,
        num_sub_vectors=sub.get("num_sub_vectors") if "PQ" in stats["index_type"] else None,
        updatable=why_not is None, why_not_updatable=why_not,
    )


def size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def render_status(uri: str, statuses: list[IndexStatus], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([s.to_json() for s in statuses], indent=2)
    if not statuses:
        return f"{uri}: no indexes"
    return "\n".join(s.line() for s in statuses)
