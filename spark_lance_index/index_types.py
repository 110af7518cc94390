"""What each index type is, in one place: its one-node defaults, what its segments share, how a
segment is built, whether segments merge, and what raises its recall.

The defaults are one-node Lance's (pylance 14.0.2), read from its source: with no
`num_partitions`, `create_index` takes `clamp(live_rows // target_partition_size, 1, 4096)`
(`recommended_num_partitions`, lance-index `ivf/builder.rs`), where the target is the type's
`IndexType::target_partition_size` (4096 rows for IVF_FLAT and IVF_RQ, 8192 for IVF_PQ and IVF_SQ,
1 << 20 for the HNSW types); k-means samples 256 rows per partition for 50 iterations
(`IvfBuildParams::default`); IVF_RQ codes have 5 bits; HNSW graphs are built with m = 20,
ef_construction = 150, max_level = 7 (`HnswBuildParams::default`). A test builds IVF_RQ, IVF_PQ,
IVF_FLAT, IVF_SQ and IVF_HNSW_PQ with the job and with one-node `create_index` at defaults and
compares the committed settings (partitions, bits, sub-vectors, HNSW parameters).

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

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

if TYPE_CHECKING:
    from .dataset import IndexParams
    from .train import SharedArtifacts

MAX_DEFAULT_PARTITIONS = 4096  # lance-index: MAX_PARTITIONS
DEFAULT_SAMPLE_RATE = 256  # IvfBuildParams::default().sample_rate ("see faiss")
DEFAULT_MAX_ITERS = 50  # IvfBuildParams::default().max_iters
# HnswBuildParams::default(); Lance refuses m < 4, ef_construction < m and max_level 0.
DEFAULT_HNSW_M, DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_MAX_LEVEL = 20, 150, 7
MIN_HNSW_M = 4


@dataclass(frozen=True)
class IndexType:
    """One Lance index type, as this job builds it: a vector type (IVF_*), a scalar type (BTREE,
    BITMAP, LABEL_LIST, ZONEMAP, BLOOMFILTER, NGRAM) or the full-text type (INVERTED)."""

    name: str
    target_partition_size: int = 0  # vector: rows per IVF partition when num_partitions is not given
    default_num_bits: int = 0  # IVF_RQ bits per dimension
    codebook: bool = False  # segments share a PQ codebook trained on the driver
    rotation: bool = False  # segments share a RaBitQ rotation minted on the driver
    graph: bool = False  # an HNSW graph per partition (--m, --ef-construction, --max-level)
    mergeable: bool = True  # segments may be merged into larger ones (else committed as built)
    why_unmerged: str = ""  # one line for the log and the README when not mergeable
    exact_ranking: bool = False  # ranks by exact distance already: a refine adds nothing
    updatable: bool = False  # `update` can encode new rows like the committed segments
    # scalar and text types
    family: str = "vector"  # "vector" | "scalar" | "text"
    lance_name: str = ""  # what Lance's index statistics call the type, when not `name`
    accepts: Optional[Callable[[pa.DataType], bool]] = None  # scalar: the column types Lance indexes
    columns: str = ""  # those types, in words, for the refusal
    check: str = ""  # scalar: how the committed index is checked (see index_check.py)
    takes_uuid: bool = True  # a segment build takes the uuid the job picks (else Lance picks it)

    @property
    def is_vector(self) -> bool:
        return self.family == "vector"

    @property
    def stats_name(self) -> str:
        """The type as `index_stats(...)["index_type"]` reports it."""
        return self.lance_name or self.name

    def default_partitions(self, live_rows: int) -> int:
        return min(max(1, live_rows // self.target_partition_size), MAX_DEFAULT_PARTITIONS)

    @property
    def flags(self) -> tuple[str, ...]:
        """The type-specific flags that apply to this type."""
        if self.family == "text":
            return TEXT_FLAGS
        return (("--num-bits",) if self.rotation else ()) + (("--num-sub-vectors",) if self.codebook else ()) + (
            ("--m", "--ef-construction", "--max-level") if self.graph else ())

    def segment_kwargs(self, params: IndexParams, artifacts: SharedArtifacts) -> dict[str, Any]:
        """What `create_index_uncommitted` takes for this type, besides the column, name, fragments
        and segment uuid: a vector type's metric, partitions and shared artifacts; a text type's
        tokenizer options; nothing for a scalar type."""
        if not self.is_vector:  # the options the job fingerprinted, as the task received them
            return lance_text_options(json.loads(artifacts.options)) if artifacts.options else {}
        kwargs: dict[str, Any] = {"metric": params.metric, "num_partitions": params.num_partitions,
                                  "ivf_centroids": artifacts.centroids_arrow()}
        if self.codebook:
            kwargs.update(pq_codebook=artifacts.codebook_arrow(), num_sub_vectors=params.num_sub_vectors)
        if self.rotation:
            # num_bits is passed explicitly on both sides (here and in build_rq_model): a mismatch fails.
            kwargs.update(rabitq_model=artifacts.rq_model, num_bits=params.num_bits)
        if self.graph:
            kwargs.update(m=params.m, ef_construction=params.ef_construction, max_level=params.max_level)
        return kwargs

    def encoded_bytes_per_row(self, params: IndexParams, dim: int, vector_bytes: int) -> int:
        """What a merged IVF_RQ or IVF_PQ segment stores per vector: its code, a row id (8 B) and,
        for RaBitQ, its factors (measured at 128-d, 5 bits: 102 B per row for float32 and for
        float16 columns alike). 0 for the types whose merged size was not measured."""
        if self.rotation:
            return -(-dim * params.num_bits // 8) + 16 + 8
        if self.codebook:
            return params.num_sub_vectors + 8
        return 0

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


# The full-text flags: INVERTED's tokenizer options, as one-node `create_scalar_index` takes them.
# --fts-option KEY=VALUE passes any other option Lance has; every option is tried on a one-row
# table before Spark starts (dataset.probe_build_options), so Lance itself refuses bad ones.
# the type of each (what a TOML file or a keyword must give)
TEXT_OPTION_TYPES = {"with_position": "bool", "base_tokenizer": "str", "language": "str", "stem": "bool",
                     "remove_stop_words": "bool", "custom_stop_words": "list[str]", "lower_case": "bool",
                     "ascii_folding": "bool", "max_token_length": "int", "min_ngram_length": "int",
                     "max_ngram_length": "int", "prefix_only": "bool", "block_size": "int"}
TEXT_OPTIONS = tuple(TEXT_OPTION_TYPES)
TEXT_FLAGS = tuple("--" + o.replace("_", "-") for o in TEXT_OPTIONS) + ("--fts-option",)


def _plain(t: pa.DataType) -> bool:
    """What Lance's BTREE and BITMAP index: numbers, booleans, strings, binary, temporal values."""
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_temporal(t) or pa.types.is_decimal(t) or pa.types.is_fixed_size_binary(t))


