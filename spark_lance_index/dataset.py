"""Inspect (with resume.py): open the dataset, pin one version, and check every input against it.

Nothing here writes. Everything the later phases need to know about the dataset is captured
once in a `DatasetSnapshot`, so that every phase, and every executor, sees the same version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import pyarrow as pa

from .config import BuildConfig
from .errors import InputError, MissingVersionError
from .index_types import (
    DEFAULT_HNSW_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    DEFAULT_HNSW_MAX_LEVEL,
    INDEX_TYPES,
    IndexType,
    lance_text_options,
)
from .storage import Location, locate
from .store_errors import describe_storage_error, refuse_unreadable_scheme


@dataclass(frozen=True)
class FragmentInfo:
    """One fragment at the pinned version: its id, live (not deleted) rows, and what a segment
    built from it depends on: the data file holding the vector column and the physical rows.

    Deletes (a new deletion file) and new columns (a new data file) leave both unchanged, and
    the segment stays valid; a compaction or a rewrite of the column changes them."""

    fragment_id: int
    num_rows: int
    vector_file: str = ""
    physical_rows: int = 0

    @property
    def segment_inputs(self) -> tuple[str, int]:
        """What a segment built from this fragment depends on (see the class docstring)."""
        return self.vector_file, self.physical_rows


def column_field_id(ds: Any, column: str) -> int:
    """Lance's field id of a (possibly dotted) column: data files list the ids they hold."""
    parts = column.split(".")
    field = ds.lance_schema.field(parts[0])
    for part in parts[1:]:
        field = next(c for c in field.children() if c.name() == part)
    return field.id()


def fragment_infos(ds: Any, column: str) -> tuple[FragmentInfo, ...]:
    field_id = column_field_id(ds, column)
    out = []
    for f in ds.get_fragments():
        meta = f.metadata
        files = [d.path for d in meta.files if field_id in d.fields]
        out.append(FragmentInfo(f.fragment_id, f.count_rows(), files[0] if files else "", meta.physical_rows))
    return tuple(out)


def fragment_signature(fragments: Sequence[FragmentInfo]) -> list:
    """What job.json keeps of the planned fragments, to recognise the same data on resume."""
    return [[f.fragment_id, *f.segment_inputs] for f in fragments]


@dataclass(frozen=True)
class IndexInfo:
    """One index of the dataset, as `describe_indices` tells it."""

    name: str
    index_type: str
    columns: tuple[str, ...]
    is_vector: bool
    segments: tuple[str, ...]  # uuids
    fragment_ids: frozenset
    segment_fragments: tuple[tuple[str, frozenset], ...] = ()  # (uuid, fragment ids) per segment


def index_infos(ds: Any) -> tuple[IndexInfo, ...]:
    return tuple(
        IndexInfo(
            name=i.name, index_type=i.index_type, columns=tuple(i.field_names),
            is_vector="VectorIndexDetails" in (i.type_url or ""),
            segments=tuple(str(s.uuid) for s in i.segments),
            fragment_ids=frozenset(f for s in i.segments for f in s.fragment_ids),
            segment_fragments=tuple((str(s.uuid), frozenset(s.fragment_ids)) for s in i.segments),
        )
        for i in ds.describe_indices()
    )


