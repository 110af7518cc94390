"""Lance's trainer (k-means on the driver) against the distributed one (k-means on the executors).

Two parts, each trainer in its own process, one after the other:

  cost     the train phase alone (sample, IVF k-means, PQ codebook when asked) at each of
           `--partitions` on one clustered dataset: seconds and the driver Python's peak RSS
           (VmHWM; the executors are other processes). Spark's start is not counted.
  quality  whole builds with each trainer, `--repeats` times each (Lance's k-means takes no
           seed, so each repeat is another training), recall@10 against exact numpy search at
           the same partitions; medians, and the spread of the repeats.

The quality part runs on Fashion-MNIST (real data, `apt-get install -y dataset-fashion-mnist`)
and on the clustered dataset. Prints a markdown section and appends it to docs/benchmarks.md.

    .venv-bench/bin/python bench/training.py                      # the figures in docs/benchmarks.md
    .venv-bench/bin/python bench/training.py --rows 200000 --partitions 256 --repeats 1 --skip-fashion  # smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    DEFAULT_MARKDOWN,
    append_section,
    child_env,
    environment_lines,
    fmt_mib,
    fmt_s,
    load_average,
    markdown_table,
    median,
    run_measured,
    write_clustered,
    write_vectors,
)

TRAINERS = ("lance", "distributed")
HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000, help="rows of the clustered dataset")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--fragments", type=int, default=32)
    p.add_argument("--partitions", default="1024,4096,16384", help="cost part: comma-separated")
    p.add_argument("--cost-index", default="IVF_FLAT", help="IVF_FLAT (centroids) or IVF_PQ (and a codebook)")
    p.add_argument("--quality-partitions", type=int, default=1024, help="clustered data, quality part")
    p.add_argument("--fashion-partitions", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--skip-fashion", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--child", help=argparse.SUPPRESS)  # cost|quality, in a subprocess
    p.add_argument("--uri", help=argparse.SUPPRESS)
    p.add_argument("--trainer", help=argparse.SUPPRESS)
    p.add_argument("--index-type", default="IVF_FLAT", help=argparse.SUPPRESS)
    p.add_argument("--num-partitions", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the child processes ------------------------------------------------------------------

def child_cost(args) -> dict:
    """The train phase alone, in this process (the driver)."""
    from spark_lance_index import pipeline
    from spark_lance_index.config import make_config
    from spark_lance_index.spark import default_parallelism, get_session
    from spark_lance_index.transport import transport_for

    extra = {"num_sub_vectors": args.dim // 8} if args.index_type == "IVF_PQ" else {}
    config = make_config({}, {"uri": args.uri, "column": "vector", "index_type": args.index_type,
                              "num_partitions": args.num_partitions, "trainer": args.trainer, **extra})
    spark, _ = get_session(args.master, "bench-training")
    insp = pipeline.inspect_inputs(config)
    before = rss_hwm()
    started = time.perf_counter()
    artifacts = pipeline.train(config, insp.snap, insp.params, transport_for(spark), default_parallelism(spark))
    seconds = time.perf_counter() - started
    spark.stop()
    return {"train_seconds": seconds, "rss_before": before, "rss_peak": rss_hwm(),
            "centroids": list(artifacts.centroids.shape)}


def child_quality(args) -> dict:
    """`--repeats` builds with one trainer; recall@10 of each against exact search."""
    import lance

    from spark_lance_index.config import make_config
    from spark_lance_index.pipeline import run
    from spark_lance_index.spark import get_session
    from spark_lance_index.testing import ann_topk, exact_topk, recall_at_k

    data = np.load(args.uri + ".base.npy")
    queries = np.load(args.uri + ".queries.npy")
    truth = exact_topk(data, queries, 10)
    spark, _ = get_session(args.master, "bench-training")
    figures = []
    for _ in range(args.repeats):
        config = make_config({}, {"uri": args.uri, "column": "vector", "index_type": args.index_type,
                                  "num_partitions": args.num_partitions, "trainer": args.trainer,
                                  "verify_queries": 0, "replace": True,
                                  **({"num_sub_vectors": 16} if args.index_type == "IVF_PQ" else {})})
        result = run(config, spark=spark)
        ds = lance.dataset(args.uri)
        figures.append({f"{n}/{r}": recall_at_k(truth, ann_topk(ds, "vector", queries, 10, n, r))
                        for n, r in ((1, None), (4, None), (4, 10))} | {"train_s": result.seconds.get("train")})
    spark.stop()
    return {"figures": figures}


def rss_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- the parent ---------------------------------------------------------------------------

def spawn(workdir: Path, tag: str, flags: list) -> dict:
    out = workdir / f"{tag}.json"
    cmd = [sys.executable, __file__, *flags, "--out", str(out)]
    m = run_measured(cmd, workdir / f"{tag}.child.json", workdir / f"{tag}.log", cwd=workdir,
                     env=child_env(sys.executable), timeout=7200)
    if not out.exists():
        return {"error": f"exit {m.returncode}, see {workdir / (tag + '.log')}"}
    return json.loads(out.read_text())


def cost_part(args, workdir: Path) -> str:
    source = workdir / "clustered.lance"
    write_clustered(source, args.rows, args.dim, args.fragments, queries=0)
    rows = []
    for partitions in [int(x) for x in args.partitions.split(",")]:
        found = {}
        for trainer in TRAINERS:
            found[trainer] = spawn(workdir, f"cost-{partitions}-{trainer}",
                                   ["--child", "cost", "--uri", str(source), "--trainer", trainer, "--index-type",
                                    args.cost_index, "--num-partitions", str(partitions), "--master", args.master])
            print(f"cost {partitions} {trainer}: {found[trainer]}", flush=True)
        lance_, dist = found["lance"], found["distributed"]
        rows.append([f"{partitions:,}", fmt_s(lance_.get("train_seconds")), fmt_s(dist.get("train_seconds")),
                     ratio(dist.get("train_seconds"), lance_.get("train_seconds")),
                     fmt_mib(lance_.get("rss_peak")), fmt_mib(dist.get("rss_peak")),
                     ratio(dist.get("rss_peak"), lance_.get("rss_peak")),
                     "; ".join(f"{t}: {found[t]['error']}" for t in TRAINERS if "error" in found[t]) or ""])
    shutil.rmtree(source)
    return markdown_table(["partitions", "lance s", "distributed s", "distributed / lance", "lance driver peak MiB",
                           "distributed driver peak MiB", "distributed / lance (memory)", "errors"], rows)


def ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def quality_part(args, workdir: Path, name: str, base: np.ndarray, queries: np.ndarray, partitions: int,
                 index_types=("IVF_FLAT", "IVF_PQ")) -> str:
    uri = workdir / f"{name}.lance"
    rows = []
    for index_type in index_types:
        medians = {}
        for trainer in TRAINERS:
            write_vectors(uri, base, 8)
            np.save(str(uri) + ".base.npy", base)
            np.save(str(uri) + ".queries.npy", queries)
            found = spawn(workdir, f"quality-{name}-{index_type}-{trainer}",
                          ["--child", "quality", "--uri", str(uri), "--trainer", trainer, "--index-type", index_type,
                           "--num-partitions", str(partitions), "--master", args.master,
                           "--repeats", str(args.repeats)])
            print(f"quality {name} {index_type} {trainer}: {found}", flush=True)
            figures = found.get("figures", [])
            medians[trainer] = {key: median([f[key] for f in figures]) for key in ("1/None", "4/None", "4/10", "train_s")}
            spread = {key: (min(f[key] for f in figures), max(f[key] for f in figures)) if figures else None
                      for key in ("1/None", "4/None", "4/10")}
            rows.append([index_type, trainer, str(len(figures))]
                        + [f"{medians[trainer][k]:.3f} ({spread[k][0]:.3f}-{spread[k][1]:.3f})" if spread[k] else "-"
                           for k in ("1/None", "4/None", "4/10")]
                        + [fmt_s(medians[trainer]["train_s"])])
        diff = [medians["distributed"][k] - medians["lance"][k] if medians["lance"][k] is not None
                and medians["distributed"][k] is not None else None for k in ("1/None", "4/None", "4/10")]
        rows.append([index_type, "distributed - lance", ""] + [f"{d:+.3f}" if d is not None else "-" for d in diff] + [""])
    shutil.rmtree(uri, ignore_errors=True)
    return markdown_table(["index", "trainer", "builds", "recall@10 nprobes 1", "nprobes 4", "nprobes 4 refine 10",
                           "train phase s"], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child_cost(args) if args.child == "cost" else child_quality(args)
        Path(args.out).write_text(json.dumps(result))
        return 0
    started_load = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="bench-training-", dir="/tmp"))
    blocks = ["\n".join(environment_lines(started_load))]
    if not args.skip_cost:
        blocks += [f"Cost of the train phase alone ({args.cost_index}), {args.rows:,} x {args.dim} clustered, "
                   f"{args.fragments} fragments, sample_rate 256 capped at 1,048,576 rows and 1 GiB; one process "
                   f"per figure, master `{args.master}`:", cost_part(args, workdir)]
    sys.path.insert(0, str(HERE))
    from spark_lance_index.demo import clustered_vectors

    everything = clustered_vectors(200_000 + args.queries, args.dim, seed=7)
    blocks += [] if args.skip_quality else [f"Quality, clustered 200,000 x {args.dim}, {args.quality_partitions} partitions (two levels in the "
               f"distributed trainer), {args.queries} held-out queries, {args.repeats} builds per trainer, "
               "median (min-max):",
               quality_part(args, workdir, "clustered", everything[:200_000], everything[200_000:],
                            args.quality_partitions)]
    if not args.skip_fashion and not args.skip_quality:
        from fashion_mnist import find_data_dir, read_idx_images

        folder = find_data_dir(None)
        base = read_idx_images(folder / "train-images-idx3-ubyte.gz").astype(np.float32)
        queries = read_idx_images(folder / "t10k-images-idx3-ubyte.gz")[: args.queries].astype(np.float32)
        blocks += [f"Quality, Fashion-MNIST 60,000 x 784, {args.fashion_partitions} partitions, {args.queries} "
                   f"queries, {args.repeats} builds per trainer, median (min-max):",
                   quality_part(args, workdir, "fashion", base, queries, args.fashion_partitions)]
    title = "training: Lance's k-means on the driver against the distributed trainer"
    print(append_section(args.markdown, title, blocks))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
