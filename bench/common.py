"""Shared pieces of the benchmarks: datasets, measured subprocesses, recall, the markdown log.

Nothing here holds a figure: every number the benchmarks print is measured when they run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Quiet Lance's Rust logs in this process (recall queries) and in every child it starts.
os.environ.setdefault("LANCE_LOG", "error")
# Index statistics otherwise warn that they leave the centroids out.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = REPO / "bench" / "contenders.py"
DEFAULT_MARKDOWN = REPO / "docs" / "benchmarks.md"
MARKDOWN_HEADER = """# Benchmarks

Every section below was appended by a script under `bench/` (see `bench/README.md`). Each
section gives the command that produced it, the date, the machine and the library versions;
no figure is typed in by hand. Timings on a shared machine drift: compare figures within one
section (the ratios are computed within one run), not across sections.
"""

POLL_SECONDS = 0.2  # how often the RSS of a measured process tree is sampled
MIB = 1024 * 1024
K = 10
NPROBES = (10, 20, 50)
REFINE_FACTORS = (0, 10)  # 0 = no refine


# --- the machine and the versions -------------------------------------------------------


def package_versions(names: Sequence[str] = ("pylance", "pyspark", "lance-ray", "ray", "numpy", "pyarrow")) -> dict:
    """Installed versions of the packages that decide the figures (None when absent)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "java not found"


def machine() -> dict:
    """Cores, memory, CPU, OS and load: what the figures depend on besides the code."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3,
        "cpu": cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java_version(),
    }


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def reproduce_command(argv: Optional[Sequence[str]] = None) -> str:
    """The command line that reproduces this run, relative to the repository when inside it."""
    argv = list(sys.argv if argv is None else argv)
    exe = Path(sys.executable)
    # keep the venv's bin/python path itself (resolving it would lose the venv)
    python = os.path.relpath(exe, REPO) if str(exe).startswith(str(REPO)) else str(exe)
    script = os.path.relpath(Path(argv[0]).resolve(), REPO)
    return f"cd {REPO} && " + shlex.join([python, script, *argv[1:]])


def environment_lines(started_load: str) -> list[str]:
    """Markdown bullets: date, command, machine, versions, load average at start and end."""
    m, v = machine(), package_versions()
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{reproduce_command()}`",
        f"- machine: {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gib']:.1f} GiB RAM, "
        f"{m['cpu']}; {m['os']}; Python {m['python']}; {m['java']}",
        f"- versions: {versions}",
        f"- load average (1/5/15 min) at start {started_load}, at end {load_average()}",
    ]


# --- markdown ----------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def append_section(path: Path, title: str, blocks: Sequence[str]) -> str:
    """Append `## title` and the blocks to the benchmark log (created with its header if
    missing). Returns the text appended."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(MARKDOWN_HEADER)
    text = f"\n## {title}\n\n" + "\n\n".join(b.rstrip("\n") for b in blocks) + "\n"
    with open(path, "a") as f:
        f.write(text)
    return text


