"""The recall check's exact search, before and after it skipped rows that cannot enter a top-k.

One clustered dataset; one process; `--queries` queries. The executors' kernel
(`verify.exact_topk_of_fragments`: 32k-row batches, one GEMM per batch, only rows nearer than a
query's k-th best so far reach the selection) against the kernel it replaced (8k-row batches,
a selection over every row of every batch, kept here as it was), and a plain scan of the column
(the floor). Both must return the same neighbours. Prints a markdown section and appends it to
docs/benchmarks.md.

    .venv-bench/bin/python bench/recall_check.py              # 2M x 128, 100 queries
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_MARKDOWN, append_section, environment_lines, load_average, markdown_table, write_clustered


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    return p.parse_args(argv)


def previous_kernel(task, queries):
    """The exact search as it was before (commit f066375), for comparison."""
    from spark_lance_index.dataset import open_dataset
    from spark_lance_index.exact_search import TopK, as_matrix, empty_topk, merge_topk, vector_column

    def distances(data, queries):
        dots = queries @ np.nan_to_num(data, nan=0.0).T
        dist = np.nan_to_num((data**2).sum(1), nan=0.0)[None, :] - 2 * dots + (queries**2).sum(1)[:, None]
        dist[:, ~np.isfinite(data).all(1)] = np.inf
        return dist

    ds = open_dataset(task.uri, task.storage_options, task.version)
    best = empty_topk(len(queries), task.k)
    for batch in ds.scanner(columns=[task.column], with_row_id=True, batch_size=8192,
                            fragments=[ds.get_fragment(f) for f in task.fragment_ids]).to_batches():
        dist = distances(as_matrix(vector_column(batch, task.column)), queries)
        row_ids = batch.column("_rowid").to_numpy().astype(np.int64)
        k = min(task.k, batch.num_rows)
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        best = merge_topk(best, TopK(row_ids[part], np.take_along_axis(dist, part, 1).astype(np.float32)))
    return best


def scan(task, _queries):
    from spark_lance_index.dataset import open_dataset

    ds = open_dataset(task.uri, task.storage_options, task.version)
    for _ in ds.scanner(columns=[task.column], batch_size=32768,
                        fragments=[ds.get_fragment(f) for f in task.fragment_ids]).to_batches():
        pass


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    import lance

    from spark_lance_index.exact_search import ExactSearchTask, exact_topk_of_fragments

    workdir = Path(tempfile.mkdtemp(prefix="bench-recall-check-", dir="/tmp"))
    uri = workdir / "d.lance"
    _, queries = write_clustered(uri, args.rows, args.dim, 16, args.queries)
    ds = lance.dataset(str(uri))
    task = ExactSearchTask(str(uri), ds.version, "vector", "l2", tuple(f.fragment_id for f in ds.get_fragments()),
                           10, args.rows)
    kernels = {"scan only (the floor)": scan, "before: every row selected": previous_kernel,
               "now: only rows that can enter": exact_topk_of_fragments}
    seconds = {name: [] for name in kernels}
    answers = {}
    for _ in range(args.repeats):
        for name, fn in kernels.items():
            t = time.perf_counter()
            answers[name] = fn(task, queries.astype(np.float32))
            seconds[name].append(time.perf_counter() - t)
    same = bool((np.sort(answers["before: every row selected"].ids, 1) == np.sort(answers["now: only rows that can enter"].ids, 1)).all())
    before = float(np.median(seconds["before: every row selected"]))
    rows = [[name, f"{np.median(s):.2f}", f"{np.median(s) / before:.2f}"] for name, s in seconds.items()]
    shutil.rmtree(workdir, ignore_errors=True)
    blocks = ["\n".join(environment_lines(started_load) + [
        f"- {args.rows:,} x {args.dim} clustered float32, 16 fragments, {args.queries} queries, k 10, l2, one process "
        f"(numpy's BLAS on both cores); medians of {args.repeats}; same neighbours before and now: {same}"]),
        markdown_table(["kernel", "seconds", "/ before"], rows)]
    print(append_section(args.markdown, "recall check: the exact search kernel", blocks))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