@dataclass(frozen=True)
class DatasetSnapshot:
    """What the job knows about the dataset at the version it pinned."""

    uri: str  # as the user gave it, for Lance
    version: int
    column: str
    dim: int
    value_type: str  # "float16" | "float32" | "float64"
    fragments: tuple[FragmentInfo, ...]
    indexes: tuple[IndexInfo, ...] = ()
    multivector: bool = False  # list<fixed_size_list<float>>: several vectors per row (ColBERT-style)
    sampled_row_bytes: int = 0  # multivector, scalar and text columns: Arrow bytes per row over the first rows

    @property
    def location(self) -> Location:
        """Where Lance keeps it: the job's own file handling goes through this."""
        return locate(self.uri)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.fragments)

    @property
    def live_fragments(self) -> tuple[FragmentInfo, ...]:
        """The fragments with rows to index (all rows deleted: nothing to index)."""
        return tuple(f for f in self.fragments if f.num_rows > 0)

    @property
    def index_names(self) -> tuple[str, ...]:
        return tuple(sorted(i.name for i in self.indexes))

    @property
    def bytes_per_row(self) -> int:
        """Bytes per row of the indexed column, what task sizes are planned in: a vector's bytes,
        or a multivector, scalar or text column's Arrow bytes over its first rows."""
        if self.sampled_row_bytes:
            return self.sampled_row_bytes
        return self.vector_bytes

    @property
    def vector_bytes(self) -> int:
        """Bytes of one vector (of a multivector row: one of its vectors)."""
        return max(1, self.dim * _BYTES.get(self.value_type, 4))

    @property
    def vectors_per_row(self) -> float:
        """1, or for a multivector column its vectors per row over the first rows (Arrow bytes
        over one vector's; the list offsets make it a slight overcount, on the safe side)."""
        if not self.multivector:
            return 1.0
        return max(1.0, self.sampled_row_bytes / self.vector_bytes)


# One handle per (dataset, version) and process: a version never changes, and opening one reads
# its whole manifest (about 170 B per fragment: 0.5-0.8 GB and tens of seconds at 1M fragments),
# which every build, merge and scan task on a reused Python worker would otherwise repeat.
_HANDLES: dict = {}
_MAX_HANDLES = 4


def _handle_key(uri: str, storage_options: Mapping[str, str], version: int) -> tuple:
    """Which pinned handle may be reused: a local dataset deleted and written again at the same
    path starts its versions over, so its `_versions` folder (inode and change time) is part of the
    key (a new version changes it too: one more open, never a stale handle)."""
    import os

    folder = os.path.join(uri, "_versions") if "://" not in uri or uri.startswith("file://") else None
    try:
        found = os.stat(folder.removeprefix("file://")) if folder else None
    except OSError:
        found = None
    return uri, version, tuple(sorted(storage_options.items())), found and (found.st_ino, found.st_ctime_ns)


def forget_handles() -> None:
    """Drop the pinned handles: a run starts from what the store holds now (on object stores
    the key cannot tell a dataset written again at the same path)."""
    _HANDLES.clear()


def open_dataset(uri: str, storage_options: Mapping[str, str], version: Optional[int] = None) -> Any:
    """Open a Lance dataset, turning "not there" into a one-line InputError. A pinned version
    is opened once per process and reused."""
    import lance

    refuse_unreadable_scheme(uri)
    key = _handle_key(uri, storage_options, version) if version is not None else None
    if key is not None and key in _HANDLES:
        return _HANDLES[key]
    try:
        ds = lance.dataset(uri, version=version, storage_options=dict(storage_options) or None)
        if key is not None:
            while len(_HANDLES) >= _MAX_HANDLES:
                _HANDLES.pop(next(iter(_HANDLES)))
            _HANDLES[key] = ds
        return ds
    except (ValueError, OSError, FileNotFoundError) as e:  # Lance raises ValueError when absent
        reason = describe_storage_error(str(e) or type(e).__name__)
        if version is not None and "version" in reason.lower():
            raise MissingVersionError(f"dataset {uri} has no version {version}: {reason}") from None
        raise InputError(
            f"cannot open a Lance dataset at {uri}: {reason} "
            "(check --uri and, for object stores, --storage-option)"
        ) from None


def resolve_vector_field(schema: pa.Schema, column: str) -> pa.Field:
    """Find `column` in the schema, following dots into struct columns ("emb.vector")."""
    parts = column.split(".")
    try:
        current = schema.field(parts[0])
    except KeyError:
        names = ", ".join(schema.names)
        raise InputError(f"column {column!r} is not in the dataset (columns: {names})") from None
    for depth, part in enumerate(parts[1:], start=1):
        if not pa.types.is_struct(current.type) or current.type.get_field_index(part) < 0:
            path = ".".join(parts[:depth])
            raise InputError(f"column {column!r} is not in the dataset: {path!r} has no field {part!r}")
        current = current.type.field(part)
    return current


