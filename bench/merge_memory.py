"""What a merge holds in memory, by segment size: the figure `--max-segment-rows` rests on.

For each size and type: a clustered dataset, segments built with shared artifacts (one per
fragment group, as the job's tasks do), then `merge_existing_index_segments` of all of them in a
fresh process that reports its peak RSS (VmHWM) before and after the merge. Also the size of the
merged segment's files. Prints a markdown section and appends it to docs/benchmarks.md.

    .venv-bench/bin/python bench/merge_memory.py                    # 1M and 10M x 128, IVF_RQ and IVF_PQ
    .venv-bench/bin/python bench/merge_memory.py --sizes 100000 --types IVF_RQ   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_MARKDOWN, append_section, environment_lines, load_average, markdown_table, write_clustered

os.environ.setdefault("LANCE_LOG", "error")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--types", default="IVF_RQ,IVF_PQ")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--partitions", type=int, default=1024)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def status(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmHWM: peak, VmRSS: now), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(spec: dict) -> dict:
    """Open the dataset, merge the given segments, report memory."""
    import pickle

    import lance
    from lance.dataset import Index  # noqa: F401  (the pickled segments are Index values)

    ds = lance.dataset(spec["uri"])
    segments = pickle.loads(Path(spec["segments"]).read_bytes())
    before_rss, before_hwm = status("VmRSS"), status("VmHWM")
    started = time.perf_counter()
    merged = ds.merge_existing_index_segments(segments)
    seconds = time.perf_counter() - started
    folder = Path(spec["uri"]) / "_indices" / str(merged.uuid)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"seconds": seconds, "rss_before": before_rss, "hwm_before": before_hwm, "hwm_after": status("VmHWM"),
            "merged_bytes": size}


def measure(rows: int, index_type: str, args, workdir: Path) -> dict:
    import pickle

    import lance
    from lance.lance import indices

    uri = workdir / f"d{rows}.lance"
    write_clustered(uri, rows, args.dim, args.segments, queries=0)
    ds = lance.dataset(str(uri))
    centroids = indices.train_ivf_model(ds._ds, "vector", args.dim, args.partitions, "l2", 64, 20, None)
    kwargs = {"ivf_centroids": centroids, "num_partitions": args.partitions}
    if index_type == "IVF_RQ":
        kwargs |= {"rabitq_model": indices.build_rq_model(args.dim, num_bits=1), "num_bits": 1}
    if index_type == "IVF_PQ":
        codebook = indices.train_pq_model(ds._ds, "vector", args.dim, 16, "l2", 64, 20, centroids, None)
        kwargs |= {"pq_codebook": codebook, "num_sub_vectors": 16}
    started = time.perf_counter()
    segments = [ds.create_index_uncommitted("vector", index_type, name="idx", fragment_ids=[f.fragment_id], **kwargs)
                for f in ds.get_fragments()]
    build = time.perf_counter() - started
    path = workdir / "segments.pkl"
    path.write_bytes(pickle.dumps(segments))
    spec = workdir / "spec.json"
    spec.write_text(json.dumps({"uri": str(uri), "segments": str(path)}))
    out = subprocess.run([sys.executable, __file__, "--child", str(spec)], capture_output=True, text=True)
    shutil.rmtree(uri)
    if out.returncode != 0:
        return {"error": out.stderr[-500:]}
    found = json.loads(out.stdout.strip().splitlines()[-1])
    found["build_seconds"] = build
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(Path(args.child).read_text()))))
        return 0
    started_load = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="bench-merge-memory-", dir="/tmp"))
    rows_out = []
    for rows in [int(x) for x in args.sizes.split(",")]:
        for index_type in args.types.split(","):
            got = measure(rows, index_type, args, workdir)
            print(rows, index_type, got, flush=True)
            if "error" in got:
                rows_out.append([f"{rows:,}", index_type, "-", "-", "-", "-", got["error"][:80]])
                continue
            grew = got["hwm_after"] - got["rss_before"]
            rows_out.append([f"{rows:,}", index_type, f"{got['seconds']:.2f}", f"{grew / 2**20:.0f}",
                             f"{grew / rows:.1f}", f"{got['merged_bytes'] / 2**20:.0f}",
                             f"{got['merged_bytes'] / rows:.1f}"])
    shutil.rmtree(workdir, ignore_errors=True)
    blocks = ["\n".join(environment_lines(started_load) + [
        f"- {args.segments} segments (one per fragment) built with shared artifacts ({args.partitions} partitions, "
        f"IVF_RQ 1 bit, IVF_PQ 16 sub-vectors), {args.dim}-d clustered float32; the merge runs in a fresh process",
        "- *peak growth*: the merge process's peak RSS (VmHWM) after the merge minus its RSS before it"]),
        markdown_table(["rows", "type", "merge s", "peak growth MiB", "peak growth B/row", "merged files MiB",
                        "merged files B/row"], rows_out)]
    print(append_section(args.markdown, "merge memory: what merging segments holds, by size", blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
