"""Run contenders side by side on one dataset, repeat them, and turn the runs into tables.

Used by compare.py and fashion_mnist.py (the job alone: scale.py). Every build runs in its own
subprocess (`contenders.py`) on its own copy of the dataset; the parent times the process,
samples its tree's RSS, reads the job's JSON report, then measures recall of the committed
index itself.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from common import (
    CONTENDERS,
    POLL_SECONDS,
    Measured,
    append_section,
    child_env,
    copy_dataset,
    fmt_mib,
    fmt_ratio,
    fmt_s,
    index_segments,
    markdown_table,
    measure_recall,
    median,
    recall_header,
    remove_dataset,
    run_measured,
)

INDEX_NAME = "vector_idx"  # the job's default name for column "vector"; every contender uses it
BUILD_PHASES = ("plan", "train", "build", "merge", "commit", "verify", "cleanup")
# the build tasks' seconds added up over tasks, and of them the GEMM assignment's (the rest is Lance's)
TASK_SUMS = ("build tasks (sum)", "build tasks assigning (sum)")
ALL_PHASES = ("inspect", "spark start", "preflight", *BUILD_PHASES, "check", "recall")  # check, recall: after the build
KIND_NAMES = {"single": "single-process create_index", "job": "spark job",
              "job-lance-assign": "spark job, Lance's assignment", "lance-ray": "lance-ray"}
# The job's variants: extra flags each passes (issue 21: the GEMM assignment against Lance's own).
JOB_KINDS = {"job": (), "job-lance-assign": ("--assignment", "lance")}


@dataclass(frozen=True)
class IndexSpec:
    """One index configuration every contender builds with the same parameters."""

    label: str
    index_type: str
    num_bits: Optional[int] = None  # IVF_RQ
    num_sub_vectors: Optional[int] = None  # IVF_PQ, IVF_HNSW_PQ


# The other index types by their short names; PQ types take --pq-sub-vectors.
OTHER_TYPES = {"flat": "IVF_FLAT", "sq": "IVF_SQ", "hnsw_flat": "IVF_HNSW_FLAT", "hnsw_sq": "IVF_HNSW_SQ",
               "hnsw_pq": "IVF_HNSW_PQ"}


def parse_specs(text: str, pq_sub_vectors: int) -> list[IndexSpec]:
    """`rq1,rq4,pq,sq,hnsw_sq` -> specs. rqN is IVF_RQ with N bits; pq (and hnsw_pq) take the given
    sub-vectors; flat, sq, hnsw_flat, hnsw_sq are IVF_FLAT, IVF_SQ, IVF_HNSW_FLAT, IVF_HNSW_SQ."""
    specs = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "rq":  # Lance's default bits
            specs.append(IndexSpec("IVF_RQ default bits", "IVF_RQ"))
        elif item.startswith("rq") and item[2:].isdigit():
            bits = int(item[2:])
            specs.append(IndexSpec(f"IVF_RQ {bits} bit{'s' if bits > 1 else ''}", "IVF_RQ", num_bits=bits))
        elif item in ("pq", "hnsw_pq"):
            index_type = "IVF_PQ" if item == "pq" else "IVF_HNSW_PQ"
            specs.append(IndexSpec(f"{index_type} {pq_sub_vectors} sub-vectors", index_type,
                                   num_sub_vectors=pq_sub_vectors))
        elif item in OTHER_TYPES:
            specs.append(IndexSpec(OTHER_TYPES[item], OTHER_TYPES[item]))
        else:
            raise SystemExit(f"unknown index {item!r}: use rq (default bits), rq<bits> (rq1, rq4), pq, {', '.join(OTHER_TYPES)}")
    return specs


@dataclass(frozen=True)
class Settings:
    """What every contender shares: the index parameters and how processes are run."""

    num_partitions: int
    sample_rate: int
    max_iters: int
    metric: str = "l2"
    master: str = "local[2]"
    ray_workers: int = 2
    timeout: float = 3600.0
    python: str = sys.executable  # interpreter of every contender (and of the Spark executors)
    job_flags: tuple = ()  # more flags for the job alone (e.g. --rows-per-task)
    # Each contender's own defaults: only the index type (and PQ's sub-vectors, which Lance
    # requires) is given, and the job runs its recall check as it does by default.
    defaults: bool = False

    def describe(self, kinds: Sequence[str]) -> str:
        """A markdown bullet: the shared parameters, and how the contenders that ran were run."""
        how = []
        if "job" in kinds:
            how.append(f"spark master `{self.master}`" + (f" with `{' '.join(self.job_flags)}`" if self.job_flags else ""))
        if "lance-ray" in kinds:
            how.append(f"lance-ray on a local Ray with {self.ray_workers} CPUs and {self.ray_workers} workers")
        if self.defaults:
            return ("- each contender at its defaults (index type only; the job with its default recall check)"
                    + ("; " + ", ".join(how) if how else ""))
        return (f"- index parameters shared by all: num_partitions {self.num_partitions}, "
                f"sample_rate {self.sample_rate}, max_iters {self.max_iters}, metric {self.metric}"
                + ("; " + ", ".join(how) if how else ""))


def index_flags(spec: IndexSpec, s: Settings) -> list[str]:
    """The same flags for the job's CLI and for contenders.py (they share the names)."""
    if s.defaults:
        return ["--index-type", spec.index_type] + (["--num-sub-vectors", str(spec.num_sub_vectors)]
                                                    if spec.num_sub_vectors else [])
    flags = ["--index-type", spec.index_type, "--metric", s.metric,
             "--num-partitions", str(s.num_partitions), "--sample-rate", str(s.sample_rate),
             "--max-iters", str(s.max_iters)]
    if spec.num_bits:
        flags += ["--num-bits", str(spec.num_bits)]
    if spec.num_sub_vectors:
        flags += ["--num-sub-vectors", str(spec.num_sub_vectors)]
    return flags