_FLOAT_NAMES = {pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64"}
_BYTES = {"float16": 2, "float32": 4, "float64": 8}


def vector_column(table: Union[pa.Table, pa.RecordBatch], column: str) -> pa.Array:
    """The vector column of a scan result, following a dotted path into struct columns
    (Lance returns "emb.vector" either flat or as the struct "emb", depending on the call)."""
    if column in table.column_names:
        return table.column(column)
    parts = column.split(".")
    array = table.column(parts[0])
    for part in parts[1:]:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        array = array.field(part)
    return array


def sampled_row_bytes(ds: Any, column: str, rows: int = 1024) -> int:
    """Arrow bytes per row of `column` over its first `rows` rows (strings: their length;
    multivectors: their vectors)."""
    sample = vector_column(ds.to_table(columns=[column], limit=rows), column)
    return max(1, round(sample.nbytes / max(1, len(sample))))


def vector_shape(field: pa.Field, column: str) -> tuple[int, str, bool]:
    """(dimension, value type, multivector) of a vector column, or InputError: a fixed-size list
    of floats, or a list of them (a multivector column, several vectors per row)."""
    t = field.type
    multivector = False
    if pa.types.is_list(t) and pa.types.is_fixed_size_list(t.value_type):  # Lance: not large_list
        t, multivector = t.value_type, True
    if isinstance(t, pa.FixedShapeTensorType) and len(t.shape) == 1:
        dim, value = t.shape[0], t.value_type
    elif pa.types.is_fixed_size_list(t):
        dim, value = t.list_size, t.value_type
    else:
        raise InputError(
            f"column {column!r} has type {field.type}; a vector index needs a fixed-size list of floats, "
            "e.g. fixed_size_list<float>[128], or a list of them for multivectors (cast the column, "
            "or choose another)"
        )
    if value not in _FLOAT_NAMES:
        raise InputError(
            f"column {column!r} holds {value} values; Lance's vector indexes need "
            "float16, float32 or float64"
        )
    if dim < 1:
        raise InputError(f"column {column!r} has dimension {dim}")
    return dim, _FLOAT_NAMES[value], multivector


def require_vector_column(config: BuildConfig, command: str) -> None:
    """`verify` measures recall of vector indexes: for any other column, one line that says so
    and what checks the other indexes."""
    ds = open_dataset(config.dataset.uri, config.dataset.storage_options, config.dataset.version)
    field = resolve_vector_field(ds.schema, config.index.column)
    try:
        vector_shape(field, config.index.column)
    except InputError:
        on_it = [f"{i.name!r} ({i.index_type})" for i in index_infos(ds) if config.index.column in i.columns]
        advice = ("build and update check a scalar or full-text index right after their commit (filters "
                  "against a scan, or a search of each sampled row's own text)")
        raise InputError(f"`{command}` is for vector indexes, and column {config.index.column!r} holds {field.type}"
                         + (f" (indexed by {', '.join(on_it)})" if on_it else "") + f": {advice}") from None


def snapshot_dataset(config: BuildConfig, version: Optional[int] = None) -> DatasetSnapshot:
    """Open the dataset at `version` (default: --version, else the latest), pin it, and check
    the column against it."""
    ds = open_dataset(config.dataset.uri, config.dataset.storage_options, version or config.dataset.version)
    field = resolve_vector_field(ds.schema, config.index.column)
    kind = INDEX_TYPES.get(config.index.index_type)
    if kind is not None and not kind.is_vector:
        if kind.accepts is not None and not kind.accepts(field.type):
            raise InputError(f"column {config.index.column!r} has type {field.type}; {kind.name} indexes "
                             f"{kind.columns} (Lance's rule): choose another column or index type")
        return DatasetSnapshot(
            uri=config.dataset.uri, version=ds.version, column=config.index.column, dim=0, value_type=str(field.type),
            fragments=fragment_infos(ds, config.index.column), indexes=index_infos(ds),
            sampled_row_bytes=sampled_row_bytes(ds, config.index.column),
        )
    dim, value_type, multivector = vector_shape(field, config.index.column)
    return DatasetSnapshot(
        uri=config.dataset.uri,
        version=ds.version,
        column=config.index.column,
        dim=dim,
        value_type=value_type,
        fragments=fragment_infos(ds, config.index.column),
        indexes=index_infos(ds),
        multivector=multivector,
        sampled_row_bytes=sampled_row_bytes(ds, config.index.column) if multivector else 0,
    )


def planner_role(index: IndexInfo) -> str:
    """Which of Lance's query paths an existing index takes part in: "vector" (nearest), "search"
    (full text: INVERTED) or "filter" (every other scalar index, and any type this job does not
    know)."""
    if index.is_vector:
        return "vector"
    kind = next((t for t in INDEX_TYPES.values() if t.stats_name == index.index_type), None)
    return "search" if kind is not None and kind.family == "text" else "filter"


def index_conflict(
    name: str, column: str, replace: bool, indexes: Sequence[IndexInfo], *,
    own_segments: Optional[Sequence[str]] = None, planned: Optional[Iterable[int]] = None,
    index_type: str = "IVF_RQ",
) -> Optional[str]:
    """Why committing index `name` on `column` over `indexes` would be wrong, or None.

    - an index of that name, unless --replace (or it is this job's own commit, `own_segments`);
    - with --replace, an index of that name covering fragments the build does not (`planned`):
      Lance refuses that commit, and the user should know before the build, not after;
    - another index on the column that takes the same query path (`planner_role`), because
      Lance uses one of them and never the new one: its nearest query picks one vector index per
      column; its planner serves a column's filters with the oldest scalar index on it and never
      consults a later one, even for filters the oldest cannot serve (NGRAM then BTREE: `=` scans);
      full-text search uses the oldest INVERTED index. An INVERTED index and a filter index on one
      column both serve. Measured for every pair of types on Lance 14.0.2 (bench/scalar_pairs.py,
      checked by tests/test_edges.py).
    """
    kind = INDEX_TYPES[index_type]
    wanted = "vector" if kind.is_vector else "search" if kind.family == "text" else "filter"
    for i in indexes:
        if i.name == name:
            if column not in i.columns:
                return (f"an index named {name!r} already exists on column {i.columns[0]!r} "
                        f"({i.index_type}): give another --index-name")
            if own_segments is not None and set(i.segments) == set(own_segments):
                continue
            if not replace:
                return (f"an index named {name!r} already exists ({i.index_type}): pass --replace "
                        "to rebuild it, or --index-name to build another")
            extra = sorted(i.fragment_ids - set(planned)) if planned is not None else []
            if extra:
                return (f"the index {name!r} to replace covers fragments {_ids(extra)} that this build "
                        "does not index (added after the pinned version): rerun without --version to "
                        "index the latest version")
        elif column in i.columns and planner_role(i) == wanted:
            which = (f"vector index {i.name!r} ({i.index_type})" if wanted == "vector"
                     else f"{i.index_type} index {i.name!r}")
            return (f"column {column!r} already has the {which}; "
                    + _WHY_ONE[wanted].format(new=kind.name)
                    + f": rebuild that one with --replace --index-name {i.name}, or drop it first")
    return None


# Why a second index taking the same query path on a column is refused (index_conflict).
_WHY_ONE = {
    "vector": "Lance queries one vector index per column, so a second one would never be used and its "
              "recall could not be measured",
    "filter": "Lance serves a column's filters with its oldest scalar index only, so a {new} index beside it "
              "would never be used",
    "search": "Lance's full-text search uses the oldest INVERTED index on a column, so a second one would "
              "never be used",
}


def _ids(ids: Sequence[int]) -> str:
    return str(list(ids)) if len(ids) <= 8 else f"{list(ids[:7])}... ({len(ids)} in all)"


@dataclass(frozen=True)
class IndexParams:
    """The index parameters after defaults are resolved against the dataset."""

    index_type: str
    metric: str
    num_partitions: int
    num_bits: int  # IVF_RQ only; 0 otherwise
    num_sub_vectors: int  # IVF_PQ, IVF_HNSW_PQ; 0 otherwise
    sample_rate: int
    m: int = 0  # IVF_HNSW_* only; 0 otherwise
    ef_construction: int = 0
    max_level: int = 0
    options: str = ""  # INVERTED: its tokenizer options as sorted JSON, as given ("" = Lance's defaults)

    @property
    def kind(self) -> IndexType:
        return INDEX_TYPES[self.index_type]


def resolve_params(config: BuildConfig, snap: DatasetSnapshot) -> IndexParams:
    """Fill in defaults from the data and refuse combinations Lance would reject mid-build."""
    rows = snap.num_rows
    if rows == 0:
        raise InputError(f"dataset {snap.uri} (version {snap.version}) has no rows to index")
    kind = INDEX_TYPES[config.index.index_type]
    if not kind.is_vector:
        options = config.index.text_options if kind.family == "text" else {}
        probe_build_options(kind.name, options)
        return IndexParams(index_type=kind.name, metric="", num_partitions=0, num_bits=0, num_sub_vectors=0,
                           sample_rate=0, options=json.dumps(options, sort_keys=True) if options else "")
    if kind.rotation and snap.dim % 8 != 0:
        raise InputError(
            f"IVF_RQ needs a dimension divisible by 8 and {config.index.column!r} has {snap.dim}: "
            "use IVF_PQ or IVF_FLAT, or pad the vectors"
        )
    if snap.multivector and config.index.metric != "cosine":
        raise InputError(
            f"{config.index.column!r} is a multivector column, and Lance indexes multivectors with the cosine "
            f"metric only (its search ranks rows by the sum of their best cosine match per query "
            f"vector): pass --metric cosine, not {config.index.metric}"
        )
    partitions = config.index.num_partitions or kind.default_partitions(rows)
    if partitions > rows:
        raise InputError(
            f"--num-partitions {partitions} is more than the {rows} rows to index: "
            f"use at most {rows} (Lance's default for {kind.name} is rows/{kind.target_partition_size})"
        )
    sub_vectors = 0
    if kind.codebook:
        sub_vectors = config.index.num_sub_vectors or _default_sub_vectors(snap.dim)
        if snap.dim % sub_vectors != 0:
            raise InputError(
                f"--num-sub-vectors {sub_vectors} does not divide the dimension {snap.dim}: "
                "choose a divisor such as dim/8 or dim/16"
            )
    return IndexParams(
        index_type=config.index.index_type,
        metric=config.index.metric,
        num_partitions=partitions,
        num_bits=(config.index.num_bits or kind.default_num_bits) if kind.rotation else 0,
        num_sub_vectors=sub_vectors,
        sample_rate=config.training.sample_rate,
        m=(config.index.m or DEFAULT_HNSW_M) if kind.graph else 0,
        ef_construction=(config.index.ef_construction or DEFAULT_HNSW_EF_CONSTRUCTION) if kind.graph else 0,
        max_level=(config.index.max_level or DEFAULT_HNSW_MAX_LEVEL) if kind.graph else 0,
    )


def probe_build_options(index_type: str, options: Mapping) -> dict[str, Any]:
    """Refuse, before Spark, options Lance would refuse on every executor: build the index with
    them on a one-row table in a temporary folder, and pass Lance's own reason on in one line.
    -> the parameters the index built with them stored (index_model.read_text_params). Nothing
    is written near the user's dataset."""
    if not options:
        return {}
    import shutil
    import tempfile

    import lance

    from .index_model import read_text_params

    folder = tempfile.mkdtemp(prefix="spark-lance-index-probe-")
    try:
        lists = str(options.get("document_granularity", "")).lower() == "list_element"  # needs a list column
        ds = lance.write_dataset(pa.table({"text": [["probe"]] if lists else ["probe"]}), folder)
        ds.create_scalar_index("text", index_type, **lance_text_options(options))  # type: ignore[arg-type]
        segment = str(lance.dataset(folder).describe_indices()[0].segments[0].uuid)
        return read_text_params(locate(folder), {}, segment)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = re.sub(r", /\S+\.rs:\d+:\d+$", "", reason)  # Lance's source location
        raise InputError(f"Lance refuses the {index_type} options {dict(options)}: {reason[:300]}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _default_sub_vectors(dim: int) -> int:
    for width in (16, 8, 4, 2):
        if dim % width == 0 and dim // width >= 1:
            return dim // width
    raise InputError(
        f"cannot choose a PQ sub-vector count for dimension {dim}: pass --num-sub-vectors"
    )
