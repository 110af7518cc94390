"""`update`: what the index does not cover yet, which segments to re-encode with it, and
whether the index's model still fits the data. Plain Lance and numpy, no Spark.

The model (centroids, codebook, rotation) is read back from the index's own segment files
(`index_model.py`) and must be the same in every segment; new rows are encoded with it, never
with a new training.

The segment policy keeps the segment count small, because every segment costs every query
(measured: 1 segment 3.5 ms, 4 segments 4.4 ms, 32 segments 11.6 ms per query). Segments of
at least 3/4 of `--max-segment-rows` are *full*: a fresh build lays a large table out in
segments of about that size, and an update never touches them. The others form a tail. An
update encodes its new rows together with the smallest tail segments, from the smallest up,
while the next one holds fewer than `ratio` times the rows merged so far (re-encoding their
fragments from the data, with the same model), and never more than `max_segment_rows` rows in
all. Each tail segment therefore holds at least `ratio` times the rows of the next smaller one,
so the tail has at most 1 + log_ratio(max_segment_rows / smallest update) segments, and an
update re-encodes a small multiple of its new rows on average (docs/benchmarks.md, README).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from .dataset import DatasetSnapshot, FragmentInfo, IndexInfo, IndexParams, open_dataset, probe_build_options
from .errors import CannotExtend, InputError
from .index_model import ModelUnreadable, model_fingerprint, read_segment_model, read_text_params
from .index_types import DEFAULT_SAMPLE_RATE, INDEX_TYPES, IndexType, type_of_index
from .train import SharedArtifacts

log = logging.getLogger("spark_lance_index")

DEFAULT_SEGMENT_RATIO = 3
# A segment this close to --max-segment-rows is left alone. Simulated (1,000 updates of 100k
# rows on a 10M-row index, max 10M), the index ends with 23 segments at 0.5, 17 at 0.75, and a
# fresh build of the 110M rows would have 11.
FULL_FRACTION = 0.75
# Drift: rebuild when the new rows' recall falls this far below the older rows', or when the
# new rows fall in partitions this differently (total variation distance) from the older rows.
RECALL_GAP = 0.05
PARTITION_SHIFT = 0.25
MIN_ROWS_PER_PARTITION_FOR_SHIFT = 20  # below it the shift is mostly sampling noise


@dataclass(frozen=True)
class CommittedSegment:
    """One segment of the committed index: its uuid, the fragments it covers, their live rows,
    and its rows per partition as Lance counts them (deleted rows included)."""

    uuid: str
    fragment_ids: tuple[int, ...]
    num_rows: int
    partitions: tuple[int, ...] = ()


@dataclass(frozen=True)
class IndexModel:
    """A committed index as `update` sees it: its parameters, its one model, its segments."""

    name: str
    params: IndexParams
    artifacts: SharedArtifacts
    segments: tuple[CommittedSegment, ...]


def read_index_model(snap: DatasetSnapshot, name: str, storage_options: Mapping[str, str]) -> IndexModel:
    """The index `name` on the snapshot's column and its model; InputError when it cannot be
    extended: absent, not a vector index, a type or file this job cannot read, or segments
    encoded with different models."""
    info = next((i for i in snap.indexes if i.name == name), None)
    if info is None:
        raise InputError(f"no index named {name!r} on {snap.uri} at version {snap.version}: "
                         "build it first (spark-lance-index build), or give --index-name")
    if snap.column not in info.columns:
        raise InputError(f"the index {name!r} is on column {info.columns[0]!r}, not {snap.column!r}")
    if not info.is_vector:
        return _scalar_model(snap, info, storage_options)
    ds = open_dataset(snap.uri, storage_options, snap.version)
    stats = ds.stats.index_stats(name)
    index_type = stats["index_type"]
    _require_updatable(name, index_type)
    entries = stats.get("indices") or stats.get("segments") or []
    try:
        models = [read_segment_model(snap.location, storage_options, e) for e in entries]
    except ModelUnreadable as e:
        raise ModelUnreadable(f"cannot update the index {name!r}: its model cannot be read back ({e}); "
                              "rebuild it with build --replace") from None
    first, expected = models[0], model_fingerprint(models[0])
    for m in models[1:]:
        got = model_fingerprint(m)
        differ = sorted(k for k in {*expected, *got} if expected.get(k) != got.get(k))
        if differ:
            raise ModelUnreadable(
                f"cannot update the index {name!r}: its segments {first.uuid} and {m.uuid} were encoded with "
                f"different models ({', '.join(differ)} differ), so new rows cannot be encoded like all of "
                "them; rebuild it with build --replace")
    if first.num_partitions != entries[0].get("num_partitions", first.num_partitions):
        raise ModelUnreadable(f"cannot update the index {name!r}: its files hold {first.num_partitions} "
                              f"centroids for {entries[0]['num_partitions']} partitions")
    centroids = first.artifacts.centroids
    if centroids is None or centroids.shape[1] != snap.dim:
        raise ModelUnreadable(f"cannot update the index {name!r}: its centroids have dimension "
                              f"{'(none read)' if centroids is None else centroids.shape[1]}, the column {snap.dim}")
    params = IndexParams(index_type, first.metric, first.num_partitions, first.num_bits,
                         first.num_sub_vectors, DEFAULT_SAMPLE_RATE, *first.graph)
    return IndexModel(name, params, first.artifacts, committed_segments(info, snap, partition_sizes(stats)))


def _require_updatable(name: str, lance_type: str) -> IndexType:
    """The type of index `name` (as Lance names it), or CannotExtend when update does not extend it."""
    kind = type_of_index(lance_type)
    if kind is None or not kind.updatable:
        updatable = ", ".join(t.name for t in INDEX_TYPES.values() if t.updatable)
        raise CannotExtend(f"cannot update the index {name!r}: it is {lance_type}, and update extends "
                           f"{updatable} indexes; rebuild it with build --replace")
    return kind


def _scalar_model(snap: DatasetSnapshot, info: IndexInfo, storage_options: Mapping[str, str]) -> IndexModel:
    """A scalar or full-text index: nothing trained to share. A full-text index's tokenizer
    options are read back from the index and must rebuild it exactly: a segment built with other
    options makes every full-text query of the index fail (measured, pylance 14.0.2), so options
    that a one-row probe index does not describe the same way are refused."""
    kind = _require_updatable(info.name, info.index_type)
    options = ""
    if kind.family == "text":
        options = json.dumps(_text_options(snap, info, storage_options), sort_keys=True)
    params = IndexParams(kind.name, "", 0, 0, 0, 0, options=options)
    return IndexModel(info.name, params, SharedArtifacts(options=options or None),
                      committed_segments(info, snap, {}))


def _text_options(snap: DatasetSnapshot, info: IndexInfo, storage_options: Mapping[str, str]) -> dict[str, Any]:
    """The tokenizer options every segment of a full-text index was built with, read from their
    files (`describe_indices` leaves custom stop words out), and given back to Lance only when a
    one-row probe index built with them stores the same parameters. A segment built with other
    options makes every full-text query of the index fail (measured, pylance 14.0.2)."""
    params = [read_text_params(snap.location, storage_options, uuid) for uuid in info.segments]
    differ = sorted({k for p in params[1:] for k in {*p, *params[0]} if p.get(k) != params[0].get(k)})
    if differ:
        raise ModelUnreadable(f"cannot update the full-text index {info.name!r}: its segments were built with "
                              f"different tokenizer options ({', '.join(differ)}); rebuild it with "
                              "build --replace")
    # lance_tokenizer is derived by Lance, not taken (the probe's stored value must equal it);
    # the document granularity is in the index's description, not its stored parameters
    given = {k: v for k, v in params[0].items() if v is not None and k != "lance_tokenizer"}
    described = next((d for d in open_dataset(snap.uri, storage_options, snap.version).describe_indices()
                      if d.name == info.name), None)
    granularity = (described.details or {}).get("document_granularity") if described is not None else None
    if granularity:
        given["document_granularity"] = granularity
    try:
        rebuilt = probe_build_options("INVERTED", given)
    except InputError as e:
        raise ModelUnreadable(f"cannot update the full-text index {info.name!r}: {e}; rebuild it with "
                              "build --replace") from None
    differ = sorted(k for k in {*params[0], *rebuilt} if params[0].get(k) != rebuilt.get(k))
    if differ:
        raise ModelUnreadable(f"cannot update the full-text index {info.name!r}: its tokenizer options "
                              f"({', '.join(differ)}) cannot be given back to Lance exactly; rebuild it "
                              "with build --replace")
    return given


def committed_segments(info: IndexInfo, snap: DatasetSnapshot,
                       partitions: Mapping[str, list[int]]) -> tuple[CommittedSegment, ...]:
    """The index's segments with the live rows, at the snapshot, of the fragments they cover."""
    rows = {f.fragment_id: f.num_rows for f in snap.fragments}
    return tuple(
        CommittedSegment(uuid, tuple(sorted(frags)), sum(rows.get(f, 0) for f in frags),
                         tuple(partitions.get(uuid, ())))
        for uuid, frags in info.segment_fragments
    )