def job_args(uri: Path, flags: Sequence[str], master: str, report: Path, verify: bool = False) -> list[str]:
    """`python -m spark_lance_index` arguments: a JSON report, and no recall pass unless `verify`."""
    return ["build", "--uri", str(uri), "--column", "vector", *flags, "--master", master,
            *([] if verify else ["--verify-queries", "0"]), "--report", str(report), "--progress-interval", "3600"]


def contender_command(kind: str, uri: Path, spec: IndexSpec, s: Settings, out: Path, report: Path) -> list[str]:
    base = [s.python, str(CONTENDERS), "job" if kind in JOB_KINDS else kind, "--out", str(out)]
    if kind in JOB_KINDS:
        flags = [*index_flags(spec, s), *s.job_flags, *JOB_KINDS[kind]]
        return [*base, "--", *job_args(uri, flags, s.master, report, s.defaults)]
    extra = ["--ray-workers", str(s.ray_workers)] if kind == "lance-ray" else []
    return [*base, "--uri", str(uri), *index_flags(spec, s), *extra]


@dataclass
class Run:
    """One measured build (or scan) by one contender."""

    kind: str
    measured: Measured
    report: dict = field(default_factory=dict)  # the job's --report document

    @property
    def error(self) -> Optional[str]:
        if self.report and self.report.get("outcome") not in (None, "succeeded"):
            return f"job {self.report['outcome']}: {self.report.get('error')}"
        return self.measured.error

    @property
    def phases(self) -> dict:
        return self.report.get("timings_seconds", {})

    @property
    def index_seconds(self) -> Optional[float]:
        """The index work alone: the job's build phases, or the create_index call."""
        if self.kind in JOB_KINDS:
            return sum(self.phases.get(p, 0.0) for p in BUILD_PHASES) if self.phases else None
        return self.measured.result.get("index_seconds")

    @property
    def driver_rss(self) -> Optional[int]:
        """Peak RSS of the driver Python process since its exec (VmHWM)."""
        return self.measured.result.get("ru_maxrss_self")


def measured_run(kind: str, cmd: Sequence[str], tag: str, workdir: Path, s: Settings,
                 report: Optional[Path] = None) -> Run:
    """Run one contender command in `workdir`, and read its result and (job) report."""
    m = run_measured(cmd, workdir / f"{tag}.json", workdir / f"{tag}.log", cwd=workdir,
                     env=child_env(s.python), timeout=s.timeout)
    doc = json.loads(report.read_text()) if report and report.exists() else {}
    return Run(kind, m, doc)


