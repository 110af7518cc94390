"""How to query the index just built: the cheapest nprobes x refine_factor that reaches a recall.

After the commit the job already has exact ground truth for its check queries (computed on the
executors). `sweep` queries the committed index on a small grid of settings, measuring recall@k
against that truth and the latency of each query, and `recommend` picks the setting with the
lowest median latency that reaches the target. No Spark here: the index is queried from the
driver, one query at a time, the way a single client would query it.

The grid stops early. For each refine factor (none first), nprobes climbs a ladder until the
target is reached (more probes only cost more) or recall stops growing; a larger refine factor
costs more per probe, so it is only tried below the nprobes a smaller one needed. A time budget
bounds the whole sweep.

A setting picked because it reached the target on some queries reaches it on new ones less
often: picking the first of many settings that clears a bar on 100 queries picks the lucky ones
(measured: "0.946 <- recommended" for a target of 0.94 read 0.922 on 1,000 fresh queries). So
the queries are split in two halves at random. The sweep chooses on one half, and only where
the target plus a margin is reached (1.645 standard errors of that half's figure: one-sided
95%); the other half takes no part in the choice, and its figure, with a 95% interval, is the
one reported for the recommendation (said plainly when it falls short of the target). A standard
error comes from the spread of per-query recall, and is never taken as smaller than that of k x
queries independent neighbours (else 50 perfect queries would claim an interval of width 0).
Queries drawn from the table do not count their own row (exact_search.py). With --query-file, the
queries are the user's own.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from .exact_search import QueryRun, RecallSetting, query_index
from .index_types import INDEX_TYPES
from .recall_advice import what_limits_recall

NPROBES_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
# Refine factors tried: re-ranking with exact distances helps quantized codes; IVF_FLAT and
# IVF_HNSW_FLAT rank by exact distance already (IndexType.exact_ranking), so none for them.
REFINE_LADDER = (None, 5, 10, 20, 50)
log = logging.getLogger("spark_lance_index")

WARMUP_QUERIES = 3  # the first queries of a setting open files and fill caches
SWEEP_SECONDS = 300.0  # the whole sweep stops after this long, and says so
PLATEAU = 0.0025  # a row stops when two steps gained less than 2 x this recall together
LATENCY_TIE = 0.15  # median latencies this close count as equal


@dataclass(frozen=True)
class QuerySetting:
    """One measured setting: recall@k against exact search (over all queries, and over each
    half), and per-query latency."""

    nprobes: int
    refine_factor: Optional[int]
    recall: float
    latency_ms_p50: float
    latency_ms_p95: float
    select_recall: Optional[float] = None  # the half the choice is made on (None: no split)
    select_margin: float = 0.0  # Z_ONE_SIDED standard errors of select_recall
    confirm_recall: Optional[float] = None  # the other half, which confirms the choice
    confirm_interval: Optional[tuple[float, float]] = None  # 95% of confirm_recall

    def reaches(self, target: float) -> bool:
        """Whether the choosing half clears the target by the margin."""
        chosen_on = self.recall if self.select_recall is None else self.select_recall
        return chosen_on - self.select_margin >= target

    def confirmed(self, target: float) -> bool:
        """Whether the half the choice did not see reaches the target too (reported, not chosen on)."""
        return self.confirm_recall is None or self.confirm_recall >= target

    @property
    def reported_recall(self) -> float:
        """The figure to quote: the confirming half's, which the choice did not see."""
        return self.recall if self.confirm_recall is None else self.confirm_recall

    def describe(self, k: int) -> str:
        refine = f"refine_factor={self.refine_factor}" if self.refine_factor else "no refine"
        figure = f"recall@{k} {self.recall:.3f}"
        if self.select_recall is not None and self.confirm_recall is not None:
            figure += f" (choosing half {self.select_recall:.3f}, confirming half {self.confirm_recall:.3f})"
        return (f"nprobes={self.nprobes}, {refine}: {figure}, {self.latency_ms_p50:.1f} ms p50, "
                f"{self.latency_ms_p95:.1f} ms p95")


@dataclass(frozen=True)
class QuerySettings:
    """The sweep's outcome: every measured setting, and the recommended one (None: none reached)."""

    target: float
    k: int
    queries: int
    where: str
    grid: tuple[QuerySetting, ...]
    recommended: Optional[QuerySetting]
    num_partitions: int = 0  # of the index (the sweep may stop before it probes them all)

    @property
    def best(self) -> QuerySetting:
        return max(self.grid, key=lambda s: (s.recall, -s.latency_ms_p50))

    def advice(self, index_type: str) -> Optional[str]:
        """None when a setting reaches the target, else what to change."""
        if self.recommended is not None:
            return None
        if not self.grid:
            return "no setting was measured"
        partitions = self.num_partitions or max(s.nprobes for s in self.grid)
        return f"the best was {self.best.describe(self.k)}; {what_limits_recall(self.grid, partitions, index_type)}"


def nprobes_ladder(num_partitions: int) -> list[int]:
    """nprobes to try: the ladder below the partition count, then every partition."""
    return [n for n in NPROBES_LADDER if n < num_partitions] + [num_partitions]


