"""Two scalar / full-text indexes on the SAME column: which one does Lance's planner use?

For every ordered pair (existing index type A, then a new index type B created after it on the
same column) of BTREE, BITMAP, LABEL_LIST, ZONEMAP, BLOOMFILTER, NGRAM and INVERTED, on each column
type both accept (string; int64 for the equality types; list<string> / list<int64> for LABEL_LIST,
plus INVERTED on list<string>), this builds a small table (4,000 rows, 4 fragments, some nulls),
creates A, then B (`ds.create_scalar_index(col, index_type=..., name=...)`, noting a refusal), and
runs the filters the job's check uses for each type (spark_lance_index/index_check.py: probes_for)
plus a few report-only ones:

  BTREE BITMAP ZONEMAP BLOOMFILTER  check: `col = v` (pyarrow expression), `col IS NULL`
                                    also:  `col > v`, `col BETWEEN a AND b`, `col IN (...)`
  LABEL_LIST                        check: `array_has_any(col, [v])`   also: `array_contains`
  NGRAM                             check: `contains(col, 'lph')`
  INVERTED                          check: full_text_query "alpha"     also: `contains_tokens`

Index names are z_first_<type> and a_second_<type> (the new one sorts first by name, and
list_indices() lists it first). A filter is served by the index whose name follows `]@` in a
ScalarIndexQuery of `ds.scanner(filter=f, columns=[], with_row_id=True).explain_plan()` (index_check.index_side).
A full-text plan (MatchQuery) names no index: with one INVERTED index it is that one (if the hits
are right); with two, one is built with lower_case=False and the query "ALPHA" tells them apart
(hits: the lower-casing index answered; none: the case-sensitive one). Every filter's row count
through the indexes is compared with a scan (use_scalar_index=False); a difference prints WRONG.

Measured on pylance 14.0.2 (59 pairs, none refused, no wrong rows): for filters the OLDEST
scalar index on the column (manifest order, not name order) serves everything it can and no later
one is ever consulted, even for filters the oldest cannot serve (NGRAM then BTREE: `=` scans;
BLOOMFILTER then BTREE: `>` scans); INVERTED takes no part in filters, and full-text search uses
the oldest INVERTED index. (Checked by hand, not here: `create_scalar_index(..., replace=True)`
moves the replaced index to the end, behind the other one.)

Prints each type alone, then the pairs, then a dict {(existing, new, column type): {...}}.
Plain Lance, no Spark, a few seconds:

    .venv/bin/python bench/scalar_pairs.py
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.compute as pc

STATS = {"BTREE": "BTree", "BITMAP": "Bitmap", "LABEL_LIST": "LabelList", "ZONEMAP": "ZoneMap",
         "BLOOMFILTER": "BloomFilter", "NGRAM": "NGram", "INVERTED": "Inverted"}
EQ = ("BTREE", "BITMAP", "ZONEMAP", "BLOOMFILTER")
COLUMNS = {"s": ("string", EQ + ("NGRAM", "INVERTED")), "i": ("int64", EQ),
           "ls": ("list<string>", ("LABEL_LIST", "INVERTED")), "li": ("list<int64>", ("LABEL_LIST",))}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
ROWS, PER_FILE = 4000, 1000
FTS = "FTS"


def make_table() -> pa.Table:
    r = range(ROWS)
    return pa.table({
        "s": pa.array([None if k % 17 == 0 else f"{WORDS[k % 8]} w{k % 50:03d}" for k in r], pa.string()),
        "i": pa.array([None if k % 13 == 0 else k % 97 for k in r], pa.int64()),
        "ls": pa.array([None if k % 19 == 0 else [WORDS[k % 8], WORDS[k % 5]] for k in r], pa.list_(pa.string())),
        "li": pa.array([None if k % 23 == 0 else [k % 31, k % 7] for k in r], pa.list_(pa.int64())),
    })


def filters(col: str, typ: str) -> list[tuple[str, object, bool]]:
    """(label, filter, is the job's check) for an index type on a column."""
    s = col == "s"
    if typ in EQ:
        v, lo, hi, lst = ("'alpha w000'", "'delta'", "'bravo' AND 'delta'", "('alpha w000', 'bravo w001')") if s \
            else ("5", "50", "10 AND 20", "(1, 2, 3)")
        return [("eq", pc.field(col) == pa.scalar("alpha w000" if s else 5), True),
                ("null", f"{col} IS NULL", True), ("gt", f"{col} > {lo}", False),
                ("between", f"{col} BETWEEN {hi}", False), ("in", f"{col} IN {lst}", False)]
    if typ == "LABEL_LIST":
        v = "'alpha'" if col == "ls" else "5"
        return [("has_any", f"array_has_any({col}, [{v}])", True),
                ("arr_contains", f"array_contains({col}, {v})", False)]
    if typ == "NGRAM":
        return [("contains", f"contains({col}, 'lph')", True)]
    return [("fts", FTS, True)] + ([("tokens", f"contains_tokens({col}, 'alpha')", False)] if s else [])


def served(ds, col: str, f, roles: dict[str, str], inverted_lc: dict[str, bool]) -> str:
    """Which index ("first" / "second" / "none") answers the filter; "+WRONG" if its rows differ
    from a scan's."""
    if isinstance(f, str) and f == FTS:
        def hits(q):
            try:
                return ds.to_table(full_text_query={"columns": [col], "query": q}, columns=[], with_row_id=True,
                                   disable_scoring_autoprojection=True).num_rows
            except Exception as e:  # noqa: BLE001
                return f"error {str(e)[:60]}"
        n, want = hits("alpha"), EXPECTED_FTS[col]
        invs = [nm for nm in inverted_lc]
        if isinstance(n, str) or not invs:
            return f"none({n})"
        if len(invs) == 1:
            who = roles[invs[0]]
        else:  # the query "ALPHA" only hits through a lower-casing index
            lc = hits("ALPHA") == want
            who = "+".join(roles[nm] for nm in invs if inverted_lc[nm] == lc)
        return who + ("" if n == want else f"+WRONG({n}!={want})")
    sc = ds.scanner(filter=f, columns=[], with_row_id=True)
    plan = sc.explain_plan()
    names = dict.fromkeys(re.findall(r"\]@([^()\s]+)\((\w+)\)", plan)) if "ScalarIndexQuery" in plan else {}
    who = "+".join(dict.fromkeys(roles.get(nm, nm) for nm, _ in names)) or "none"
    got, want = sc.count_rows(), ds.scanner(filter=f, columns=[], with_row_id=True, use_scalar_index=False).count_rows()
    return who + ("" if got == want else f"+WRONG({got}!={want})")


def build(root: Path, table: pa.Table, col: str, specs: list[tuple[str, str, dict]]):
    """A fresh dataset of one column with the indexes built in order; (dataset, {name: role},
    {inverted name: lower_case}, refusal message or "")."""
    path = root / f"d{time.monotonic_ns()}"
    ds = lance.write_dataset(table.select([col]), str(path), max_rows_per_file=PER_FILE)
    roles, inv, refused = {}, {}, ""
    for role, typ, kw in specs:
        # the new index's name sorts first, so a pick by name order would show as "second"
        name = f"{'z' if role == 'first' else 'a'}_{role}_{typ.lower()}"
        try:
            ds.create_scalar_index(col, index_type=typ, name=name, **kw)
            roles[name] = role
            if typ == "INVERTED":
                inv[name] = kw.get("lower_case", True)
        except Exception as e:  # noqa: BLE001
            refused = f"{role} {typ} REFUSED: {str(e).splitlines()[0][:100]}"
    return lance.dataset(str(path)), roles, inv, refused


def cells(ds, col, typ, roles, inv, checks_only=None):
    out = []
    for label, f, is_check in filters(col, typ):
        if checks_only is None or checks_only == is_check:
            out.append((label, is_check, served(ds, col, f, roles, inv)))
    return out


def fmt(cs) -> str:
    return " ".join(f"{label}={who}" for label, _, who in cs) or "-"


def main() -> None:
    t0 = time.time()
    summary = measure(verbose=True)
    print("\nSUMMARY = {")
    for k, v in summary.items():
        print(f"    {k!r}: {v!r},")
    print("}")
    print(f"\n{len(summary)} pairs in {time.time() - t0:.1f} s (lance {lance.__version__})")


def measure(verbose: bool = True) -> dict:
    """{(existing, new, column type): {"new_serves_own", "existing_keeps_own", "created",
    "existing_lance_type"}} for every pair; the tables printed when `verbose`."""
    global EXPECTED_FTS
    print_ = print if verbose else (lambda *a, **k: None)
    table = make_table()
    EXPECTED_FTS = {"s": pc.sum(pc.match_substring(table["s"], "alpha")).as_py(),
                    "ls": sum(1 for v in table["ls"].to_pylist() if v and "alpha" in v)}
    root = Path(tempfile.mkdtemp(prefix="scalar_pairs_"))
    summary = {}
    try:
        print_("== each type alone: which filters of every type on the column it serves ==")
        for col, (ctype, types) in COLUMNS.items():
            for typ in types:
                ds, roles, inv, refused = build(root, table, col, [("first", typ, {})])
                seen = {}
                for other in types:
                    for label, f, _ in filters(col, other):
                        seen.setdefault(label, served(ds, col, f, roles, inv))
                print_(f"{ctype:13} {typ:11} {refused or ''}" + " ".join(f"{k}={v}" for k, v in seen.items()))
        print_("\n== pairs: first (existing) then second (new) on the same column ==")
        print_("   [first's checks] [second's checks] {report-only filters of either type}")
        for col, (ctype, types) in COLUMNS.items():
            for a in types:
                for b in types:
                    variants = [({}, {})]
                    if a == b == "INVERTED":  # tell two INVERTED indexes apart by case folding
                        variants = [({}, {"lower_case": False}), ({"lower_case": False}, {})]
                    for ka, kb in variants:
                        ds, roles, inv, refused = build(root, table, col, [("first", a, ka), ("second", b, kb)])
                        ca, cb = cells(ds, col, a, roles, inv, True), cells(ds, col, b, roles, inv, True)
                        extra = {lab: w for lab, _, w in cells(ds, col, a, roles, inv, False)
                                 + cells(ds, col, b, roles, inv, False)}
                        tag = lambda k: "(lc=False)" if k else ""  # noqa: E731
                        print_(f"{ctype:13} {a + tag(ka):21} -> {b + tag(kb):21} {refused}"
                              f"[{fmt(ca)}] [{fmt(cb)}] {{{' '.join(f'{k}={v}' for k, v in extra.items())}}}")
                        key = (a + tag(ka), b + tag(kb), ctype)
                        summary[key] = {"new_serves_own": not refused and all(w == "second" for *_, w in cb),
                                        "existing_keeps_own": all(w == "first" for *_, w in ca),
                                        "created": not refused,
                                        "existing_lance_type": next(i.index_type for i in ds.describe_indices()
                                                                    if roles.get(i.name) == "first")}
        return summary
    finally:
        shutil.rmtree(root, ignore_errors=True)


EXPECTED_FTS: dict = {}

if __name__ == "__main__":
    main()