def build_once(kind: str, source: Path, spec: IndexSpec, s: Settings, workdir: Path, tag: str) -> tuple[Run, Path]:
    """Copy the dataset, build one index on the copy in a subprocess. -> (run, the copy)"""
    copy = copy_dataset(source, workdir / f"{tag}.lance")
    report = workdir / f"{tag}.report.json"
    cmd = contender_command(kind, copy, spec, s, workdir / f"{tag}.json", report)
    return measured_run(kind, cmd, tag, workdir, s, report if kind in JOB_KINDS else None), copy


@dataclass
class Outcome:
    """All repeats of one contender on one index configuration."""

    spec: IndexSpec
    kind: str
    runs: list[Run] = field(default_factory=list)
    # one {(nprobes, refine): recall} per good build: repeats differ by their random training,
    # and the spread shows how much of a difference between contenders is that noise
    recalls: list = field(default_factory=list)
    latencies: list = field(default_factory=list)  # one {(nprobes, refine): median ms per query} per build
    segments: Optional[int] = None

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if not r.error]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.runs if r.error]

    def median_wall(self) -> Optional[float]:
        return median([r.measured.wall_seconds for r in self.good])

    def median_index(self) -> Optional[float]:
        return median([r.index_seconds for r in self.good])

    def median_phase(self, name: str) -> Optional[float]:
        return median([r.phases.get(name) for r in self.good])

    def peak(self, getter: Callable[[Run], Optional[int]]) -> Optional[int]:
        values = [getter(r) for r in self.good if getter(r)]
        return max(values) if values else None


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def record(outcome: Outcome, run: Run, copy: Path, queries: np.ndarray, truth: np.ndarray) -> None:
    """Keep the run and measure the recall of the index it built."""
    outcome.runs.append(run)
    if not run.error:
        recalls, latencies = measure_recall(copy, queries, truth)
        outcome.recalls.append(recalls)
        outcome.latencies.append(latencies)
        outcome.segments = index_segments(copy, INDEX_NAME)


def run_matrix(source: Path, queries: np.ndarray, truth: np.ndarray, specs: Sequence[IndexSpec],
               kinds: Sequence[str], s: Settings, repeats: int, workdir: Path) -> list[Outcome]:
    """Every contender builds every index `repeats` times; recall of every build.

    Contenders take turns within each repeat, so a change in the machine's load during the
    run falls on all of them rather than on whichever ran last."""
    outcomes = {(spec, kind): Outcome(spec, kind) for spec in specs for kind in kinds}
    for spec in specs:
        for rep in range(repeats):
            for kind in kinds:
                tag = f"{kind}-{spec.index_type}-{spec.num_bits or spec.num_sub_vectors or 0}-{rep}"
                run, copy = build_once(kind, source, spec, s, workdir, tag)
                record(outcomes[(spec, kind)], run, copy, queries, truth)
                remove_dataset(copy)
                say(f"[{spec.label}] {KIND_NAMES[kind]} {rep + 1}/{repeats}: "
                    + (f"FAILED {run.error}" if run.error else
                       f"process {run.measured.wall_seconds:.2f} s, index {fmt_s(run.index_seconds)} s, "
                       f"driver {fmt_mib(run.driver_rss)} MiB, tree {fmt_mib(run.measured.peak_tree_rss)} MiB"))
    return list(outcomes.values())


# --- tables ------------------------------------------------------------------------------


def time_memory_table(outcomes: Sequence[Outcome]) -> str:
    header = ["index", "contender", "process wall s", "index work s", "startup and rest s",
              "driver peak MiB", "JVM peak MiB", "process tree peak MiB", "segments", "runs ok"]
    rows = []
    for o in outcomes:
        wall, work = o.median_wall(), o.median_index()
        rest = wall - work if wall is not None and work is not None else None
        rows.append([o.spec.label, KIND_NAMES[o.kind], fmt_s(wall), fmt_s(work), fmt_s(rest),
                     fmt_mib(o.peak(lambda r: r.driver_rss)),
                     fmt_mib(o.peak(lambda r: r.measured.peak_by_name.get("java"))),
                     fmt_mib(o.peak(lambda r: r.measured.peak_tree_rss)),
                     o.segments if o.segments is not None else "-", f"{len(o.good)}/{len(o.runs)}"])
    return markdown_table(header, rows)