@dataclass(frozen=True)
class SegmentPolicy:
    """Which tail segments an update re-encodes (see the module docstring)."""

    max_segment_rows: int
    ratio: int = DEFAULT_SEGMENT_RATIO

    def is_full(self, segment: CommittedSegment) -> bool:
        return segment.num_rows >= FULL_FRACTION * self.max_segment_rows

    def to_reencode(self, segments: Sequence[CommittedSegment], new_rows: int) -> tuple[CommittedSegment, ...]:
        """The smallest tail segments to encode again with `new_rows` new rows: from the
        smallest up, each one that holds fewer than `ratio` times the rows merged so far, as long
        as the merge stays within `max_segment_rows` (or the new rows alone, if more)."""
        if new_rows == 0:
            return ()
        tail = sorted((s for s in segments if not self.is_full(s)), key=lambda s: (s.num_rows, s.uuid))
        merged, chosen = new_rows, []
        for segment in tail:
            if (segment.num_rows >= self.ratio * merged
                    or merged + segment.num_rows > max(self.max_segment_rows, new_rows)):
                break
            merged += segment.num_rows
            chosen.append(segment)
        return tuple(chosen)


@dataclass(frozen=True)
class UpdatePlan:
    """What one update encodes: the new fragments and the fragments of the segments it replaces."""

    new_fragments: tuple[FragmentInfo, ...]
    reencoded: tuple[CommittedSegment, ...]
    kept: tuple[CommittedSegment, ...]
    fragments: tuple[FragmentInfo, ...]  # to encode: new ones and those of `reencoded`

    @property
    def is_noop(self) -> bool:
        return not self.new_fragments

    @property
    def new_rows(self) -> int:
        return sum(f.num_rows for f in self.new_fragments)

    @property
    def rows_to_encode(self) -> int:
        return sum(f.num_rows for f in self.fragments)

    def describe(self) -> str:
        if self.is_noop:
            return "nothing new to index"
        again = (f", re-encoding {len(self.reencoded)} small segments "
                 f"({sum(s.num_rows for s in self.reencoded):,} rows) with them" if self.reencoded else "")
        return (f"{self.new_rows:,} new rows in {len(self.new_fragments)} fragments{again}; "
                f"{len(self.kept)} segments kept")


