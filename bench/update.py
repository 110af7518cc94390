"""`update` against a full rebuild and one-node `optimize_indices`, as the table grows.

One base table (clustered float32, default 1,000,000 x 128 in 32 fragments) indexed once by
the job at its defaults. Then, for each growth (default 1%, 5% and 20% new rows from the same
distribution, appended in fragments of the base's size), on private copies of the grown table:

- **update**: `python -m spark_lance_index update --master local[2]`;
- **rebuild**: `python -m spark_lance_index build --replace --master local[2]` (a new training);
- **optimize**: one-node Lance, `ds.optimize.optimize_indices()` in one Python process.

Each is one whole process (imports, Spark start, the work, exit), timed from outside; the job's
own phases come from its JSON report. Recall@10 is measured afterwards against exact search over
every row of the grown table, at nprobes 20 with and without refine. Medians over `--repeats`.

Then `--updates` (default 10) successive updates of `--step` (default 1%) on one copy: the
segment count, the rows each update encoded, and its time, after each.

    .venv-bench/bin/python bench/update.py
    .venv-bench/bin/python bench/update.py --rows 100000 --repeats 1 --updates 3   # smoke
    .venv-bench/bin/python bench/update.py --index-type IVF_SQ --growth 0.01,0.1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import (
    DEFAULT_MARKDOWN,
    append_section,
    child_env,
    copy_dataset,
    environment_lines,
    fmt_ratio,
    fmt_s,
    index_segments,
    load_average,
    markdown_table,
    measure_recall,
    median,
    remove_dataset,
    run_measured,
)

NPROBES, REFINES = (20,), (0, 10)
OPTIMIZE = """
import json, sys, time, lance
started = time.perf_counter()
ds = lance.dataset(sys.argv[1])
ds.optimize.optimize_indices()
json.dump({"index_seconds": time.perf_counter() - started}, open(sys.argv[2], "w"))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--index-type", default=None, help="the base build's and the rebuilds' type (default: the job's)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--growth", default="0.01,0.05,0.2", help="new rows as fractions of the base")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--updates", type=int, default=10, help="successive updates for the segment count")
    p.add_argument("--step", type=float, default=0.01, help="new rows per successive update")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--workdir-root", default="/tmp")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


class Table:
    """The base rows, the rows to append, the held-out queries: one clustered distribution."""

    def __init__(self, rows: int, extra: int, dim: int, queries: int):
        from spark_lance_index.demo import clustered_vectors

        everything = clustered_vectors(rows + extra + queries, dim, seed=0)
        self.vectors, self.queries, self.base_rows = everything[:rows + extra], everything[rows + extra:], rows

    def write(self, uri: Path, start: int, stop: int, rows_per_fragment: int, mode: str) -> None:
        import lance

        v = self.vectors[start:stop]
        table = pa.table({"id": pa.array(np.arange(start, stop, dtype=np.int64)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1])})
        lance.write_dataset(table, str(uri), mode=mode, max_rows_per_file=rows_per_fragment)

    def truth(self, rows: int, k: int = 10) -> np.ndarray:
        """Exact top-k row ids (= positions: ids are positions and rows are only appended)."""
        data = self.vectors[:rows]
        norms = (data ** 2).sum(1)
        out = []
        for chunk in np.array_split(self.queries, max(1, len(self.queries) // 25)):
            d = norms[None, :] - 2 * chunk @ data.T
            part = np.argpartition(d, k, axis=1)[:, :k]
            out.append(np.take_along_axis(part, np.argsort(np.take_along_axis(d, part, 1), 1), 1))
        return np.vstack(out)


def job(command: str, uri: Path, workdir: Path, tag: str, master: str, extra=(), column: str = "vector") -> dict:
    report = workdir / f"{tag}.report.json"
    cmd = [sys.executable, "-m", "spark_lance_index", command, "--uri", str(uri), "--column", column,
           "--master", master, "--verify-queries", "0", "--report", str(report), "--progress-interval", "3600", *extra]
    m = run_measured(cmd, workdir / f"{tag}.json", workdir / f"{tag}.log", cwd=workdir, env=child_env(sys.executable))
    doc = json.loads(report.read_text()) if report.exists() else {}
    if m.returncode != 0 or doc.get("outcome") != "succeeded":
        raise SystemExit(f"{tag} failed: see {m.log}")
    phases = doc["timings_seconds"]
    # the phases in their order; not the tasks' seconds added up over tasks ("build tasks (sum)"),
    # nor the trainer in the background, which overlap the phases (and counted twice before 2026-12-03)
    work = sum(v for k, v in phases.items() if k not in ("spark start", "preflight", "total") and "(" not in k)
    return {"wall": m.wall_seconds, "work": work, "report": doc}


def type_flags(args) -> list[str]:
    return ["--index-type", args.index_type] if args.index_type else []


def optimize(uri: Path, workdir: Path, tag: str) -> dict:
    out = workdir / f"{tag}.json"
    m = run_measured([sys.executable, "-c", OPTIMIZE, str(uri), str(out)], out, workdir / f"{tag}.log",
                     cwd=workdir, env=child_env(sys.executable))
    if m.returncode != 0:
        raise SystemExit(f"{tag} failed: see {m.log}")
    return {"wall": m.wall_seconds, "work": m.result.get("index_seconds")}


def recall_of(uri: Path, table: Table, truth: np.ndarray) -> dict:
    return measure_recall(uri, table.queries, truth, NPROBES, REFINES)[0]


def growth_runs(table: Table, base: Path, fraction: float, args, workdir: Path) -> dict:
    """Every contender `args.repeats` times on the base grown by `fraction`."""
    new = int(table.base_rows * fraction)
    per_fragment = -(-table.base_rows // args.fragments)
    grown = copy_dataset(base, workdir / f"grown-{fraction}.lance")
    table.write(grown, table.base_rows, table.base_rows + new, per_fragment, "append")
    truth = table.truth(table.base_rows + new)
    runs = {"update": [], "rebuild": [], "optimize": []}
    for r in range(args.repeats):
        for kind in runs:
            copy = copy_dataset(grown, workdir / f"{kind}.lance")
            tag = f"{kind}-{fraction}-{r}"
            print(f"  {tag} ...", flush=True)
            if kind == "update":
                run = job("update", copy, workdir, tag, args.master)
            elif kind == "rebuild":
                run = job("build", copy, workdir, tag, args.master, ["--replace", *type_flags(args)])
            else:
                run = optimize(copy, workdir, tag)
            run["recall"], run["segments"] = recall_of(copy, table, truth), index_segments(copy, "vector_idx")
            runs[kind].append(run)
            remove_dataset(copy)
    remove_dataset(grown)
    return {"fraction": fraction, "new_rows": new, "runs": runs}


def successive_updates(table: Table, base: Path, args, workdir: Path) -> list[dict]:
    copy = copy_dataset(base, workdir / "successive.lance")
    step = int(table.base_rows * args.step)
    per_fragment = -(-table.base_rows // args.fragments)
    rows, out = table.base_rows, []
    for i in range(args.updates):
        table.write(copy, rows, rows + step, min(step, per_fragment), "append")
        rows += step
        print(f"  update {i + 1} of {args.updates} ...", flush=True)
        run = job("update", copy, workdir, f"successive-{i}", args.master)
        u = run["report"]["update"]
        out.append({"update": i + 1, "rows": rows, "wall": run["wall"], "work": run["work"],
                    "encoded": u["new_rows"] + u["rows_reencoded"], "new": u["new_rows"],
                    "segments": index_segments(copy, "vector_idx")})
    final = recall_of(copy, table, table.truth(rows))
    out[-1]["recall"] = final
    remove_dataset(copy)
    return out


def fmt_recall(runs: list[dict], setting) -> str:
    value = median([r["recall"][setting] for r in runs])
    return "-" if value is None else f"{value:.3f}"


def growth_table(results: list[dict]) -> str:
    rows = []
    for g in results:
        runs = g["runs"]
        rebuild = median([r["wall"] for r in runs["rebuild"]])
        for kind in ("update", "rebuild", "optimize"):
            wall = median([r["wall"] for r in runs[kind]])
            rows.append([
                f"{g['fraction']:.0%} ({g['new_rows']:,})", kind, fmt_s(wall), fmt_s(median([r["work"] for r in runs[kind]])),
                fmt_ratio(wall, rebuild), str(median([r["segments"] for r in runs[kind]])),
                *(fmt_recall(runs[kind], (n, rf)) for n in NPROBES for rf in REFINES),
            ])
    header = ["new rows", "how", "wall s", "work s", "wall / rebuild", "segments",
              *(f"recall np {n}" + (f" rf {rf}" if rf else "") for n in NPROBES for rf in REFINES)]
    return markdown_table(header, rows)


def successive_table(steps: list[dict]) -> str:
    rows = [[str(s["update"]), f"{s['rows']:,}", f"{s['new']:,}", f"{s['encoded']:,}", f"{s['encoded'] / s['new']:.1f}",
             fmt_s(s["wall"]), fmt_s(s["work"]), str(s["segments"])] for s in steps]
    return markdown_table(["update", "rows after", "new rows", "rows encoded", "encoded / new", "wall s",
                           "work s", "segments"], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    fractions = [float(f) for f in args.growth.split(",")]
    extra = int(args.rows * max(max(fractions), args.step * args.updates))
    table = Table(args.rows, extra, args.dim, args.queries)
    workdir = Path(tempfile.mkdtemp(prefix="bench-update-", dir=args.workdir_root))
    base = workdir / "base.lance"
    table.write(base, 0, args.rows, -(-args.rows // args.fragments), "create")
    print(f"base index on {args.rows:,} x {args.dim} ...", flush=True)
    built = job("build", base, workdir, "base-build", args.master, type_flags(args))
    params = built["report"]["index"]
    results = [growth_runs(table, base, f, args, workdir) for f in fractions]
    steps = successive_updates(table, base, args, workdir)
    final = steps[-1]["recall"]
    title = (f"update: {args.rows:,} x {args.dim} clustered float32, {args.fragments} fragments, "
             f"{params['type']} {params['num_partitions']} partitions"
             + (f" {params['num_bits']} bits" if params.get("num_bits") else ""))
    blocks = [
        "\n".join(environment_lines(started_load)),
        f"The base index was built once by the job at its defaults ({fmt_s(built['wall'])} s). Medians of "
        f"{args.repeats} runs; *wall* is the whole process, *work* the job's phases without Spark start and "
        "preflight (for optimize: the `optimize_indices` call). Recall@10 against exact search over every row.",
        growth_table(results),
        f"{args.updates} successive updates of {args.step:.0%} ({int(args.rows * args.step):,} rows) on one table "
        f"(default segment policy: ratio 3); recall@10 after the last: "
        + ", ".join(f"{v:.3f} at nprobes {n}" + (f" refine {rf}" if rf else "") for (n, rf), v in final.items()) + ".",
        successive_table(steps),
    ]
    text = append_section(args.markdown, title, blocks)
    print(text)
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