def _bloom(t: pa.DataType) -> bool:
    """Lance's BLOOMFILTER: "Int8..UInt64, Float32, Float64, Utf8, LargeUtf8, Binary, LargeBinary,
    Date32, Date64, Time32, Time64, Timestamp" (its refusal lists them)."""
    return (pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t) or _string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_date(t) or pa.types.is_time(t)
            or pa.types.is_timestamp(t))


def _string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _list_of(inner: Callable[[pa.DataType], bool]) -> Callable[[pa.DataType], bool]:
    return lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t)) and inner(t.value_type)


_PLAIN_WORDS = "numbers, booleans, strings, binary and dates or times"

_NO_SHARED_BOUNDS = ("SQ bounds are taken by each segment from its own rows and a merge keeps the "
                     "first segment's, so segments are committed as built")
_GRAPH_REBUILD = "an HNSW merge rebuilds every graph in one process, so segments are committed as built"

INDEX_TYPES: Mapping[str, IndexType] = {
    t.name: t
    for t in (
        IndexType("IVF_RQ", 4096, default_num_bits=5, rotation=True, updatable=True),
        IndexType("IVF_PQ", 8192, codebook=True, updatable=True),
        IndexType("IVF_FLAT", 4096, exact_ranking=True, updatable=True),
        IndexType("IVF_SQ", 8192, mergeable=False, why_unmerged=_NO_SHARED_BOUNDS, updatable=True),
        IndexType("IVF_HNSW_FLAT", 1 << 20, graph=True, mergeable=False, why_unmerged=_GRAPH_REBUILD,
                  exact_ranking=True, updatable=True),
        IndexType("IVF_HNSW_SQ", 1 << 20, graph=True, mergeable=False,
                  why_unmerged=_NO_SHARED_BOUNDS.replace("SQ bounds", "SQ bounds (and HNSW graphs)"), updatable=True),
        IndexType("IVF_HNSW_PQ", 1 << 20, codebook=True, graph=True, mergeable=False, why_unmerged=_GRAPH_REBUILD,
                  updatable=True),
        # Scalar and text segments merge (Lance merges their pages, bitmaps, zones and posting
        # lists); none shares a trained artifact. BTREE, LABEL_LIST and NGRAM builds refuse a
        # segment uuid ("index_uuid is no longer accepted"): Lance picks it (see build.run_task).
        # Measured on pylance 14.0.2: every type below
        # builds per-fragment segments that merge and commit, and the committed index answers
        # filters exactly as a scan does (tests/test_scalar_indexes.py).
        IndexType("BTREE", takes_uuid=False, family="scalar", updatable=True, lance_name="BTree", accepts=_plain,
                  columns=_PLAIN_WORDS, check="equals"),
        IndexType("BITMAP", family="scalar", updatable=True, lance_name="Bitmap", accepts=_plain, columns=_PLAIN_WORDS,
                  check="equals"),
        IndexType("LABEL_LIST", takes_uuid=False, family="scalar", updatable=True, lance_name="LabelList",
                  accepts=_list_of(_plain), columns="lists of " + _PLAIN_WORDS, check="has_any"),
        IndexType("ZONEMAP", family="scalar", updatable=True, lance_name="ZoneMap", accepts=_plain,
                  columns=_PLAIN_WORDS, check="equals"),
        IndexType("BLOOMFILTER", family="scalar", updatable=True, lance_name="BloomFilter", accepts=_bloom,
                  columns="integers, float32, float64, strings, binary, dates, times and timestamps", check="equals"),
        IndexType("NGRAM", takes_uuid=False, family="scalar", updatable=True, lance_name="NGram", accepts=_string,
                  columns="strings", check="contains"),
        IndexType("INVERTED", family="text", updatable=True, lance_name="Inverted",
                  accepts=lambda t: _string(t) or _list_of(_string)(t), columns="strings or lists of strings",
                  check="search"),
    )
}


def type_of_index(lance_type: str) -> Optional[IndexType]:
    """The type of a committed index, from what Lance's statistics or `describe_indices` call it
    (IVF_RQ, BTree, Inverted, ...); None for a type this job does not build."""
    return INDEX_TYPES.get(lance_type) or next((t for t in INDEX_TYPES.values() if t.stats_name == lance_type), None)


def lance_text_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Full-text options as `create_scalar_index` takes them: JSON values (the job's settings, an
    index's `describe_indices` details) with `document_granularity` as Lance's enum."""
    out = dict(options)
    if isinstance(out.get("document_granularity"), str):
        from lance.query import DocumentGranularity

        try:
            out["document_granularity"] = DocumentGranularity[out["document_granularity"].upper()]
        except KeyError:
            pass  # Lance names what it accepts
    return out
