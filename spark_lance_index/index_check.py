"""The check of a scalar or text index (after its read-back): is the committed index right?

A vector index is judged by recall (exact_search.py). A scalar index has an exact answer: a filter
through the index must return exactly the rows a scan returns. For values sampled from the column
the job builds filters the index serves (`col = v`, `array_has_any(col, [v])`, `contains(col, s)`),
runs each through the committed index on the driver, and on the executors reads the column of the
same version once, without any index, and applies every filter to its values; the two sets of row
ids must be equal (compared by count and an order-free digest), and the driver's plan must show
this index in use
(`ScalarIndexQuery ...@<index name>`). A full-text (INVERTED) index has no exact answer short of a
second index; the job checks that each sampled row is found among the top results of a query made
of its own text, and reports how many were.

Plain Lance and numpy, no Spark: `scan_digests` is what each executor task runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .dataset import open_dataset, vector_column
from .index_types import INDEX_TYPES

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

# Above this many matching rows the driver compares counts only (streaming every row id of a
# filter that matches most of a billion rows through the driver would be the slow part).
MAX_DIGEST_ROWS = 1_000_000
SEARCH_TOP_K = 10
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Digest:
    """An order-free summary of a set of row ids: their count, sum and xor of a mixed hash."""

    count: int = 0
    total: int = 0
    mixed: int = 0

    def __add__(self, other: Digest) -> Digest:
        return Digest(self.count + other.count, (self.total + other.total) & _MASK, self.mixed ^ other.mixed)


def digest(row_ids: np.ndarray) -> Digest:
    ids = np.asarray(row_ids, dtype=np.uint64)
    # splitmix64 finaliser: the xor of mixed ids changes when any id does
    z = ids + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return Digest(len(ids), int(ids.sum(dtype=np.uint64)) & _MASK, int(np.bitwise_xor.reduce(z)) if len(z) else 0)


@dataclass(frozen=True)
class FilterScanTask:
    """One executor's share of the scan side: the filters, over its fragments, without the index."""

    uri: str
    version: int
    fragment_ids: tuple[int, ...]
    num_rows: int
    storage_options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """One filter: `column = value`, `column IS NULL`, `array_has_any(column, [value])` or
    `contains(column, value)`. `sql` is what the summary shows (and, but for `equals`, what Lance
    is given); the executors apply `op` and `value` to the column's values themselves."""

    sql: str
    op: str  # "equals" | "is_null" | "has_any" | "contains"
    value: Any = None
    type: Any = None  # equals: the column's Arrow type, for the value's scalar


def matches(op: str, value: Any, column: pa.Array) -> np.ndarray:
    """Which rows of a column's batch the probe selects (nulls never match, as in SQL)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if op == "is_null":
        return column.is_null().to_numpy(zero_copy_only=False)
    if op == "equals":
        hit = pc.equal(column, pa.scalar(value, column.type))
    elif op == "contains":
        hit = pc.match_substring(column, value)
    else:  # has_any: any element of the row's list equals the value
        flat = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy()
        equal = pc.fill_null(pc.equal(flat, pa.scalar(value, flat.type)), False).to_numpy(zero_copy_only=False)
        out = np.zeros(len(column), bool)
        out[parents[equal]] = True
        return out
    return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)


def scan_digests(task: FilterScanTask, probes: tuple) -> list[Digest]:
    """Read the task's fragments once (the column and row ids, no index) and digest the rows each
    probe selects. `probes` is (column, [Probe, ...])."""
    column, wanted = probes
    ds = open_dataset(task.uri, task.storage_options, task.version)
    scanner = ds.scanner(columns=[column], with_row_id=True, fragments=[ds.get_fragment(f) for f in task.fragment_ids])
    out = [Digest() for _ in wanted]
    for batch in scanner.to_batches():
        values, ids = vector_column(batch, column), batch.column("_rowid").to_numpy()
        for i, p in enumerate(wanted):
            out[i] = out[i] + digest(ids[matches(p.op, p.value, values)])
    return out


def add_digests(a: list[Digest], b: list[Digest]) -> list[Digest]:
    return [x + y for x, y in zip(a, b)]


@dataclass(frozen=True)
class FilterCheck:
    """One filter, through the committed index and by a scan of the same version."""

    filter: str
    rows_index: int
    rows_scan: int
    same_rows: Optional[bool]  # None: more than MAX_DIGEST_ROWS rows, counts compared only
    index_used: bool

    @property
    def ok(self) -> bool:
        return self.rows_index == self.rows_scan and self.same_rows is not False and self.index_used


@dataclass(frozen=True)
class SearchCheck:
    """Full text: sampled rows found among the top results of a query of their own text."""

    queries: int
    found: int
    k: int = SEARCH_TOP_K


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# Arrow element types whose literal Lance's SQL needs cast for a LABEL_LIST filter to reach the
# index (measured: `array_has_any(list<int32>, [3])` scans; `[arrow_cast(3, 'Int32')]` is served).
_SQL_TYPE_NAMES = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "uint8": "UInt8", "uint16": "UInt16",
                   "uint32": "UInt32", "uint64": "UInt64", "float": "Float32", "large_string": "LargeUtf8"}


def _label_literal(value: Any, element_type: pa.DataType) -> Optional[str]:
    """A literal of the list's element type, or None when there is no safe way to write one."""
    name = str(element_type)
    if (isinstance(value, bool) or not isinstance(value, (int, float, str))
            or (isinstance(value, float) and not np.isfinite(value))):
        return None
    if name in ("int64", "double", "string"):
        return _literal(value)
    if name in _SQL_TYPE_NAMES:
        return f"arrow_cast({_literal(value)}, '{_SQL_TYPE_NAMES[name]}')"
    return None


