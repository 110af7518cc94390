"""The job directory's records of finished segments, as JSON: no pickled engine objects.

A segment Lance built and has not committed is a `lance.dataset.Index`, a plain dataclass of
ids, fragment ids, files and the index's details. The job saves each one a task finished so that
a rerun can skip its group. Pickling it would tie a resume to the pylance that wrote it (an
upgrade between a crash and the rerun could fail to read the state, or read it wrong); a JSON
record of its fields does not, and a record that does not read back is not reused, never
trusted.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import fields
from typing import Any, Optional

RECORD_VERSION = 1


def index_to_record(segment: Any) -> dict[str, Any]:
    """The fields of a `lance.dataset.Index` as JSON values."""
    details = segment.index_details
    files = segment.files
    created: Optional[dt.datetime] = segment.created_at
    return {
        "uuid": str(segment.uuid),
        "name": segment.name,
        "fields": list(segment.fields),
        "dataset_version": int(segment.dataset_version),
        "fragment_ids": sorted(int(f) for f in segment.fragment_ids),
        "index_version": int(segment.index_version),
        "created_at": created.isoformat() if created is not None else None,
        "base_id": segment.base_id,
        "files": None if files is None else [[f.path, int(f.size_bytes)] for f in files],
        "index_details": None if details is None else [details[0], base64.b64encode(details[1]).decode()],
        "covering_fields": list(getattr(segment, "covering_fields", None) or []),
    }


def index_from_record(record: dict[str, Any]) -> Any:
    """A `lance.dataset.Index` from its record (raises KeyError or ValueError if it is not one)."""
    from lance.dataset import Index, IndexFile

    known = {f.name for f in fields(Index)}
    created = record["created_at"]
    values = {
        "uuid": record["uuid"], "name": record["name"], "fields": list(record["fields"]),
        "dataset_version": int(record["dataset_version"]), "fragment_ids": set(record["fragment_ids"]),
        "index_version": int(record["index_version"]),
        "created_at": dt.datetime.fromisoformat(created) if created is not None else None,
        "base_id": record["base_id"],
        "files": None if record["files"] is None else [IndexFile(path, size) for path, size in record["files"]],
        "index_details": None if record["index_details"] is None
        else (record["index_details"][0], base64.b64decode(record["index_details"][1])),
        "covering_fields": list(record["covering_fields"]),
    }
    return Index(**{k: v for k, v in values.items() if k in known})


def segment_to_json(result: Any) -> bytes:
    """A build task's SegmentResult as the bytes of `segments/<group>.json`."""
    out = {k: getattr(result, k) for k in ("group_id", "index_uuid", "num_rows", "seconds", "host", "attempt",
                                           "assign_seconds")}
    out.update(version=RECORD_VERSION, fragment_ids=list(result.fragment_ids),
               fingerprints=dict(result.fingerprints), segment=index_to_record(result.segment))
    return json.dumps(out).encode()


def segment_from_json(data: bytes) -> Any:
    """The SegmentResult `segment_to_json` wrote (ValueError or KeyError if it is not one)."""
    from .segment_build import SegmentResult

    record = json.loads(data)
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise ValueError(f"not a segment record of version {RECORD_VERSION}")
    result = SegmentResult(
        group_id=int(record["group_id"]), index_uuid=str(record["index_uuid"]),
        fragment_ids=tuple(int(f) for f in record["fragment_ids"]), num_rows=int(record["num_rows"]),
        fingerprints=dict(record["fingerprints"]), segment=index_from_record(record["segment"]),
        seconds=float(record["seconds"]), host=str(record["host"]), attempt=int(record["attempt"]),
        assign_seconds=float(record["assign_seconds"]))
    # what the checks before the commit read (index_uuid, fragment_ids) is what the commit takes
    if (str(result.segment.uuid) != result.index_uuid
            or sorted(int(f) for f in result.segment.fragment_ids) != sorted(result.fragment_ids)):
        raise ValueError(f"segment record {result.index_uuid} disagrees with the segment it holds")
    return result
