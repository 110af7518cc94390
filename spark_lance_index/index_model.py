"""Read a committed vector index's model back from its own files, segment by segment.

`update` must encode new rows exactly as the index's existing segments were encoded: with the
same IVF centroids, and the same PQ codebook (IVF_PQ) or RaBitQ rotation (IVF_RQ). Lance does
not expose the codebook (lance #7319, #7440), and the index statistics drop the centroids
(`LANCE_INCLUDE_VECTOR_CENTROIDS=false`, see `__init__`), so the model is read where Lance
wrote it, in each segment's two Lance files (pylance 14.0.2, index file version V3):

- `index.idx`: schema metadata `lance:ivf` names a global buffer holding the IVF protobuf,
  whose field 4 is the centroids `Tensor`;
- `auxiliary.idx`: schema metadata `storage_metadata` is a JSON list of one JSON string: for
  IVF_RQ the whole RaBitQ model (the `build_rq_model` JSON, with `packed` true), for IVF_PQ and
  IVF_HNSW_PQ the sub-vector count and `codebook_position`, the global buffer holding the
  codebook `Tensor`; for the SQ types the segment's own bounds (not a shared artifact).

`Tensor` is Lance's protobuf message {data_type = 1, shape = 2, data = 3}. It is read with the
few lines of protobuf wire format below rather than a protobuf dependency. Anything else (an
older file version, a matrix rotation, an unknown type) is refused in one line: the job never
guesses at a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import CannotExtend
from .index_types import INDEX_TYPES
from .storage import Location
from .train import SharedArtifacts, array_fingerprint, text_fingerprint

# lance.index.pb.Tensor.DataType
_TENSOR_TYPES = {1: np.float16, 2: np.float32, 3: np.float64}
# The keys of `build_rq_model`'s JSON: what a segment build takes as `rabitq_model`.
_RQ_MODEL_KEYS = ("rotate_mat_position", "fast_rotation_signs", "rotation_type", "code_dim", "num_bits",
                  "packed", "query_estimator")


@dataclass(frozen=True)
class SegmentModel:
    """What one committed segment was encoded with, read from its files."""

    uuid: str
    index_type: str
    metric: str
    artifacts: SharedArtifacts
    num_bits: int = 0  # IVF_RQ
    num_sub_vectors: int = 0  # IVF_PQ, IVF_HNSW_PQ
    graph: tuple[int, int, int] = (0, 0, 0)  # IVF_HNSW_*: m, ef_construction, max_level

    @property
    def centroids(self) -> np.ndarray:
        """Read first from every segment: a model without them is never made."""
        if self.artifacts.centroids is None:
            raise ModelUnreadable(f"segment {self.uuid} holds no IVF centroids")
        return self.artifacts.centroids

    @property
    def num_partitions(self) -> int:
        return len(self.centroids)


class ModelUnreadable(CannotExtend):
    """The index's model cannot be read back, so the index cannot be extended consistently."""