def fmt_s(seconds: Optional[float], digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def fmt_mib(nbytes: Optional[float]) -> str:
    return "-" if not nbytes else f"{nbytes / MIB:,.0f}"


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- datasets ----------------------------------------------------------------------------


def default_num_partitions(rows: int) -> int:
    """Lance's (and the job's) default: rows / 8192, clamped to 1..4096."""
    return min(max(1, rows // 8192), 4096)


def write_vectors(path: Path, vectors: np.ndarray, fragments: int) -> None:
    """Write `id` (0..n-1, the row position) and `vector` float32 in `fragments` fragments."""
    import lance

    rows, dim = vectors.shape
    table = pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), dim),
    })
    if Path(path).exists():
        shutil.rmtree(path)
    lance.write_dataset(table, str(path), max_rows_per_file=-(-rows // fragments))


def write_clustered(path: Path, rows: int, dim: int, fragments: int, queries: int, seed: int = 0):
    """Clustered float32 vectors (the package's own generator) and held-out queries from the
    same distribution. Returns (vectors written, queries)."""
    from spark_lance_index.demo import clustered_vectors

    everything = clustered_vectors(rows + queries, dim, seed=seed)
    vectors, held_out = everything[:rows], everything[rows:]
    write_vectors(path, vectors, fragments)
    return vectors, held_out


def copy_dataset(source: Path, target: Path) -> Path:
    """A private copy of the dataset, so that contenders' indexes never meet."""
    remove_dataset(target)
    shutil.copytree(source, target)
    return target


def remove_dataset(path: Path) -> None:
    """Remove a dataset copy and the job state directories beside it."""
    for p in (Path(path), Path(f"{path}.index-jobs")):
        if p.exists():
            shutil.rmtree(p)


# --- measured subprocesses ---------------------------------------------------------------


@dataclass
class Measured:
    """One subprocess, measured from outside (wall, sampled RSS) and from inside (its JSON)."""

    wall_seconds: float
    returncode: int
    peak_root_rss: int  # sampled RSS of the process itself, bytes
    peak_tree_rss: int  # largest sum of RSS over the process and all its descendants, bytes
    peak_by_name: dict = field(default_factory=dict)  # largest RSS of one process, by name
    result: dict = field(default_factory=dict)  # what the process wrote to its --out file
    log: str = ""  # where its stdout and stderr went

    @property
    def error(self) -> Optional[str]:
        if "error" in self.result:
            return self.result["error"]
        if self.returncode != 0:
            return f"exit code {self.returncode}, see {self.log}"
        return None


def sample_tree(pid: int, peaks: dict) -> None:
    """Add one RSS sample of the process tree under `pid` to `peaks` (updated in place)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    total = 0
    for p in procs:
        try:
            rss, name = p.memory_info().rss, p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        peaks["by_name"][name] = max(peaks["by_name"].get(name, 0), rss)
        if p.pid == pid:
            peaks["root"] = max(peaks["root"], rss)
    peaks["tree"] = max(peaks["tree"], total)


def run_measured(cmd: Sequence[str], out_json: Path, log_path: Path, *, cwd: Path,
                 env: Optional[dict] = None, timeout: float = 3600) -> Measured:
    """Run `cmd` to completion, timing it and sampling its tree's RSS every POLL_SECONDS.

    The process gets its own session so that on timeout it and everything it started (a JVM,
    Ray's daemons) are killed together, by that one process group id."""
    peaks = {"root": 0, "tree": 0, "by_name": {}}
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join([str(c) for c in cmd]) + "\n")
        log.flush()
        started = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            sample_tree(proc.pid, peaks)
            try:
                proc.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if time.perf_counter() - started > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
        wall = time.perf_counter() - started
    result = {}
    if Path(out_json).exists():
        result = json.loads(Path(out_json).read_text())
    elif time.perf_counter() - started > timeout:
        result = {"error": f"killed after the {timeout:.0f} s timeout"}
    return Measured(wall, proc.returncode, peaks["root"], peaks["tree"], peaks["by_name"], result, str(log_path))


def child_env(python: str) -> dict:
    """The environment of every contender: Spark executors run the same Python as the driver."""
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = python
    env["PYSPARK_DRIVER_PYTHON"] = python
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # else Spark warns about the hostname
    return env


# --- recall ------------------------------------------------------------------------------


def measure_recall(uri: Path, queries: np.ndarray, truth: np.ndarray,
                   nprobes: Sequence[int] = NPROBES, refine_factors: Sequence[int] = REFINE_FACTORS,
                   column: str = "vector") -> dict:
    """(recall@k, median ms per query) of the dataset's index at each (nprobes, refine_factor),
    ids against `truth`; queries one at a time from this thread, after one untimed pass."""
    import time

    import lance

    from spark_lance_index.testing import ann_topk, recall_at_k

    ds = lance.dataset(str(uri))
    k = truth.shape[1]
    recalls, latencies = {}, {}
    for n in nprobes:
        for r in refine_factors:
            ann_topk(ds, column, queries[:5], k, n, r or None)  # warm: open files, fill caches
            seconds = []
            found = []
            for q in queries:
                started = time.perf_counter()
                found += ann_topk(ds, column, q[None, :], k, n, r or None)
                seconds.append(time.perf_counter() - started)
            recalls[(n, r)] = recall_at_k(truth, found)
            latencies[(n, r)] = 1000 * float(np.median(seconds))
    return recalls, latencies


def recall_header(nprobes: Sequence[int] = NPROBES, refine_factors: Sequence[int] = REFINE_FACTORS) -> list[str]:
    return [f"np {n}" + (f" rf {r}" if r else "") for n in nprobes for r in refine_factors]


def index_segments(uri: Path, name: str) -> Optional[int]:
    """How many segments the committed index has (lance-ray commits one per worker)."""
    import lance

    try:
        return lance.dataset(str(uri)).stats.index_stats(name).get("num_indices")
    except Exception:
        return None