def plan_update(model: IndexModel, snap: DatasetSnapshot, policy: SegmentPolicy) -> UpdatePlan:
    """The fragments no segment covers, and the segments to re-encode with them."""
    covered = {f for s in model.segments for f in s.fragment_ids}
    new = tuple(f for f in snap.live_fragments if f.fragment_id not in covered)
    reencoded = policy.to_reencode(model.segments, sum(f.num_rows for f in new))
    replaced = {s.uuid for s in reencoded}
    kept = tuple(s for s in model.segments if s.uuid not in replaced)
    again = {f for s in reencoded for f in s.fragment_ids}
    # Every live fragment of a replaced segment is encoded again: Lance refuses a commit that would
    # leave a fragment of a replaced segment uncovered (a fragment whose rows were all deleted is
    # gone from the table, and from the segment's coverage).
    fragments = tuple(sorted((*new, *(f for f in snap.fragments if f.fragment_id in again and f.num_rows > 0)),
                             key=lambda f: f.fragment_id))
    return UpdatePlan(new, reencoded, kept, fragments)


def pinned_segments(plan: UpdatePlan) -> dict[str, list[int]]:
    """The segments an update pinned, with the fragments each covered then: what must still be
    there, unchanged, when it commits (job.json keeps it as `index_segments`)."""
    return {s.uuid: sorted(s.fragment_ids) for s in (*plan.kept, *plan.reencoded)}


def index_changed(name: str, indexes: Sequence[IndexInfo],
                  pinned: Union[Mapping[str, Sequence[int]], Sequence[str]]) -> Optional[str]:
    """Why committing the update on `indexes` would be wrong: the index is gone, its segments
    changed (another update, a build --replace, optimize_indices), or a segment kept its uuid but
    covers other fragments (a compaction with `defer_index_remap`, which rewrites a segment's
    fragment list in place) since the pinned version. `pinned` maps uuids to the fragments they
    covered (`pinned_segments`); a plain list of uuids (a job.json of an older release) compares
    the uuids only."""
    info = next((i for i in indexes if i.name == name), None)
    if info is None:
        return f"the index {name!r} was dropped"
    if set(info.segments) != set(pinned):
        return (f"the segments of index {name!r} changed ({len(pinned)} at the pinned version, "
                f"{len(info.segments)} now: another update, a rebuild, optimize_indices, a compaction, or a "
                "delete that removed a segment's fragments ran meanwhile)")
    if isinstance(pinned, Mapping):
        now = dict(info.segment_fragments)
        moved = sorted(u for u, frags in pinned.items() if set(frags) != set(now.get(u, ())))
        if moved:
            return (f"the segments of index {name!r} changed: {moved[0]}{' and others' if len(moved) > 1 else ''} "
                    "now covers other fragments than at the pinned version (a compaction remapped the index, "
                    "e.g. compact_files with defer_index_remap)")
    return None