def where_queries_ran() -> str:
    threads = os.environ.get("LANCE_CPU_THREADS")
    pool = f"LANCE_CPU_THREADS={threads}" if threads else f"Lance's default thread pool, {os.cpu_count()} cores"
    return f"the driver ({socket.gethostname()}), one query at a time from one thread ({pool})"


Z_ONE_SIDED = 1.645  # the choosing half must clear the target by this many standard errors
Z_INTERVAL = 1.96  # the confirming half's figure is reported with this 95% interval
SPLIT_SEED = 20


def halves(n: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The queries split at random into a choosing and a confirming half (None under 4)."""
    if n < 4:
        return None
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def standard_error(run: QueryRun, part: Union[slice, np.ndarray], recall: float) -> float:
    """Of recall over the queries `part`: from the spread of per-query recall, and never below
    that of k x queries independent neighbours at that recall (clipped a neighbour from 0 and 1)."""
    n = len(run.hits[part]) * run.k
    p = min(max(recall, 1 / n), 1 - 1 / n)
    return max(run.standard_error(part), float(np.sqrt(p * (1 - p) / n)))


def measure_setting(ds: Any, column: str, queries: np.ndarray, truth: np.ndarray, nprobes: int,
                    refine_factor: Optional[int], own: Optional[np.ndarray] = None) -> QuerySetting:
    """Query the index once per query at this setting (after a short warm-up, not timed), and
    measure recall over all queries and over each half."""
    run = query_index(ds, column, queries, truth, RecallSetting(nprobes, refine_factor), warmup=WARMUP_QUERIES,
                      own=own)
    ms = run.seconds * 1000
    split, extra = halves(len(queries)), dict[str, Any]()
    if split is not None:
        choose, confirm = split
        s, c = run.figure(choose).recall, run.figure(confirm).recall
        c_err = standard_error(run, confirm, c)
        extra = dict(select_recall=s, select_margin=Z_ONE_SIDED * standard_error(run, choose, s),
                     confirm_recall=c,
                     confirm_interval=(max(0.0, c - Z_INTERVAL * c_err), min(1.0, c + Z_INTERVAL * c_err)))
    return QuerySetting(nprobes, refine_factor, run.figure().recall,
                        float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), **extra)


def sweep(ds: Any, column: str, queries: np.ndarray, truth: np.ndarray, index_type: str, num_partitions: int,
          target: float, budget_seconds: float = SWEEP_SECONDS,
          measure: Optional[Callable[[int, Optional[int]], QuerySetting]] = None,
          own: Optional[np.ndarray] = None) -> QuerySettings:
    """Measure the grid (stopping early, see the module docstring) and recommend a setting.

    A row of the grid (one refine factor) stops at the first nprobes that reaches the target,
    at the nprobes a cheaper refine already needed (a costlier refine only pays below it), or
    when two steps in a row gained less than PLATEAU recall (more probes will not get there).
    The whole sweep stops after `budget_seconds`. `measure(nprobes, refine)` defaults to
    querying `ds` (tests pass a plain function of the two)."""
    if measure is None:
        def measure(nprobes: int, refine: Optional[int]) -> QuerySetting:
            return measure_setting(ds, column, queries, truth, nprobes, refine, own)
    started, stopped = time.perf_counter(), None
    grid: list[QuerySetting] = []
    ceiling = num_partitions + 1
    for refine in (None,) if INDEX_TYPES[index_type].exact_ranking else REFINE_LADDER:
        row: list[QuerySetting] = []
        for nprobes in nprobes_ladder(num_partitions):
            if nprobes >= ceiling:
                break
            if time.perf_counter() - started > budget_seconds:
                stopped = f"the sweep stopped after its {budget_seconds:.0f} s budget"
                break
            setting = measure(nprobes, refine)
            log.info("query settings: %s", setting.describe(truth.shape[1]))
            row.append(setting)
            if setting.reaches(target):
                ceiling = nprobes
                break
            if len(row) >= 3 and row[-1].recall - row[-3].recall < 2 * PLATEAU:
                break
        grid.extend(row)
        if stopped:
            break
    where = where_queries_ran() + (f"; {stopped}" if stopped else "")
    return QuerySettings(target, truth.shape[1], len(queries), where, tuple(grid), recommend(grid, target),
                         num_partitions)


def recommend(grid: Sequence[QuerySetting], target: float) -> Optional[QuerySetting]:
    """Among the settings whose choosing half reaches `target` by the margin, the cheapest: the
    fewest probes, then the smallest refine, of those whose median latency is within LATENCY_TIE
    of the fastest. One pass of timings on a busy driver differs by 10% and more from the next, so
    settings that close are taken as equally fast and the one that does less work wins. The other
    half does not choose: its figure is the one reported."""
    reaching = [s for s in grid if s.reaches(target)]
    if not reaching:
        return None
    fastest = min(s.latency_ms_p50 for s in reaching)
    close = [s for s in reaching if s.latency_ms_p50 <= fastest * (1 + LATENCY_TIE)]
    return min(close, key=lambda s: (s.nprobes, s.refine_factor or 0, s.latency_ms_p50))
