"""Scalar and full-text indexes: the job next to one-node `create_scalar_index` and lance-ray.

One table (default 1,000,000 rows) with a column for each type: `x` int64 (BTREE), `cat` 100
categories (BITMAP), `tags` lists of labels (LABEL_LIST), `seq` sorted int64 (ZONEMAP), `code`
strings (BLOOMFILTER, NGRAM), and `text` (INVERTED): real English, the paragraphs of the manual
pages installed on the machine (Debian packages ship them under /usr/share/man), repeated as
needed to fill the table, or `--text generated` (a Zipf vocabulary). Each contender builds each
index in its own subprocess on its own copy:

  single     `ds.create_scalar_index(...)` in one Python process
  job        `python -m spark_lance_index build ... --master local[2] --verify-queries 0`
  lance-ray  lance-ray's `create_scalar_index` on a local Ray with 2 CPUs and 2 workers
             (the types it builds distributed: BTREE, BITMAP, ZONEMAP, INVERTED)

Reported: median process wall time and index work over `--repeats`, the committed segments, and
what each index answers: for scalar types, filters through the index against a scan without it
(exact or not) and the median ms per filtered query; for INVERTED, how many of the queries'
top-10 equal one-node's (ties allowed) and the median ms per query. Prints a markdown section and
appends it to docs/benchmarks.md.

    .venv-bench/bin/python bench/scalar.py                                  # 1M rows, 3 repeats
    .venv-bench/bin/python bench/scalar.py --rows 20000 --repeats 1         # smoke
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import (
    CONTENDERS,
    DEFAULT_MARKDOWN,
    append_section,
    child_env,
    copy_dataset,
    environment_lines,
    fmt_mib,
    fmt_s,
    index_segments,
    load_average,
    markdown_table,
    median,
    remove_dataset,
    run_measured,
)
from runs import Run, say

TYPES = ("BTREE", "BITMAP", "LABEL_LIST", "ZONEMAP", "BLOOMFILTER", "NGRAM", "INVERTED")
COLUMN_OF = {"BTREE": "x", "BITMAP": "cat", "LABEL_LIST": "tags", "ZONEMAP": "seq", "BLOOMFILTER": "code",
             "NGRAM": "code", "INVERTED": "text"}
LANCE_RAY_TYPES = {"BTREE", "BITMAP", "ZONEMAP", "INVERTED"}  # what lance-ray 0.5.0 builds distributed
KINDS = ("single", "job", "lance-ray")
NAMES = {"single": "one-node create_scalar_index", "job": "spark job", "lance-ray": "lance-ray"}
MAN = Path("/usr/share/man")
_TROFF = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\[-&|^e]|\\s[-+]?\d|\\\*.|\\\"")


def man_paragraphs(limit: int) -> list[str]:
    """Paragraphs of the installed manual pages, troff stripped: real English text."""
    out, current = [], []
    for page in sorted(MAN.glob("man*/*.gz")):
        try:
            lines = gzip.open(page, "rt", errors="replace").read().splitlines()
        except (OSError, EOFError):
            continue
        for line in lines:
            if line.startswith((".", "'")):
                if current and line[1:3] in ("PP", "SH", "SS", "TP", "IP", "LP", "P", "Sh", "Pp"):
                    out.append(" ".join(current))
                    current = []
                continue
            words = _TROFF.sub("", line).split()
            current += words
        if current:
            out.append(" ".join(current))
            current = []
        if len(out) >= limit:
            break
    return [p for p in out if len(p.split()) >= 3][:limit]


def generated_text(rows: int, rng) -> list[str]:
    vocab = [f"w{i}" for i in range(20_000)]
    p = 1 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    return [" ".join(vocab[j] for j in rng.choice(len(vocab), rng.integers(5, 60), p=p)) for _ in range(rows)]


def write_table(path: Path, rows: int, fragments: int, text: str, seed: int) -> str:
    """Write the table; returns a line saying where its text came from."""
    import lance

    rng = np.random.default_rng(seed)
    if text == "man":
        paragraphs = man_paragraphs(rows)
        if not paragraphs:
            raise SystemExit(f"no manual pages under {MAN}: pass --text generated")
        texts = [paragraphs[i % len(paragraphs)] for i in range(rows)]
        source = (f"text: {len(paragraphs):,} paragraphs of the manual pages under {MAN}"
                  + (f", repeated to {rows:,} rows" if len(paragraphs) < rows else ""))
    else:
        texts, source = generated_text(rows, rng), "text: generated, a Zipf vocabulary of 20,000 words"
    table = pa.table({
        "id": np.arange(rows),
        "x": rng.integers(0, rows, rows),
        "cat": pa.array([f"cat{c}" for c in rng.integers(0, 100, rows)]),
        "tags": pa.array([[f"t{t}" for t in rng.choice(20, rng.integers(0, 4), replace=False)] for _ in range(rows)]),
        "seq": np.arange(rows) * 3,
        "code": pa.array([f"c{a}-{b}" for a, b in rng.integers(0, 100_000, (rows, 2))]),
        "text": pa.array(texts),
    })
    lance.write_dataset(table, str(path), max_rows_per_file=-(-rows // fragments))
    return source


def filters(index_type: str, rows: int, rng) -> list[str]:
    if index_type in ("BTREE", "ZONEMAP"):
        col = COLUMN_OF[index_type]
        scale = 3 if col == "seq" else 1
        return [f"{col} = {int(v) * scale}" for v in rng.integers(0, rows, 5)] + \
            [f"{col} >= {int(v) * scale} AND {col} < {int(v + 1000) * scale}" for v in rng.integers(0, rows, 5)]
    if index_type == "BITMAP":
        return [f"cat = 'cat{c}'" for c in rng.integers(0, 100, 10)]
    if index_type == "LABEL_LIST":
        return [f"array_has_any(tags, ['t{t}'])" for t in rng.integers(0, 20, 10)]
    if index_type == "BLOOMFILTER":
        return [f"code = 'c{a}-{b}'" for a, b in rng.integers(0, 100_000, (10, 2))]
    if index_type == "NGRAM":
        return [f"contains(code, '{a}-{b}')" for a, b in rng.integers(10, 99, (10, 2))]
    return []


def text_queries(uri: str, n: int, rng) -> list[str]:
    """Queries of 1 to 3 words taken from random rows."""
    import lance

    ds = lance.dataset(uri)
    picked = np.sort(rng.choice(ds.count_rows(), size=n, replace=False))
    out = []
    for text in ds.take(picked, columns=["text"]).column("text").to_pylist():
        words = [w for w in re.findall(r"[A-Za-z]{4,}", text)]
        if words:
            out.append(" ".join(rng.choice(words, min(len(words), rng.integers(1, 4)), replace=False)))
    return out


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def same_top_k(a, b) -> bool:
    """Equal top-k up to ties: the same scores, and the same rows above the k-th score."""
    (ids_a, sa), (ids_b, sb) = a, b
    if len(sa) != len(sb) or not np.allclose(np.sort(sa), np.sort(sb), rtol=1e-4):
        return False
    cut = min(sa) if len(sa) else 0
    return {i for i, x in zip(ids_a, sa) if x > cut * (1 + 1e-4)} == {i for i, x in zip(ids_b, sb) if x > cut * (1 + 1e-4)}


def answers(uri: str, index_type: str, probes: list[str]) -> tuple[list, list[float]]:
    """What the index answers for each probe (sorted ids of a filter, or top-10 with scores),
    and the seconds per query through the index."""
    import lance

    ds = lance.dataset(uri)
    out, seconds = [], []
    for q in probes:
        if index_type == "INVERTED":
            t, s = timed(lambda q=q: ds.to_table(full_text_query=q, columns=["id"], limit=10))
            out.append((t.column("id").to_pylist(), t.column("_score").to_pylist()))
        else:
            t, s = timed(lambda q=q: ds.to_table(filter=q, columns=["id"]))
            out.append(sorted(t.column("id").to_pylist()))
        seconds.append(s)
    return out, seconds


def command(kind: str, uri: Path, index_type: str, out: Path, report: Path, args) -> list[str]:
    column = COLUMN_OF[index_type]
    base = [sys.executable, str(CONTENDERS), kind, "--out", str(out)]
    if kind == "job":
        return [*base, "--", "build", "--uri", str(uri), "--column", column, "--index-type", index_type,
                "--master", args.master, "--verify-queries", "0", "--report", str(report),
                "--progress-interval", "3600"]
    return [*base, "--uri", str(uri), "--column", column, "--index-type", index_type,
            "--index-name", f"{column}_idx", "--ray-workers", str(args.ray_workers)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--text", choices=("man", "generated"), default="man")
    p.add_argument("--contenders", default=",".join(KINDS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--queries", type=int, default=50, help="full-text queries")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--workdir-root", default="/tmp")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import json
    import shutil

    args = parse_args(argv)
    started_load = load_average()
    kinds = [k.strip() for k in args.contenders.split(",")]
    types = [t.strip().upper() for t in args.types.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-scalar-", dir=args.workdir_root))
    source = workdir / "source.lance"
    rng = np.random.default_rng(args.seed)
    say(f"writing {args.rows:,} rows in {args.fragments} fragments to {source}")
    origin = write_table(source, args.rows, args.fragments, args.text, args.seed)
    time_rows, check_rows, failures = [], [], []
    try:
        for index_type in types:
            probes = text_queries(str(source), args.queries, rng) if index_type == "INVERTED" \
                else filters(index_type, args.rows, rng)
            reference = None
            for kind in kinds:
                if kind == "lance-ray" and index_type not in LANCE_RAY_TYPES:
                    continue
                runs, agree, latencies, segments = [], [], [], None
                for rep in range(args.repeats):
                    tag = f"{kind}-{index_type}-{rep}"
                    copy = copy_dataset(source, workdir / f"{tag}.lance")
                    report = workdir / f"{tag}.report.json"
                    m = run_measured(command(kind, copy, index_type, workdir / f"{tag}.json", report, args),
                                     workdir / f"{tag}.json", workdir / f"{tag}.log", cwd=workdir,
                                     env=child_env(sys.executable), timeout=args.timeout)
                    run = Run(kind, m, json.loads(report.read_text()) if report.exists() else {})
                    runs.append(run)
                    if run.error:
                        failures.append(f"- {index_type}, {NAMES[kind]}: {run.error}")
                    else:
                        segments = index_segments(copy, f"{COLUMN_OF[index_type]}_idx")
                        got, seconds = answers(str(copy), index_type, probes)
                        latencies.append(1000 * float(np.median(seconds)))
                        if index_type == "INVERTED":
                            if reference is None and kind == "single":
                                reference = got
                            agree.append(sum(same_top_k(a, b) for a, b in zip(got, reference)) if reference else None)
                        else:
                            import lance

                            ds = lance.dataset(str(copy))
                            scan = [sorted(ds.to_table(filter=q, columns=["id"], use_scalar_index=False)
                                           .column("id").to_pylist()) for q in probes]
                            agree.append(sum(a == b for a, b in zip(got, scan)))
                    remove_dataset(copy)
                    say(f"[{index_type}] {NAMES[kind]} {rep + 1}/{args.repeats}: "
                        + (f"FAILED {run.error}" if run.error else
                           f"process {m.wall_seconds:.2f} s, index {fmt_s(run.index_seconds)} s, agree {agree[-1]}"))
                good = [r for r in runs if not r.error]
                wall, work = median([r.measured.wall_seconds for r in good]), median([r.index_seconds for r in good])
                time_rows.append([index_type, NAMES[kind], fmt_s(wall), fmt_s(work),
                                  fmt_mib(max((r.measured.peak_tree_rss for r in good), default=None)),
                                  segments if segments is not None else "-", f"{len(good)}/{len(runs)}"])
                what = "top-10 equal to one-node's" if index_type == "INVERTED" else "filters exact against a scan"
                counted = [a for a in agree if a is not None]
                check_rows.append([index_type, NAMES[kind], what,
                                   f"{min(counted)}-{max(counted)} of {len(probes)}" if counted else "-",
                                   f"{median(latencies):.2f}" if latencies else "-"])
    finally:
        remove_dataset(source)
    lines = environment_lines(started_load) + [
        f"- {args.rows:,} rows in {args.fragments} fragments; {origin}; spark master `{args.master}`, lance-ray on a "
        f"local Ray with {args.ray_workers} CPUs and {args.ray_workers} workers; medians over {args.repeats} builds",
        "- *index work*: the `create_scalar_index` call, or the job's build phases from its report "
        "(plan, train, build, merge, commit, verify, cleanup; its own check is off here)",
    ]
    blocks = ["\n".join(lines), "Time:", markdown_table(
        ["index", "contender", "process wall s", "index work s", "process tree peak MiB", "segments", "runs ok"],
        time_rows), "What the committed index answers (the range over builds), and the median ms per query:",
        markdown_table(["index", "contender", "check", "agree", "ms/query"], check_rows)]
    if failures:
        blocks.append("Failures:\n" + "\n".join(failures))
    title = f"scalar and full-text indexes: {args.rows:,} rows, {args.repeats} repeat{'s' if args.repeats > 1 else ''}"
    print(append_section(args.markdown, title, blocks))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
