"""Why some index types' segments are merged and others are committed as built (index_types.py).

For each Lance vector type, plain Lance in one process (no Spark): train the IVF centroids (and
the PQ codebook) once, build one segment per quarter of the table with them, then commit those
segments either as built or merged into one, and measure both against exact search: recall@10 at
nprobes 8 (and with refine_factor 10 for quantized types), the median query latency, the build
and merge seconds. The table's last quarter can be scaled (`--wide`, default 3x), the way one
task's rows may span a wider range than the others' (SQ bounds are taken per segment). Prints a
markdown section and appends it to docs/benchmarks.md.

    .venv/bin/python bench/merge_policy.py                    # 100,000 x 64, every type
    .venv/bin/python bench/merge_policy.py --rows 20000 --types IVF_SQ   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    DEFAULT_MARKDOWN,
    append_section,
    environment_lines,
    load_average,
    markdown_table,
    write_vectors,
)

TYPES = ("IVF_FLAT", "IVF_PQ", "IVF_RQ", "IVF_SQ", "IVF_HNSW_FLAT", "IVF_HNSW_SQ", "IVF_HNSW_PQ")
SEGMENTS = 4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--wide", type=float, default=3.0, help="scale of the last quarter's vectors (1: none)")
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def query(ds, queries, truth, nprobes, refine):
    """(recall@10, median ms per query), one query at a time after a short warm-up."""
    def one(q):
        nearest = {"column": "vector", "q": q, "k": 10, "nprobes": nprobes, **({"refine_factor": refine} if refine else {})}
        return ds.to_table(nearest=nearest, columns=["id"]).column("id").to_numpy()
    for q in queries[:5]:
        one(q)
    hits, seconds = 0, []
    for q, true_ids in zip(queries, truth):
        started = time.perf_counter()
        found = one(q)
        seconds.append(time.perf_counter() - started)
        hits += len(set(found.tolist()) & set(true_ids.tolist()))
    return hits / truth.size, 1000 * float(np.median(seconds))


def measure(index_type: str, source: Path, workdir: Path, vectors, queries, truth, args) -> list[list]:
    import lance
    from lance.lance import indices

    ds = lance.dataset(str(source))
    dim, sub_vectors = vectors.shape[1], max(1, vectors.shape[1] // 8)
    centroids = indices.train_ivf_model(ds._ds, "vector", dim, args.partitions, "l2", 256, 50, None)
    kwargs = {}
    if "PQ" in index_type:
        kwargs = {"pq_codebook": indices.train_pq_model(ds._ds, "vector", dim, sub_vectors, "l2", 256, 50, centroids, None),
                  "num_sub_vectors": sub_vectors}
    if index_type == "IVF_RQ":
        kwargs = {"rabitq_model": indices.build_rq_model(dim, num_bits=1), "num_bits": 1}
    rows = []
    for mode in ("as built", "merged"):
        copy = workdir / f"{index_type}-{mode.replace(' ', '-')}.lance"
        shutil.copytree(source, copy)
        ds = lance.dataset(str(copy))
        fragments = [f.fragment_id for f in ds.get_fragments()]
        groups = np.array_split(fragments, SEGMENTS)
        started = time.perf_counter()
        segments = [ds.create_index_uncommitted("vector", index_type, name="vector_idx", num_partitions=args.partitions,
                                                ivf_centroids=centroids, fragment_ids=[int(f) for f in g], **kwargs)
                    for g in groups]
        build = time.perf_counter() - started
        merge = None
        if mode == "merged":
            started = time.perf_counter()
            segments = [ds.merge_existing_index_segments(segments)]
            merge = time.perf_counter() - started
        ds = ds.commit_existing_index_segments("vector_idx", "vector", segments)
        cells = [index_type, mode, len(segments), f"{build:.2f}", "-" if merge is None else f"{merge:.2f}"]
        for refine in (None, 10):
            r, ms = query(ds, queries, truth, 8, refine)
            cells += [f"{r:.3f}", f"{ms:.2f}"]
        rows.append(cells)
        shutil.rmtree(copy)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    started_load = load_average()
    from spark_lance_index.demo import clustered_vectors
    from spark_lance_index.testing import exact_topk

    everything = clustered_vectors(args.rows + args.queries, args.dim, seed=args.seed)
    vectors, queries = everything[:args.rows].copy(), everything[args.rows:]
    vectors[args.rows * 3 // 4:] *= args.wide
    truth = exact_topk(vectors, queries, 10)
    workdir = Path(tempfile.mkdtemp(prefix="bench-merge-policy-", dir="/tmp"))
    try:
        source = workdir / "source.lance"
        write_vectors(source, vectors, SEGMENTS * 2)
        rows = []
        for index_type in [t.strip().upper() for t in args.types.split(",")]:
            print(f"{index_type} ...", file=sys.stderr, flush=True)
            rows += measure(index_type, source, workdir, vectors, queries, truth, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header = ["type", "segments committed", "count", "build s (4 segments)", "merge s",
              "recall@10 np 8", "ms/query", "recall@10 np 8 rf 10", "ms/query rf 10"]
    lines = environment_lines(started_load) + [
        f"- {args.rows:,} x {args.dim} clustered float32 in {SEGMENTS * 2} fragments, the last quarter scaled "
        f"x{args.wide:g}; {args.partitions} partitions; centroids (and PQ codebook, RaBitQ rotation) trained "
        f"once and given to each of {SEGMENTS} segment builds; {args.queries} held-out queries, exact truth by numpy",
        "- *as built*: the 4 segments committed as they are; *merged*: merge_existing_index_segments first",
    ]
    title = f"merge policy: {SEGMENTS} segments as built or merged, by type ({args.rows:,} x {args.dim})"
    print(append_section(args.markdown, title, ["\n".join(lines), markdown_table(header, rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
