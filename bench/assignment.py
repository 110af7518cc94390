"""Partition assignment: Lance's own against the job's GEMM (spark_lance_index/assign.py).

For partitions x dimension over {256, 1,024, 4,096, 16,384} x {128, 768}, on clustered rows
with random rows as centroids, one segment is built over the whole table twice, in this process,
with the same centroids: once with Lance's assignment (`create_index_uncommitted` alone), once
with the GEMM (`assign_fragments`, then `create_index_uncommitted(precomputed_partition_dataset=)`).
Lance's assignment costs the difference of the two builds' Lance calls; the GEMM's is timed
itself. Each is given in seconds per million rows per core (the machine's cores all work in
both). Also: the GEMM's achieved rate against the machine's own sgemm (numpy, 4,096 square), the
rest of a task (Lance's encoding and writing) that is then the floor, and the share of rows
Lance's own assignment puts outside their nearest centroid's partition (from the two segments'
partition lengths: a lower bound; past partitions x dimension of 1,000,000 Lance assigns through
an HNSW over the centroids).

    .venv/bin/python bench/assignment.py                  # 100k rows at 128-d, 40k at 768-d
    .venv/bin/python bench/assignment.py --rows-128 20000 --rows-768 8000 --partitions 256,1024   # smoke
    .venv/bin/python bench/assignment.py --threads-only  # BLAS threads per task: bounded against unbounded
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_MARKDOWN, append_section, environment_lines, load_average, markdown_table  # noqa: E402


def sgemm_gflops(size: int = 4096, repeats: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a  # warm
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def one(rows: int, dim: int, partitions: int, root: str) -> list:
    import lance
    import pyarrow as pa

    from spark_lance_index.assign import assign_fragments, segment_partition_lengths, write_partition_table
    from spark_lance_index.demo import clustered_vectors
    from spark_lance_index.storage import locate

    vectors = clustered_vectors(rows, dim, clusters=max(64, partitions // 4), seed=dim + partitions)
    uri = os.path.join(root, f"d{dim}-p{partitions}")
    lance.write_dataset(pa.table({"v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)}), uri,
                        max_rows_per_file=rows)
    ds = lance.dataset(uri)
    frags = [f.fragment_id for f in ds.get_fragments()]
    centroids = vectors[np.random.default_rng(1).choice(rows, partitions, replace=False)]
    arrow = pa.FixedSizeListArray.from_arrays(pa.array(centroids.ravel()), dim)
    kw = dict(name="v_idx", num_partitions=partitions, ivf_centroids=arrow, fragment_ids=frags)
    out: list = []
    lance_s = _timed(lambda: out.append(ds.create_index_uncommitted("v", "IVF_FLAT", **kw)))
    by_lance = segment_partition_lengths(locate(uri), {}, str(out[0].uuid))
    assigned = assign_fragments(ds, "v", frags, centroids, "l2")
    scratch = tempfile.mkdtemp(dir=root)
    table = write_partition_table(assigned, scratch)
    given_s = _timed(lambda: out.append(ds.create_index_uncommitted("v", "IVF_FLAT", precomputed_partition_dataset=table,
                                                                     **kw)))
    misplaced = int(np.abs(by_lance - assigned.counts(partitions)).sum()) // 2
    cores = os.cpu_count() or 1
    per_m = lambda s: s * cores / (rows / 1e6)  # noqa: E731
    lance_assign = max(0.0, lance_s - given_s)
    flops = 2.0 * rows * partitions * dim
    shutil.rmtree(uri, ignore_errors=True)
    return [partitions, dim, f"{rows:,}", f"{per_m(lance_assign):.2f}", f"{per_m(assigned.seconds):.2f}",
            f"{lance_assign / assigned.seconds:.1f}x" if assigned.seconds else "-",
            f"{flops / assigned.seconds / 1e9:.0f}", f"{per_m(given_s):.2f}",
            f"{misplaced / rows:.1%}" + (" (HNSW)" if partitions * dim >= 1_000_000 else "")]


def _worker(uri: str, partitions: int, threads: int) -> None:
    """One task's assignment, as a build task runs it, with `threads` BLAS threads: prints its seconds."""
    import lance

    ds = lance.dataset(uri)
    vectors = ds.to_table(columns=["v"], limit=partitions).column("v").combine_chunks()
    centroids = vectors.values.to_numpy().reshape(partitions, -1)
    from spark_lance_index.assign import assign_fragments

    frags = [f.fragment_id for f in ds.get_fragments()]
    print(assign_fragments(ds, "v", frags, centroids, "l2", threads=threads).seconds)