def sample_values(ds: Any, column: str, n: int, seed: int = 0) -> list:
    """Values of `column` in 2n rows spread evenly over the table (one at a random place in each
    2n-th of it, so that every part of the table, and of the index, is probed), lists flattened,
    distinct, at most n."""
    rng = np.random.default_rng(seed)
    rows = ds.count_rows()
    if rows == 0:
        return []
    slots = min(rows, 2 * n)
    picked = np.unique(((np.arange(slots) + rng.random(slots)) * rows / slots).astype(np.int64).clip(0, rows - 1))
    values = vector_column(ds.take(picked, columns=[column]), column).to_pylist()
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
    distinct = list(dict.fromkeys(x for x in flat if x is not None and not (isinstance(x, float) and np.isnan(x))))
    return [distinct[i] for i in np.sort(rng.permutation(len(distinct))[:n])]


def probes_for(index_type: str, column: str, column_type: pa.DataType, values: Sequence) -> list[Probe]:
    """The filters a committed index of `index_type` serves, made from sampled values.

    Equality is written for any value type (dates, times, decimals, binary too), and goes to Lance
    as a pyarrow expression (`filter_of`); float16 has no equality kernel in pyarrow and is
    probed by IS NULL only."""
    import pyarrow as pa

    check = INDEX_TYPES[index_type].check
    quoted = ".".join(f"`{part}`" for part in column.split("."))  # any name, struct fields
    if check == "equals":
        out = [] if pa.types.is_float16(column_type) else [
            Probe(f"{quoted} = {_literal(v) if isinstance(v, (str, bool, int, float)) else repr(v)}", "equals", v,
                  column_type) for v in values]
        return out + [Probe(f"{quoted} IS NULL", "is_null")]
    if check == "has_any":
        literals = [(v, _label_literal(v, column_type.value_type)) for v in values]
        return [Probe(f"array_has_any({quoted}, [{lit}])", "has_any", v) for v, lit in literals if lit]
    if check == "contains":  # the NGRAM index serves substrings of 3 characters and more
        subs = [v[len(v) // 3: len(v) // 3 + 3] for v in values if isinstance(v, str) and len(v) >= 3]
        return [Probe(f"contains({quoted}, {_literal(s)})", "contains", s) for s in dict.fromkeys(subs)]
    return []


def filter_of(probe: Probe, column: str) -> Union[str, pc.Expression]:
    """What Lance is given: a pyarrow expression for equality (exact for every value type, no SQL
    literal to spell), the SQL text otherwise."""
    if probe.op != "equals":
        return probe.sql
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.field(*column.split(".")) == pa.scalar(probe.value, probe.type)


def index_side(ds: Any, index_name: str, stats_name: str, f: Union[str, pc.Expression]) -> tuple[Digest, bool, bool]:
    """(digest of the filter's rows through the index, whether the plan serves it with this index
    (`ScalarIndexQuery: query=[...]@<name>(<type>)`), whether the digest holds every row id or only
    the count)."""
    scanner = ds.scanner(filter=f, columns=[], with_row_id=True)
    plan = scanner.explain_plan()
    used = "ScalarIndexQuery" in plan and f"]@{index_name}({stats_name})" in plan
    total = Digest()
    for batch in scanner.to_batches():  # one query; counted by Lance only past the digest limit
        total = total + digest(batch.column("_rowid").to_numpy())
        if total.count > MAX_DIGEST_ROWS:
            return Digest(ds.count_rows(f)), used, False
    return total, used, True


def compare(f: str, through_index: Digest, used: bool, complete: bool, scanned: Digest) -> FilterCheck:
    same = (through_index == scanned) if complete else None
    return FilterCheck(f, through_index.count, scanned.count, same, used)


def search_check(ds: Any, column: str, n: int, seed: int = 0, k: int = SEARCH_TOP_K) -> SearchCheck:
    """Sampled rows with text: is each among the top k of a full-text query of its own words?"""
    rng = np.random.default_rng(seed)
    rows = ds.count_rows()
    picked = np.sort(rng.choice(rows, size=min(rows, n), replace=False))
    table = ds.take(picked, columns=[column, "_rowid"])
    texts, ids = vector_column(table, column).to_pylist(), table.column("_rowid").to_pylist()
    queries = found = 0
    for text, row_id in zip(texts, ids):
        parts = text if isinstance(text, list) else [text]
        words = " ".join(p for p in parts if p).split()[:32]
        if not words:
            continue
        queries += 1
        # this column only: a bare query string searches every INVERTED-indexed column
        hits = ds.to_table(full_text_query={"columns": [column], "query": " ".join(words)}, columns=[],
                           with_row_id=True, limit=k)
        found += row_id in set(hits.column("_rowid").to_pylist())
    return SearchCheck(queries, found, k)