def read_segment_model(dataset: Location, storage_options: Mapping[str, str], stats: Mapping[str, Any]) -> SegmentModel:
    """The model of the segment described by `stats` (one entry of index_stats' "indices")."""
    from lance.file import LanceFileReader

    index_type, uuid = stats["index_type"], stats["uuid"]
    if stats.get("index_file_version") not in (None, "V3"):
        raise ModelUnreadable(f"segment {uuid} is in Lance's index file format {stats['index_file_version']}, "
                              "whose model this job cannot read")
    folder = dataset.child(f"_indices/{uuid}")
    opts = dict(storage_options) or None
    try:
        index_file = LanceFileReader(str(folder.child("index.idx")), storage_options=opts)
        aux_file = LanceFileReader(str(folder.child("auxiliary.idx")), storage_options=opts)
        centroids = _tensor(_message_field(_global_buffer(index_file, b"lance:ivf"), 4), "the IVF centroids")
        kind = INDEX_TYPES.get(index_type)
        codebook_kind, rotation_kind = bool(kind and kind.codebook), bool(kind and kind.rotation)
        storage = _storage_metadata(aux_file) if codebook_kind or rotation_kind else {}
        codebook, rq_model, num_bits, num_sub_vectors = None, None, 0, 0
        if codebook_kind:
            if int(storage.get("nbits", 8)) != 8:
                raise ModelUnreadable(f"segment {uuid} has {storage['nbits']}-bit PQ codes; this job builds 8-bit PQ")
            num_sub_vectors = int(storage["num_sub_vectors"])
            if storage.get("codebook_tensor"):
                codebook = _tensor(bytes(storage["codebook_tensor"]), "the PQ codebook")
            else:
                codebook = _tensor(aux_file.read_global_buffer(int(storage["codebook_position"])), "the PQ codebook")
        elif rotation_kind:
            if storage.get("rotation_type") != "fast":
                raise ModelUnreadable(
                    f"segment {uuid} uses a {storage.get('rotation_type')!r} RaBitQ rotation; Lance hands only "
                    "the 'fast' rotation to a segment build (build_rq_model)")
            # The stored model says packed=true (the committed codes' layout); a segment build
            # takes the model as build_rq_model mints it, with row-major codes.
            model = {k: storage[k] for k in _RQ_MODEL_KEYS if k in storage}
            model["packed"] = False
            rq_model, num_bits = json.dumps(model, separators=(",", ":")), int(storage["num_bits"])
    except ModelUnreadable:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ModelUnreadable(f"the files of segment {uuid} do not hold a model this job can read "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    artifacts = SharedArtifacts(centroids=centroids, codebook=codebook, rq_model=rq_model)
    return SegmentModel(uuid, index_type, stats.get("metric_type", "l2"), artifacts, num_bits, num_sub_vectors,
                        _graph_params(stats) if kind and kind.graph else (0, 0, 0))


def _graph_params(stats: Mapping[str, Any]) -> tuple[int, int, int]:
    """An HNSW segment's m, ef_construction and max_level, as its statistics report them: new
    rows get graphs built the same way, so every segment must report the same ones
    (`model_fingerprint`)."""
    params = (stats.get("sub_index") or {}).get("params") or {}
    try:
        return int(params["m"]), int(params["ef_construction"]), int(params["max_level"])
    except (KeyError, TypeError, ValueError):
        raise ModelUnreadable(f"segment {stats.get('uuid')} does not report its HNSW parameters "
                              f"(m, ef_construction, max_level): {params or 'none'}") from None


def model_fingerprint(model: SegmentModel) -> dict[str, str]:
    """What must be equal across segments for them to be one index: type, metric and artifacts.

    The rotation is compared by its sign bytes and bits, not by the JSON text."""
    out = {"type": model.index_type, "metric": model.metric, "centroids": array_fingerprint(model.centroids)}
    if model.artifacts.codebook is not None:
        out["codebook"] = array_fingerprint(model.artifacts.codebook)
    if any(model.graph):  # new rows get graphs built like the others' (m, ef_construction, max_level)
        out["graph"] = ",".join(map(str, model.graph))
    if model.artifacts.rq_model is not None:
        out["rotation"] = text_fingerprint(json.dumps([model.artifacts.rotation_signs, model.num_bits]))
    return out


# --- the protobuf wire format, as far as Lance's Tensor and IVF messages need it -------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:  # the value: int or bytes, as its wire type says
    """(field number, wire type, value) for each field: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire} in a Lance index message")
        yield number, wire, value


def repeated_uint(data: bytes, number: int) -> list[int]:
    """A repeated unsigned field of a message, packed or not."""
    out: list[int] = []
    for n, wire, value in _fields(data):
        if n == number and wire == 2:  # packed
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                out.append(v)
        elif n == number and wire == 0:
            out.append(value)
    return out


def _message_field(data: bytes, number: int) -> bytes:
    for n, wire, value in _fields(data):
        if n == number and wire == 2:
            return value
    raise ValueError(f"field {number} missing from a Lance index message")


def _tensor(data: bytes, what: str) -> np.ndarray:
    """A Lance `Tensor` message as a 2-d numpy array."""
    dtype, payload = 0, b""
    shape = repeated_uint(data, 2)
    for n, wire, value in _fields(data):
        if n == 1 and wire == 0:
            dtype = value
        elif n == 3 and wire == 2:
            payload = value
    if dtype not in _TENSOR_TYPES:
        raise ModelUnreadable(f"{what} are stored as tensor type {dtype}, which this job cannot read")
    array = np.frombuffer(payload, dtype=_TENSOR_TYPES[dtype])
    if len(shape) != 2 or shape[0] * shape[1] != array.size:
        raise ModelUnreadable(f"{what} have shape {shape} for {array.size} values")
    return array.reshape(shape).copy()


def _global_buffer(reader: Any, key: bytes) -> bytes:
    position = (reader.metadata().schema.metadata or {}).get(key)
    if position is None:
        raise ModelUnreadable(f"the index file has no {key.decode()!r} entry")
    return reader.read_global_buffer(int(position))


def _storage_metadata(reader: Any) -> dict:
    raw: Optional[bytes] = (reader.metadata().schema.metadata or {}).get(b"storage_metadata")
    if raw is None:
        return {}
    entries = json.loads(raw)
    return json.loads(entries[0]) if entries else {}


def committed_model_mismatch(dataset: Location, storage_options: Mapping[str, str], stats: Mapping[str, Any],
                             artifacts: SharedArtifacts) -> Optional[str]:
    """Why the committed segments (`stats`: Lance's index statistics) were not all encoded with
    `artifacts`, read back from their files; None when every one was."""
    for entry in stats.get("indices") or stats.get("segments") or []:
        try:
            got = read_segment_model(dataset, storage_options, entry).artifacts
        except ModelUnreadable as e:
            return f"the model of segment {entry.get('uuid')} cannot be read back ({e})"
        pairs = [("centroids", got.centroids, artifacts.centroids), ("PQ codebook", got.codebook, artifacts.codebook)]
        for what, mine, want in pairs:
            if mine is None or want is None:
                differ = (mine is None) != (want is None)
            else:
                differ = mine.shape != want.shape or not np.array_equal(mine.astype(np.float64),
                                                                         want.astype(np.float64))
            if differ:
                return f"segment {entry.get('uuid')} holds other {what} than the job encoded with"
        if got.rotation_signs != artifacts.rotation_signs:
            return f"segment {entry.get('uuid')} holds another RaBitQ rotation than the job encoded with"
    return None


def read_text_params(dataset: Location, storage_options: Mapping[str, str], uuid: str) -> dict[str, Any]:
    """A full-text segment's tokenizer parameters as Lance stored them with it (`metadata.lance`,
    schema metadata "params"): every option, the custom stop words included, which
    `describe_indices` reports as None even when the index uses them."""
    from lance.file import LanceFileReader

    path = dataset.child(f"_indices/{uuid}").child("metadata.lance")
    try:
        schema = LanceFileReader(str(path), storage_options=dict(storage_options) or None).metadata().schema
        return dict(json.loads((schema.metadata or {})[b"params"]))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise ModelUnreadable(f"the tokenizer options of segment {uuid} cannot be read from its files "
                              f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