def ratio_table(outcomes: Sequence[Outcome]) -> str:
    """Ratios of medians from this run only (same machine state, same dataset): the job's
    process against each other contender's process, and its build phases against their
    create_index call."""
    by = {(o.spec, o.kind): o for o in outcomes}
    specs = list(dict.fromkeys(o.spec for o in outcomes))
    others = [k for k in ("single", "lance-ray") if any(o.kind == k for o in outcomes)]
    jobs = [k for k in JOB_KINDS if any(o.kind == k for o in outcomes)]
    header = ["index", "job"]
    for k in others:
        header += [f"job / {k} (process)", f"job build phases / {k} create_index"]
    rows = []
    for spec in specs:
        for kind in jobs:
            job = by.get((spec, kind))
            row = [spec.label, KIND_NAMES[kind]]
            for k in others:
                other = by[(spec, k)]
                row += [fmt_ratio(job and job.median_wall(), other.median_wall()),
                        fmt_ratio(job and job.median_index(), other.median_index())]
            rows.append(row)
    return markdown_table(header, rows)


def phase_table(outcomes: Sequence[Outcome]) -> str:
    """The job's own per-phase timings (median over repeats) from its JSON reports."""
    header = ["index", "job", *ALL_PHASES, "build phases", "job total", "process wall", *TASK_SUMS]
    rows = []
    for o in (o for o in outcomes if o.kind in JOB_KINDS):
        rows.append([o.spec.label, KIND_NAMES[o.kind], *(fmt_s(o.median_phase(p)) for p in ALL_PHASES),
                     fmt_s(o.median_index()), fmt_s(o.median_phase("total")), fmt_s(o.median_wall()),
                     *(fmt_s(o.median_phase(p)) for p in TASK_SUMS)])
    return markdown_table(header, rows)


def recall_table(outcomes: Sequence[Outcome]) -> str:
    """Median recall over the repeats, with [min-max] when the repeats differ."""
    rows = []
    for o in outcomes:
        cells = ["-"] * len(recall_header())
        if o.recalls:
            cells = []
            for key in o.recalls[0]:
                values = [r[key] for r in o.recalls]
                spread = f" [{min(values):.3f}-{max(values):.3f}]" if max(values) > min(values) else ""
                cells.append(f"{median(values):.3f}{spread}")
        rows.append([o.spec.label, KIND_NAMES[o.kind], *cells])
    return markdown_table(["index", "contender", *recall_header()], rows)


def latency_table(outcomes: Sequence[Outcome]) -> str:
    """Median milliseconds per query (one query at a time, one client thread), the median over
    builds: what each committed index costs to query, its segments included."""
    rows = []
    for o in outcomes:
        cells = ["-"] * len(recall_header())
        if o.latencies:
            cells = [f"{median([lat[key] for lat in o.latencies]):.2f}" for key in o.latencies[0]]
        rows.append([o.spec.label, KIND_NAMES[o.kind], o.segments if o.segments is not None else "-", *cells])
    return markdown_table(["index", "contender", "segments", *recall_header()], rows)


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    return [f"- {o.spec.label}, {KIND_NAMES[o.kind]}: {e}" for o in outcomes for e in o.errors]


COLUMN_NOTES = f"""Columns: *process wall* is the median over repeats of the whole subprocess, from
start to exit (imports, SparkSession or Ray start, the build, shutdown). *index work* is the
`create_index` call for single-process and lance-ray, and for the job the sum of its build
phases (plan, train, build, merge, commit, verify, cleanup) from its JSON report. *driver peak* is
the driver Python process's own peak RSS (`VmHWM`, which, unlike `ru_maxrss`, does not inherit the harness's peak across fork+exec); *JVM peak* and *process tree peak* (the largest
sum of RSS over the process and all its descendants: JVM, Python workers, Ray daemons) are
sampled with psutil every {POLL_SECONDS} s. Memory figures are the largest over repeats. *segments* is
the number of segments of the committed index."""


def publish(markdown: Path, title: str, blocks: Sequence[str], outcomes: Sequence[Outcome],
            workdir: Path, keep: bool) -> int:
    """Append the section and print it; keep the run's files only when asked or on failure.
    Returns the script's exit code: 1 if any build failed."""
    print(append_section(markdown, title, blocks))
    say(f"appended to {markdown}")
    if keep or failures(outcomes):
        say(f"logs and reports kept in {workdir}")
    else:
        shutil.rmtree(workdir)
    return 1 if failures(outcomes) else 0