@dataclass(frozen=True)
class DriftFigures:
    """Whether the index's model still fits the data, measured after an update."""

    partition_shift: Optional[float]  # total variation distance, 0..1 (None: too few rows to tell)
    shift_rows: int  # new rows, the sample the shift is measured on
    shift_uncertainty: float = 0.0  # at most this much of the shift may come from deleted rows
    recall_new_rows: Optional[float] = None
    recall_old_rows: Optional[float] = None
    recall_setting: Optional[str] = None
    recall_samples: int = 0  # query results (queries x k) behind the smaller of the two recalls
    recall_gap_error: float = 0.0  # standard error of new minus older recall, from per-query recall
    shift_unit: str = "rows"  # what the histograms count: a multivector index counts vectors

    @property
    def recall_gap_threshold(self) -> float:
        """RECALL_GAP, or three standard errors of the difference when the queries are few: the
        larger of the binomial one (every result independent) and the one the queries' own
        spread gives (a query's results are not independent; for multivector queries far from it)."""
        p = max(0.05, min(0.95, self.recall_old_rows or 0.5))
        binomial = float(np.sqrt(2 * p * (1 - p) / max(1, self.recall_samples)))
        return max(RECALL_GAP, 3 * max(binomial, self.recall_gap_error))

    @property
    def advice(self) -> Optional[str]:
        reasons = []
        if self.partition_shift is not None and self.partition_shift - self.shift_uncertainty > PARTITION_SHIFT:
            unit = self.shift_unit
            reasons.append(f"{self.partition_shift:.0%} of the {self.shift_rows:,} new {unit} fall in other partitions "
                           f"than the {unit} indexed before (threshold {PARTITION_SHIFT:.0%})")
        if (self.recall_new_rows is not None and self.recall_old_rows is not None
                and self.recall_old_rows - self.recall_new_rows > self.recall_gap_threshold):
            reasons.append(f"recall on queries from the new rows is {self.recall_new_rows:.3f} against "
                           f"{self.recall_old_rows:.3f} from the older rows ({self.recall_setting})")
        if not reasons:
            return None
        return "the data has drifted from the index's model: " + "; ".join(reasons) + \
            "; rebuild it (build --replace) to train a new model"


def partition_shift(before: Mapping[str, Sequence[int]], after: Mapping[str, Sequence[int]],
                    kept: Sequence[str], reencoded: Mapping[str, int]) -> tuple[Optional[float], float, int]:
    """How differently the new rows fall into partitions than the rows the index held before:
    the total variation distance between the two partition histograms (0: the same
    distribution, 1: disjoint partitions).

    `before` and `after` map segment uuids to rows per partition. The new rows are the
    committed segments not `kept`, minus what the `reencoded` segments held before. Lance
    counts deleted rows in a segment's partitions; the re-encoded ones no longer have them, so
    rows deleted from a re-encoded segment (its partition count minus its live rows,
    `reencoded[uuid]`) make that difference uncertain by at most deleted / new rows.
    -> (shift, or None when fewer than MIN_ROWS_PER_PARTITION_FOR_SHIFT new rows per partition;
    its uncertainty; new rows)."""
    if not before or not after:
        return None, 0.0, 0
    old = np.sum([np.asarray(p, dtype=np.float64) for p in before.values()], axis=0)
    encoded = [np.asarray(p, dtype=np.float64) for u, p in after.items() if u not in set(kept)]
    previous = [np.asarray(before[u], dtype=np.float64) for u in reencoded if u in before]
    if not encoded or old.sum() == 0 or any(a.shape != old.shape for a in (*encoded, *previous)):
        return None, 0.0, 0
    added = np.clip(np.sum(encoded, axis=0) - (np.sum(previous, axis=0) if previous else 0), 0, None)
    rows = int(added.sum())
    deleted = max(0, int(sum(p.sum() for p in previous)) - sum(reencoded.values()))
    if rows < MIN_ROWS_PER_PARTITION_FOR_SHIFT * len(old):
        return None, 0.0, rows
    return float(0.5 * np.abs(old / old.sum() - added / rows).sum()), min(1.0, deleted / rows), rows


def partition_sizes(stats: Mapping) -> dict[str, list[int]]:
    """Rows per partition, by segment uuid, from Lance's index statistics."""
    return {e["uuid"]: [p.get("size", 0) for p in e.get("partitions", [])] for e in (stats.get("indices") or [])}
