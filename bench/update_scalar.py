"""`update` of scalar and full-text indexes against a full rebuild and one-node `optimize_indices`.

The table of bench/scalar.py (default 1,000,000 rows in 32 fragments, the text from the
installed manual pages, or `--text generated`) with the index of each type built once by one-node
`create_scalar_index`. Then, for each growth (default 1% and 10% new rows of the same
distribution, appended in fragments of the base's size), on private copies:

- **update**: `python -m spark_lance_index update --master local[2] --verify-queries 0`;
- **rebuild**: `python -m spark_lance_index build --replace --master local[2] --verify-queries 0`;
- **optimize**: one-node Lance, `ds.optimize.optimize_indices()` in one Python process.

Each is one whole process, timed from outside. Quality: scalar types, 10 filters through the
index against a scan without it (how many equal); INVERTED, 20 queries' top-10 against a fresh
one-node build of the grown table (ties allowed). The median ms per query through each index
(warm) says what a delta segment costs a query. Then `--updates` successive updates of 1%:
the segment count after each.

    .venv-bench/bin/python bench/update_scalar.py
    .venv-bench/bin/python bench/update_scalar.py --rows 50000 --types BTREE,INVERTED --updates 3   # smoke
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import (
    DEFAULT_MARKDOWN,
    append_section,
    copy_dataset,
    environment_lines,
    fmt_ratio,
    fmt_s,
    index_segments,
    load_average,
    markdown_table,
    remove_dataset,
)
from scalar import COLUMN_OF, TYPES, answers, filters, same_top_k, text_queries, write_table
from update import job, optimize


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--growth", default="0.01,0.1", help="new rows as fractions of the base")
    p.add_argument("--updates", type=int, default=10, help="successive 1%% updates for the segment count")
    p.add_argument("--text", choices=("man", "generated"), default="man")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--workdir-root", default="/tmp")
    return p.parse_args(argv)


def append_rows(source: Path, uri: Path, start: int, stop: int, per_fragment: int) -> None:
    import lance

    rows = lance.dataset(str(source)).to_table(offset=start, limit=stop - start)
    lance.write_dataset(rows, str(uri), mode="append", max_rows_per_file=per_fragment)


def quality(uri: Path, index_type: str, probes: list[str], reference: Path | None) -> tuple[str, float]:
    """(filters: how many equal a scan; text: how many top-10 equal the fresh one-node build's,
    the median ms per query through the index, after one warm-up pass)."""
    answers(str(uri), index_type, probes)  # warm: the first query of a process opens the index files
    got, seconds = answers(str(uri), index_type, probes)
    ms = 1000 * float(np.median(seconds)) if seconds else float("nan")
    if index_type == "INVERTED":
        want, _ = answers(str(reference), index_type, probes)
        return f"{sum(same_top_k(a, b) for a, b in zip(got, want))}/{len(probes)}", ms
    import lance

    ds = lance.dataset(str(uri))
    scans = [sorted(ds.to_table(filter=q, columns=["id"], use_scalar_index=False)["id"].to_pylist()) for q in probes]
    return f"{sum(a == b for a, b in zip(got, scans))}/{len(probes)}", ms


def one_type(index_type: str, source: Path, args, workdir: Path) -> tuple[list[list[str]], list[list[str]]]:
    import lance

    column, name = COLUMN_OF[index_type], f"{COLUMN_OF[index_type]}_idx"
    per_fragment = -(-args.rows // args.fragments)
    base = workdir / f"base-{index_type}.lance"
    append_rows(source, base, 0, args.rows, per_fragment)
    lance.dataset(str(base)).create_scalar_index(column, index_type)
    flags: list[str] = []
    rng = np.random.default_rng(7)
    growth_rows, steps_rows = [], []
    for fraction in [float(f) for f in args.growth.split(",")]:
        new = int(args.rows * fraction)
        grown = copy_dataset(base, workdir / "grown.lance")
        append_rows(source, grown, args.rows, args.rows + new, per_fragment)
        reference = None
        probes = filters(index_type, args.rows + new, rng)
        if index_type == "INVERTED":
            reference = copy_dataset(grown, workdir / "reference.lance")
            lance.dataset(str(reference)).create_scalar_index(column, index_type, replace=True)
            probes = text_queries(str(grown), 20, rng)
        runs = {}
        for kind in ("update", "rebuild", "optimize"):
            copy = copy_dataset(grown, workdir / f"{kind}.lance")
            tag = f"{index_type}-{kind}-{fraction}"
            print(f"  {tag} ...", flush=True)
            if kind == "update":
                run = job("update", copy, workdir, tag, args.master, flags, column=column)
            elif kind == "rebuild":
                run = job("build", copy, workdir, tag, args.master, ["--replace", "--index-type", index_type],
                          column=column)
            else:
                run = optimize(copy, workdir, tag)
            run["segments"] = index_segments(copy, name)
            run["quality"], run["ms"] = quality(copy, index_type, probes, reference)
            runs[kind] = run
            remove_dataset(copy)
        for kind, run in runs.items():
            growth_rows.append([index_type, f"{fraction:.0%} ({new:,})", kind, fmt_s(run["wall"]), fmt_s(run["work"]),
                                fmt_ratio(run["wall"], runs["rebuild"]["wall"]), str(run["segments"]),
                                run["quality"], f"{run['ms']:.2f}"])
        remove_dataset(grown)
        if reference is not None:
            remove_dataset(reference)
    copy = copy_dataset(base, workdir / "successive.lance")
    rows, step, segments = args.rows, int(args.rows * 0.01), []
    for i in range(args.updates):
        append_rows(source, copy, rows, rows + step, min(step, per_fragment))
        rows += step
        print(f"  {index_type} successive update {i + 1} ...", flush=True)
        job("update", copy, workdir, f"{index_type}-successive-{i}", args.master, flags, column=column)
        segments.append(index_segments(copy, name))
    steps_rows.append([index_type, " ".join(map(str, segments)), str(max(segments)) if segments else "-"])
    remove_dataset(copy)
    remove_dataset(base)
    return growth_rows, steps_rows


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    types = args.types.split(",")
    extra = int(args.rows * max(max(float(f) for f in args.growth.split(",")), 0.01 * args.updates))
    workdir = Path(tempfile.mkdtemp(prefix="bench-update-scalar-", dir=args.workdir_root))
    source = workdir / "source.lance"
    text_source = write_table(source, args.rows + extra, args.fragments, args.text, seed=0)
    growth, steps = [], []
    for index_type in types:
        g, s = one_type(index_type, source, args, workdir)
        growth += g
        steps += s
    blocks = [
        "\n".join(environment_lines(started_load)) + f"\n- {text_source}",
        "The base index of each type was built once by one-node `create_scalar_index`. One run each; *wall* is "
        "the whole process, *work* the job's phases without Spark start and preflight (for optimize: the "
        "`optimize_indices` call). *answers*: filters through the index equal to a scan (scalar types), or "
        "queries whose top-10 equals a fresh one-node build's, ties allowed (INVERTED); *ms per query*: the "
        "median through the index, one thread, after a warm-up pass: what a delta segment costs a query.",
        markdown_table(["type", "new rows", "how", "wall s", "work s", "wall / rebuild", "segments", "answers",
                        "ms per query"], growth),
        f"{args.updates} successive updates of 1% ({int(args.rows * 0.01):,} rows) on one table, the segment "
        "count after each (default segment policy: ratio 3):",
        markdown_table(["type", "segments after each update", "most"], steps),
    ]
    title = f"update of scalar and full-text indexes: {args.rows:,} rows, {args.fragments} fragments"
    print(append_section(args.markdown, title, blocks))
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
