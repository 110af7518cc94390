"""The Spark job next to a single-process `create_index` and lance-ray, on one dataset.

For IVF_RQ 1 bit, IVF_RQ 4 bits and IVF_PQ (16 sub-vectors) by default, or any other Lance
vector type (`--indexes sq,hnsw_flat,hnsw_sq,hnsw_pq`), with the same num_partitions,
sample rate and k-means iterations for all, each contender builds the index in its own
subprocess on its own copy of a generated clustered dataset:

  single     `ds.create_index(...)` in one Python process
  job        `python -m spark_lance_index build ... --master local[2] --verify-queries 0`
  lance-ray  lance-ray's `create_index` on a local Ray instance with 2 CPUs and 2 workers

It reports the median process wall time over `--repeats`, the index work alone, peak memory,
ratios within this run, and recall@10 of each committed index against exact numpy search on
held-out queries. Prints a markdown section and appends it to docs/benchmarks.md.

    .venv-bench/bin/python bench/compare.py                      # 1M x 128, 32 fragments, 3 repeats
    .venv-bench/bin/python bench/compare.py --rows 20000 --repeats 1 --sample-rate 64   # smoke
    .venv-bench/bin/python bench/compare.py --rows 300000 --indexes sq,hnsw_flat,hnsw_sq,hnsw_pq
    .venv-bench/bin/python bench/compare.py --rows 10000000 --indexes rq --defaults --contenders single,job
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import (
    DEFAULT_MARKDOWN,
    K,
    default_num_partitions,
    environment_lines,
    load_average,
    remove_dataset,
    write_clustered,
)
from runs import (
    COLUMN_NOTES,
    Settings,
    failures,
    latency_table,
    parse_specs,
    phase_table,
    publish,
    ratio_table,
    recall_table,
    run_matrix,
    say,
    time_memory_table,
)

KINDS = ("single", "job", "job-lance-assign", "lance-ray")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--queries", type=int, default=100, help="held-out queries for recall")
    p.add_argument("--indexes", default="rq1,rq4,pq",
                   help="comma-separated: rq<bits>, pq, flat, sq, hnsw_flat, hnsw_sq, hnsw_pq")
    p.add_argument("--rows-per-task", type=int,
                   help="the job's --rows-per-task (default: its own plan); e.g. one task per core")
    p.add_argument("--pq-sub-vectors", type=int, default=16)
    p.add_argument("--contenders", default=",".join(KINDS), help=f"any of {', '.join(KINDS)}")
    p.add_argument("--num-partitions", type=int, help="default rows/8192 in 1..4096 (Lance's rule)")
    p.add_argument("--sample-rate", type=int, default=256,
                   help="training rows per partition (lance-ray's IVF_PQ needs rows >= 256 x this)")
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3, help="builds per contender; the median is reported")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one build is killed")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the log to append to")
    p.add_argument("--workdir-root", default="/tmp", help="datasets go in a bench-compare-* dir here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, reports)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--defaults", action="store_true",
                   help="every contender at its own defaults (only --indexes is given), the job with its recall check")
    args = p.parse_args(argv)
    args.kinds = [k.strip() for k in args.contenders.split(",")]
    if set(args.kinds) - set(KINDS):
        p.error(f"--contenders: unknown {sorted(set(args.kinds) - set(KINDS))}")
    return args


def section(args, settings: Settings, outcomes, started_load: str) -> tuple[str, list[str]]:
    """The markdown title and blocks for this run."""
    title = (f"compare: {args.rows:,} x {args.dim} clustered float32, {args.fragments} fragments, "
             f"{args.repeats} repeat{'s' if args.repeats > 1 else ''}")
    lines = environment_lines(started_load) + [
        settings.describe(args.kinds),
        f"- recall@{K} on {args.queries} held-out queries against exact numpy search: the median "
        "over each contender's builds, [min-max] when they differ (each build trains anew, so the "
        "range is training noise); np = nprobes, rf = refine_factor",
    ]
    blocks = ["\n".join(lines), "Time and memory:", time_memory_table(outcomes),
              "Ratios of the medians above (same run, same dataset):", ratio_table(outcomes)]
    if any(k.startswith("job") for k in args.kinds):
        blocks += ["The job's phases (seconds, median), from its JSON report:", phase_table(outcomes)]
    blocks += [f"Recall@{K}:", recall_table(outcomes),
               "Query latency, median ms per query (one query at a time from one thread; every segment "
               "of the index is searched):", latency_table(outcomes), COLUMN_NOTES]
    failed = failures(outcomes)
    if failed:
        blocks += ["Failures:\n" + "\n".join(failed)]
    return title, blocks


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    from spark_lance_index.testing import exact_topk

    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-", dir=args.workdir_root))
    source = workdir / "source.lance"
    try:
        say(f"writing {args.rows:,} x {args.dim} vectors in {args.fragments} fragments to {source}")
        vectors, queries = write_clustered(source, args.rows, args.dim, args.fragments, args.queries, args.seed)
        truth = exact_topk(vectors, queries, K)
        del vectors  # the contenders read the dataset; the parent needs only the truth
        settings = Settings(
            num_partitions=args.num_partitions or default_num_partitions(args.rows),
            sample_rate=args.sample_rate, max_iters=args.max_iters, master=args.master,
            ray_workers=args.ray_workers, timeout=args.timeout, python=sys.executable,
            job_flags=("--rows-per-task", str(args.rows_per_task)) if args.rows_per_task else (),
            defaults=args.defaults,
        )
        specs = parse_specs(args.indexes, args.pq_sub_vectors)
        outcomes = run_matrix(source, queries, truth, specs, args.kinds, settings, args.repeats, workdir)
    finally:
        remove_dataset(source)
    title, blocks = section(args, settings, outcomes, started_load)
    return publish(args.markdown, title, blocks, outcomes, workdir, args.keep)


if __name__ == "__main__":
    sys.exit(main())
