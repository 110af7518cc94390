"""What the benchmarks run in their own subprocesses: one index build (or one scan) per process.

Each contender writes a JSON result to `--out`: its own timings, and its peak memory as the
kernel counted it (`getrusage`). The parent (`runs.py`) times the whole process from outside
and samples the RSS of the process tree, so that startup costs (imports, JVM, Ray) are seen.

    python bench/contenders.py single    --out R.json --uri D --index-type IVF_RQ --num-bits 1 ...
    python bench/contenders.py lance-ray --out R.json --uri D --ray-workers 2 ...
    python bench/contenders.py scan      --out R.json --uri D
    python bench/contenders.py job       --out R.json -- build --uri D ... (= python -m spark_lance_index build ...)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import shutil
import sys
import tempfile
import time

# Quiet Lance's Rust logs (one warning per empty partition otherwise); set before lance loads.
os.environ.setdefault("LANCE_LOG", "error")


def _vm_hwm_bytes() -> int:
    """This process's peak RSS since its exec. Not ru_maxrss: on Linux that survives fork+exec,
    so a child started by a large harness reports the harness's peak (measured: every
    contender read 2,080 MiB, the generator's size)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rusage_bytes() -> dict:
    """Peak RSS of this process (VmHWM) and of its largest reaped child, in bytes."""
    return {
        "ru_maxrss_self": _vm_hwm_bytes(),
        "ru_maxrss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def index_kwargs(args) -> dict:
    """The type-specific parameters, given only when they apply (as the job does)."""
    if args.index_type == "IVF_RQ":
        return {"num_bits": args.num_bits} if args.num_bits else {}
    if args.index_type in ("IVF_PQ", "IVF_HNSW_PQ"):
        return {"num_sub_vectors": args.num_sub_vectors}
    return {}


SCALAR_TYPES = ("BTREE", "BITMAP", "LABEL_LIST", "ZONEMAP", "BLOOMFILTER", "NGRAM", "INVERTED")


def run_single(args) -> dict:
    """One `ds.create_index` (a scalar type: `create_scalar_index`) in this process: Lance's own
    one-node build."""
    import lance

    ds = lance.dataset(args.uri)
    started = time.perf_counter()
    if args.index_type in SCALAR_TYPES:
        ds.create_scalar_index(args.column, args.index_type, name=args.index_name)
        return {"index_seconds": time.perf_counter() - started}
    given = {k: v for k, v in (("metric", args.metric), ("num_partitions", args.num_partitions),
                               ("sample_rate", args.sample_rate), ("max_iters", args.max_iters)) if v is not None}
    ds.create_index(args.column, index_type=args.index_type, name=args.index_name, **given, **index_kwargs(args))
    return {"index_seconds": time.perf_counter() - started}


def run_lance_ray(args) -> dict:
    """lance-ray's distributed `create_index` on a local Ray instance started here."""
    # No network on benchmark machines; Ray 2.60 also writes ~/.ray/auth_token unless disabled.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from lance_ray import create_index

    # A short private temp dir: Ray's socket paths must stay under 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")
    try:
        started = time.perf_counter()
        ray.init(num_cpus=args.ray_workers, include_dashboard=False, _temp_dir=ray_tmp,
                 log_to_driver=False)
        ray_start = time.perf_counter() - started
        started = time.perf_counter()
        if args.index_type in SCALAR_TYPES:
            from lance_ray import create_scalar_index

            create_scalar_index(args.uri, column=args.column, index_type=args.index_type, name=args.index_name,
                                replace=True, num_workers=args.ray_workers)
            index_seconds = time.perf_counter() - started
            ray.shutdown()
            return {"index_seconds": index_seconds, "ray_start_seconds": ray_start}
        # lance-ray takes num_bits through **kwargs; for IVF_PQ it means PQ code bits, so it is
        # passed only for IVF_RQ (index_kwargs) and PQ keeps its 8-bit default like the others.
        kwargs = index_kwargs(args)
        create_index(
            args.uri, column=args.column, index_type=args.index_type, name=args.index_name,
            replace=True, num_workers=args.ray_workers, metric=args.metric,
            num_partitions=args.num_partitions, sample_rate=args.sample_rate,
            max_iters=args.max_iters, **kwargs,
        )
        index_seconds = time.perf_counter() - started
        ray.shutdown()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return {"index_seconds": index_seconds, "ray_start_seconds": ray_start}


def run_scan(args) -> dict:
    """Read the vector column of every fragment once: the floor under any index build."""
    import lance

    ds = lance.dataset(args.uri)
    started = time.perf_counter()
    rows = sum(b.num_rows for b in ds.scanner(columns=[args.column]).to_batches())
    return {"scan_seconds": time.perf_counter() - started, "rows": rows}


def run_job(args) -> dict:
    """Exactly `python -m spark_lance_index <job args>`, in this process, with its exit code."""
    sys.argv = ["spark_lance_index", *args.job_args]
    started = time.perf_counter()
    try:
        runpy.run_module("spark_lance_index", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    result = {"job_exit_code": code, "in_process_seconds": time.perf_counter() - started}
    if code != 0:
        result["error"] = f"the job exited with code {code}"
    return result


RUNNERS = {"single": run_single, "lance-ray": run_lance_ray, "scan": run_scan, "job": run_job}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=sorted(RUNNERS))
    p.add_argument("--out", required=True, help="where to write the JSON result")
    p.add_argument("--uri")
    p.add_argument("--column", default="vector")
    p.add_argument("--index-name", default="vector_idx")
    p.add_argument("--index-type", default="IVF_RQ")
    p.add_argument("--metric", help="default: Lance's (l2)")
    p.add_argument("--num-partitions", type=int)
    p.add_argument("--num-bits", type=int, help="IVF_RQ; default: Lance's")
    p.add_argument("--num-sub-vectors", type=int)
    p.add_argument("--sample-rate", type=int, help="default: Lance's (256)")
    p.add_argument("--max-iters", type=int, help="default: Lance's (50)")
    p.add_argument("--ray-workers", type=int, default=2)
    p.epilog = "For `job`, everything after `--` is passed to python -m spark_lance_index."
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split at `--` by hand: argparse cannot take a second positional list after options.
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.job_args = argv[cut + 1:]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = RUNNERS[args.kind](args)
    except Exception as e:  # the parent records the failure and goes on with the others
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result = {"error": f"{type(e).__name__}: {first[:300]}"}
    result.update(rusage_bytes())
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