def threads_rows(root: str, rows: int, dim: int, partitions: int, repeats: int) -> list:
    """As many tasks at once as the machine has cores, each assigning `rows` rows, with BLAS
    bounded to one thread per task (what the job sets) and unbounded (a thread per core in every
    task). -> table rows"""
    import subprocess

    import lance
    import pyarrow as pa

    from spark_lance_index.demo import clustered_vectors

    cores = os.cpu_count() or 1
    uri = os.path.join(root, "threads")
    vectors = clustered_vectors(rows, dim, clusters=max(64, partitions // 4), seed=7)
    lance.write_dataset(pa.table({"v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)}), uri,
                        max_rows_per_file=rows)
    out = []
    for threads in (1, cores):
        walls, task_s = [], []
        for _ in range(repeats):
            env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
            started = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, __file__, "--worker", uri, str(partitions), str(threads)],
                                      env=env, stdout=subprocess.PIPE, text=True) for _ in range(cores)]
            task_s += [float(p.communicate()[0].split()[-1]) for p in procs]
            walls.append(time.perf_counter() - started)
        out.append([threads, cores, threads * cores, f"{np.median(walls):.2f}", f"{np.median(task_s):.2f}",
                    f"{np.max(task_s):.2f}"])
        print(out[-1], flush=True)
    shutil.rmtree(uri, ignore_errors=True)
    base = float(out[0][4])
    for r in out:
        r.append(f"{float(r[4]) / base:.2f}x")
    return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads-only", action="store_true",
                   help="only the BLAS threads table: tasks on every core, bounded and unbounded")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows-128", type=int, default=100_000)
    p.add_argument("--rows-768", type=int, default=40_000)
    p.add_argument("--partitions", default="256,1024,4096,16384")
    p.add_argument("--markdown", default=DEFAULT_MARKDOWN)
    args = p.parse_args(argv)
    started = load_average()
    if args.threads_only:
        root = tempfile.mkdtemp(prefix="bench-assign-")
        try:
            rows = threads_rows(root, args.rows_128 * 4, 128, 2048, args.repeats)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        table = markdown_table(["BLAS threads per task", "tasks at once", "threads in all", "wall s (median)",
                                "task assign s (median)", "task assign s (max)", "task / bounded"], rows)
        blocks = ["\n".join(environment_lines(started) + [
            f"- one process per task, as many as the machine has cores, all at once, each assigning "
            f"{args.rows_128 * 4:,} x 128 rows to 2,048 centroids (`assign_fragments`); {args.repeats} repeats",
            "- bounded: 1 BLAS thread per task (`spark.task.cpus`, what the job sets in the session and the task); "
            "unbounded: numpy's default, a thread per core in every task"]), table]
        print(append_section(args.markdown, "partition assignment: BLAS threads per task", blocks))
        return 0
    peak = sgemm_gflops()
    print(f"numpy sgemm, 4,096 square: {peak:.0f} GFLOPS", flush=True)
    root = tempfile.mkdtemp(prefix="bench-assign-")
    rows = []
    try:
        for dim, n in ((128, args.rows_128), (768, args.rows_768)):
            for partitions in (int(x) for x in args.partitions.split(",")):
                rows.append(one(n, dim, partitions, root))
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for r in rows:
        r.insert(7, f"{float(r[6]) / peak:.0%}")
    table = markdown_table(["partitions", "dim", "rows", "Lance assign s/M rows/core", "GEMM assign s/M rows/core",
                            "GEMM speedup", "GEMM GFLOPS", "of sgemm peak", "rest of the build s/M rows/core",
                            "rows Lance misplaced (at least)"], rows)
    blocks = ["\n".join(environment_lines(started) + [
        f"- numpy sgemm on this machine, 4,096 square: {peak:.0f} GFLOPS",
        "- IVF_FLAT segments over the whole table, random rows as centroids; Lance's assignment = its build minus "
        "the same build given the partitions; *rest of the build* = Lance's build given the partitions (residuals, "
        "storage, files): the floor once assignment is a GEMM",
        "- *misplaced*: half the absolute difference of the two segments' partition sizes, over the rows (a lower "
        "bound on rows Lance put outside their nearest centroid's partition)"]), table]
    print(append_section(args.markdown, "partition assignment: Lance's against the GEMM", blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
