"""What every committed segment costs every query: latency against the number of segments.

One clustered dataset; the job builds the same index (same partitions) with 32 tasks and merges
them into 1, 4, 16 or 32 segments (`--max-segment-rows`); after each build, recall@10 and the
median latency of one query at a time, from one thread. Prints a markdown section and appends it
to docs/benchmarks.md.

    .venv-bench/bin/python bench/segment_latency.py              # 400k x 128, 256 partitions, IVF_RQ 1 bit
    .venv-bench/bin/python bench/segment_latency.py --rows 40000 --queries 50   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    DEFAULT_MARKDOWN,
    append_section,
    environment_lines,
    load_average,
    markdown_table,
    measure_recall,
    write_clustered,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--partitions", type=int, default=256)
    p.add_argument("--segments", default="1,4,16,32")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nprobes", type=int, default=20)
    p.add_argument("--refine", type=int, default=10)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    from spark_lance_index.config import make_config
    from spark_lance_index.pipeline import run
    from spark_lance_index.spark import get_session
    from spark_lance_index.testing import exact_topk

    workdir = Path(tempfile.mkdtemp(prefix="bench-segments-", dir="/tmp"))
    uri = workdir / "d.lance"
    vectors, queries = write_clustered(uri, args.rows, args.dim, 32, args.queries)
    truth = exact_topk(vectors, queries, 10)
    del vectors
    spark, _ = get_session(args.master, "bench-segment-latency")
    rows = []
    for segments in [int(x) for x in args.segments.split(",")]:
        config = make_config({}, {"uri": str(uri), "column": "vector", "index_type": "IVF_RQ", "num_bits": 1,
                                  "num_partitions": args.partitions, "rows_per_task": -(-args.rows // 32),
                                  "max_segment_rows": -(-args.rows // segments), "replace": True,
                                  "verify_queries": 0})
        result = run(config, spark=spark)
        recalls, latencies = measure_recall(uri, queries, truth, (args.nprobes,), (0, args.refine))
        print(segments, result.segments_committed, recalls, latencies, flush=True)
        rows.append([str(result.segments_committed)]
                    + [f"{latencies[(args.nprobes, r)]:.2f}" for r in (0, args.refine)]
                    + [f"{recalls[(args.nprobes, r)]:.3f}" for r in (0, args.refine)])
    spark.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    base = float(rows[0][1]), float(rows[0][2])
    for row in rows:
        row += [f"{float(row[1]) / base[0]:.2f}", f"{float(row[2]) / base[1]:.2f}"]
    blocks = ["\n".join(environment_lines(started_load) + [
        f"- {args.rows:,} x {args.dim} clustered float32 in 32 fragments, IVF_RQ 1 bit, {args.partitions} "
        f"partitions (the same for every layout), 32 tasks merged into the given number of segments; "
        f"{args.queries} held-out queries at nprobes {args.nprobes}, one at a time from one thread"]),
        markdown_table(["segments", "ms/query", f"ms/query refine {args.refine}", "recall@10",
                        f"recall@10 refine {args.refine}", "latency / 1 segment", f"refine {args.refine} / 1 segment"],
                       rows)]
    print(append_section(args.markdown, "segment latency: what each committed segment costs a query", blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
