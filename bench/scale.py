"""The job alone as the table grows: 100k, 300k and 1M x 128 by default.

For each size: a fresh clustered dataset; one scan of its vector column in its own process
(the floor: any index build reads every vector at least once); then the job as a whole
process, `python -m spark_lance_index build ... --master local[2] --verify-queries 0`, on its
own copy of the dataset. Reports the job's phases (from its JSON report), seconds per million
rows, the job against the scan, and peak memory of the driver Python, the JVM and the whole
process tree, with the driver's growth from the smallest size to the largest. Prints a
markdown section and appends it to docs/benchmarks.md.

    .venv-bench/bin/python bench/scale.py                                   # 100k, 300k, 1M
    .venv-bench/bin/python bench/scale.py --sizes 10000,20000 --scan-repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    CONTENDERS,
    DEFAULT_MARKDOWN,
    append_section,
    default_num_partitions,
    environment_lines,
    fmt_mib,
    fmt_ratio,
    fmt_s,
    load_average,
    markdown_table,
    median,
    remove_dataset,
    write_clustered,
)
from runs import (
    ALL_PHASES,
    Outcome,
    Run,
    Settings,
    build_once,
    measured_run,
    parse_specs,
    say,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,300000,1000000", help="rows, comma-separated")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--index", default="rq1", help="one of rq<bits> or pq (see compare.py)")
    p.add_argument("--pq-sub-vectors", type=int, default=16)
    p.add_argument("--num-partitions", type=int, help="default rows/8192 in 1..4096 at each size")
    p.add_argument("--sample-rate", type=int, default=256)
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=1, help="job runs per size; the median is reported")
    p.add_argument("--scan-repeats", type=int, default=3, help="scans per size; the median is reported")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--workdir-root", default="/tmp")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, reports)")
    args = p.parse_args(argv)
    args.size_list = sorted(int(x) for x in args.sizes.split(","))
    specs = parse_specs(args.index, args.pq_sub_vectors)
    if len(specs) != 1:
        p.error("--index takes one index configuration")
    args.spec = specs[0]
    return args


def scan_runs(source: Path, repeats: int, settings: Settings, workdir: Path) -> list[Run]:
    """Read the vector column once per process, `repeats` times."""
    runs = []
    for rep in range(repeats):
        tag = f"scan-{rep}"
        cmd = [settings.python, str(CONTENDERS), "scan", "--out", str(workdir / f"{tag}.json"),
               "--uri", str(source)]
        runs.append(measured_run("scan", cmd, tag, workdir, settings))
    return runs


def measure_size(rows: int, args, workdir: Path) -> tuple[Outcome, list[Run], Settings]:
    """Write one dataset, scan it, run the job on copies of it. -> (job outcome, scans, settings)"""
    source = workdir / f"source-{rows}.lance"
    settings = Settings(num_partitions=args.num_partitions or default_num_partitions(rows),
                        sample_rate=args.sample_rate, max_iters=args.max_iters,
                        master=args.master, timeout=args.timeout, python=sys.executable)
    try:
        say(f"writing {rows:,} x {args.dim} vectors in {args.fragments} fragments")
        write_clustered(source, rows, args.dim, args.fragments, queries=0)
        scans = scan_runs(source, args.scan_repeats, settings, workdir)
        job = Outcome(args.spec, "job")
        for rep in range(args.repeats):
            run, copy = build_once("job", source, args.spec, settings, workdir, f"job-{rows}-{rep}")
            job.runs.append(run)
            remove_dataset(copy)
            say(f"{rows:,} rows, job {rep + 1}/{args.repeats}: "
                + (f"FAILED {run.error}" if run.error else f"process {run.measured.wall_seconds:.2f} s"))
    finally:
        remove_dataset(source)
    return job, scans, settings


def scan_seconds(scans: list[Run]) -> float | None:
    return median([r.measured.result.get("scan_seconds") for r in scans if not r.error])


def size_row(rows: int, job: Outcome, scans: list[Run], settings: Settings) -> list[str]:
    wall, work, scan = job.median_wall(), job.median_index(), scan_seconds(scans)
    tasks = [r.report.get("counts", {}).get("tasks") for r in job.good]

    def per_m(seconds):
        return None if seconds is None else seconds * 1e6 / rows

    return [f"{rows:,}", str(settings.num_partitions), str(tasks[0]) if tasks else "-",
            fmt_s(wall), fmt_s(per_m(wall)), fmt_s(work), fmt_s(per_m(work)), fmt_s(scan, 3),
            fmt_ratio(wall, scan), fmt_ratio(work, scan),
            fmt_mib(job.peak(lambda r: r.driver_rss)),
            fmt_mib(job.peak(lambda r: r.measured.peak_by_name.get("java"))),
            fmt_mib(job.peak(lambda r: r.measured.peak_tree_rss))]


def phase_row(rows: int, job: Outcome) -> list[str]:
    """Phases, then what the job's own clock saw outside them (SparkSession start and the
    rest), then what the process spent outside the job's clock (imports, JVM shutdown)."""
    phases = [job.median_phase(p) for p in ALL_PHASES]
    total, wall = job.median_phase("total"), job.median_wall()
    in_job = total - sum(p or 0 for p in phases) if total is not None else None
    outside = wall - total if wall is not None and total is not None else None
    return [f"{rows:,}", *(fmt_s(p) for p in phases), fmt_s(in_job), fmt_s(outside), fmt_s(wall)]


