"""Real data: Fashion-MNIST (ann-benchmarks' fashion-mnist-784-euclidean), the job next to a
single-process `create_index`.

The 60,000 training images are the base vectors and the 10,000 test images the queries
(784-d, uint8 pixels stored as float32), L2. IVF_RQ (1 and 4 bits) and IVF_PQ (49 sub-vectors
of 16 dimensions by default) are built by the job (`--master local[2]`) and by one-node
`ds.create_index` for reference, each in its own process on its own copy, with the same
parameters. Recall@10 against exact numpy search (chunked), at nprobes 10/20/50 with and
without refine 10. Prints a markdown section and appends it to docs/benchmarks.md.

Needs the Debian package: `apt-get install -y dataset-fashion-mnist`.

    .venv-bench/bin/python bench/fashion_mnist.py                        # 60k base, 1,000 queries
    .venv-bench/bin/python bench/fashion_mnist.py --all-queries          # all 10,000 queries
    .venv-bench/bin/python bench/fashion_mnist.py --base 10000 --queries 100   # smoke
"""

from __future__ import annotations

import argparse
import gzip
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import (
    DEFAULT_MARKDOWN,
    K,
    environment_lines,
    load_average,
    remove_dataset,
    write_vectors,
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

PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_IMAGES_MAGIC = 2051  # IDX: 0x00 0x00, type 0x08 (uint8), 3 dimensions
KINDS = ("single", "job", "lance-ray")


def find_data_dir(given: Path | None) -> Path:
    """Where the package put the IDX files: the flag, the usual place, or what dpkg lists."""
    for candidate in (given, DEFAULT_DIR):
        if candidate and (candidate / "train-images-idx3-ubyte.gz").exists():
            return candidate
    try:
        listed = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=True).stdout
        for line in listed.splitlines():
            if line.endswith("/train-images-idx3-ubyte.gz"):
                return Path(line).parent
    except (OSError, subprocess.CalledProcessError):
        pass
    raise SystemExit(f"Fashion-MNIST not found: install it with `apt-get install -y {PACKAGE}` "
                     "(or pass --data-dir)")


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX image file (gzip) as a (count, rows*cols) uint8 array.

    The header is 16 bytes, big-endian int32s: magic, count, rows, cols."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != IDX_IMAGES_MAGIC:
        raise SystemExit(f"{path} is not an IDX image file (magic {magic})")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != count * rows * cols:
        raise SystemExit(f"{path}: {pixels.size} bytes of pixels, the header says {count}x{rows}x{cols}")
    return pixels.reshape(count, rows * cols)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help=f"default: {DEFAULT_DIR} (from apt {PACKAGE})")
    p.add_argument("--base", type=int, default=60_000, help="base vectors: the first N training images")
    p.add_argument("--queries", type=int, default=1_000, help="queries: the first N test images")
    p.add_argument("--all-queries", action="store_true", help="use all 10,000 test images")
    p.add_argument("--fragments", type=int, default=8)
    p.add_argument("--indexes", default="rq1,rq4,pq",
                   help="comma-separated: rq<bits>, pq, flat, sq, hnsw_flat, hnsw_sq, hnsw_pq")
    p.add_argument("--pq-sub-vectors", type=int, default=49, help="49 (16 dims each) or 98 (8 dims)")
    p.add_argument("--contenders", default="single,job", help=f"any of {', '.join(KINDS)}")
    p.add_argument("--num-partitions", type=int,
                   help="default sqrt(base): Lance's rows/8192 rule gives fewer partitions than the nprobes measured")
    p.add_argument("--sample-rate", type=int, default=256)
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--workdir-root", default="/tmp")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    args.kinds = [k.strip() for k in args.contenders.split(",")]
    if set(args.kinds) - set(KINDS):
        p.error(f"--contenders: unknown {sorted(set(args.kinds) - set(KINDS))}")
    return args


def load(args) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries) as float32, as ann-benchmarks uses them."""
    folder = find_data_dir(args.data_dir)
    train = read_idx_images(folder / "train-images-idx3-ubyte.gz")
    test = read_idx_images(folder / "t10k-images-idx3-ubyte.gz")
    queries = test if args.all_queries else test[: args.queries]
    return train[: args.base].astype(np.float32), queries.astype(np.float32)


def section(args, base, queries, settings: Settings, outcomes, started_load: str):
    title = (f"fashion-mnist: {len(base):,} x {base.shape[1]} base, {len(queries):,} queries, L2, "
             f"{args.fragments} fragments")
    lines = environment_lines(started_load) + [
        settings.describe(args.kinds),
        f"- recall@{K} against exact numpy search over the base vectors, on each contender's first "
        f"build; np = nprobes, rf = refine_factor; {args.repeats} repeat(s), medians",
    ]
    blocks = ["\n".join(lines), f"Recall@{K}:", recall_table(outcomes), "Time and memory:",
              time_memory_table(outcomes), "Ratios (same run):", ratio_table(outcomes),
              "Query latency, median ms per query (one thread; every segment searched):", latency_table(outcomes)]
    if "job" in args.kinds:
        blocks += ["The job's phases (seconds, median):", phase_table(outcomes)]
    blocks.append(COLUMN_NOTES)
    if failures(outcomes):
        blocks.append("Failures:\n" + "\n".join(failures(outcomes)))
    return title, blocks


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    from spark_lance_index.testing import exact_topk

    base, queries = load(args)
    say(f"fashion-mnist: {base.shape[0]:,} base x {base.shape[1]}, {len(queries):,} queries")
    truth = exact_topk(base, queries, K)  # chunked by 64 queries inside
    workdir = Path(tempfile.mkdtemp(prefix="bench-fashion-", dir=args.workdir_root))
    source = workdir / "source.lance"
    settings = Settings(
        num_partitions=args.num_partitions or round(math.sqrt(len(base))),
        sample_rate=args.sample_rate, max_iters=args.max_iters, master=args.master,
        timeout=args.timeout, python=sys.executable,
    )
    try:
        write_vectors(source, base, args.fragments)
        specs = parse_specs(args.indexes, args.pq_sub_vectors)
        outcomes = run_matrix(source, queries, truth, specs, args.kinds, settings, args.repeats, workdir)
    finally:
        remove_dataset(source)
    title, blocks = section(args, base, queries, settings, outcomes, started_load)
    return publish(args.markdown, title, blocks, outcomes, workdir, args.keep)


if __name__ == "__main__":
    sys.exit(main())