def section(args, results, started_load: str) -> tuple[str, list[str], bool]:
    title = (f"scale: the job alone, {args.spec.label}, "
             f"{', '.join(f'{n:,}' for n in args.size_list)} x {args.dim}, {args.fragments} fragments")
    settings_line = (f"- job: master `{args.master}`, sample_rate {args.sample_rate}, max_iters "
                     f"{args.max_iters}, num_partitions "
                     + (str(args.num_partitions) if args.num_partitions else "rows/8192 (Lance's rule)")
                     + f"; {args.repeats} job run(s) and {args.scan_repeats} scan(s) per size, medians")
    header = ["rows", "partitions", "tasks", "process wall s", "s per M rows", "build phases s",
              "build phases s per M rows", "scan s", "process / scan", "build phases / scan",
              "driver peak MiB", "JVM peak MiB", "process tree peak MiB"]
    sizes = markdown_table(header, [size_row(n, job, scans, s) for n, (job, scans, s) in results.items()])
    phases = markdown_table(
        ["rows", *ALL_PHASES, "session start and rest", "process outside the job", "process wall"],
        [phase_row(n, job) for n, (job, _, _) in results.items()])
    small, large = results[min(results)][0], results[max(results)][0]
    driver, tree = (lambda r: r.driver_rss), (lambda r: r.measured.peak_tree_rss)
    growth = (f"Driver peak RSS at {max(results):,} rows / at {min(results):,} rows: "
              f"{fmt_ratio(large.peak(driver), small.peak(driver))} "
              f"(process tree: {fmt_ratio(large.peak(tree), small.peak(tree))}).")
    notes = ("*scan* reads the vector column of every fragment once (`ds.scanner(columns=[...])."
             "to_batches()`) in a fresh process, from the page cache as the job does. *build "
             "phases* are plan+train+build+merge+commit+verify+cleanup from the job's report. *driver "
             "peak* is the driver Python's own peak RSS (`VmHWM`); JVM and tree peaks are sampled with psutil.")
    failed = [f"- {n:,} rows: {e}" for n, (job, scans, _) in results.items()
              for e in job.errors + [r.error for r in scans if r.error]]
    blocks = ["\n".join(environment_lines(started_load) + [settings_line]), sizes,
              "The job's phases (seconds, median):", phases, growth, notes]
    if failed:
        blocks.append("Failures:\n" + "\n".join(failed))
    return title, blocks, bool(failed)


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir_root))
    results = {rows: measure_size(rows, args, workdir) for rows in args.size_list}
    title, blocks, failed = section(args, results, started_load)
    print(append_section(args.markdown, title, blocks))
    say(f"appended to {args.markdown}")
    if args.keep or failed:
        say(f"logs and reports kept in {workdir}")
    else:
        shutil.rmtree(workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
