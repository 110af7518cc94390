"""The lines printed at the end of a run (the CLI's, and `sli.build(...)`'s), rendered from the
report document alone: whatever the summary says, the `--report` JSON holds too."""

from __future__ import annotations

from typing import Any


def plural(n: int, word: str, words: str = "") -> str:
    """'1 segment', '2 segments'; `words` for an irregular plural."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {words or word + 's'}"


def render_summary(r: dict[str, Any]) -> str:
    """The summary: what was committed, the checks, the recall, the advice, the time."""
    lines: list[str] = []
    for section in (_outcome, _counts, _update, _notes, _checks, _recall, _query_settings, _time):
        lines += section(r)
    return "\n".join(lines)


def _describe_index(idx: dict[str, Any]) -> str:
    kind = f"{idx['type']}, {idx['metric']}, {idx['num_partitions']} partitions" if idx["metric"] else idx["type"]
    if idx["num_bits"]:
        kind += f", {idx['num_bits']} bit"
    if idx["num_sub_vectors"]:
        kind += f", {idx['num_sub_vectors']} sub-vectors"
    if idx.get("options"):
        kind += ", " + ", ".join(f"{k}={v}" for k, v in sorted(idx["options"].items()))
    if idx.get("hnsw"):
        kind += ", HNSW m={m} ef_construction={ef_construction} max_level={max_level}".format(**idx["hnsw"])
    return kind


def _outcome(r: dict[str, Any]) -> list[str]:
    idx, ds, u = r["index"], r["dataset"], r.get("update")
    lines = []
    if r["outcome"] in ("failed", "refused"):
        lines.append(f"index {idx['name']!r} on {ds['uri']}: {r['outcome']}: {r['error']}")
    if u and r["outcome"] == "succeeded" and not u["new_rows"]:
        lines.append(f"index {idx['name']!r} on {ds['uri']} is up to date at version {ds['pinned_version']}: "
                     "every fragment is indexed; nothing committed")
    if r["counts"]["rows_indexed"] is not None and ds["committed_version"] is not None:
        # `verify` measures an index it did not build: no job, no tasks
        done = "measured" if r["job_id"] is None and r["counts"]["tasks"] is None else "committed"
        lines.append(f"index {idx['name']!r} ({_describe_index(idx)}) {done} on {ds['uri']} "
                     f"at version {ds['committed_version']}")
    return lines


def _counts(r: dict[str, Any]) -> list[str]:
    ds, c = r["dataset"], r["counts"]
    if c["rows_indexed"] is None or ds["committed_version"] is None:
        return []
    indexed = f"  rows indexed {c['rows_indexed']:,} in {plural(c['fragments_indexed'], 'fragment')}"
    removed = c["leftovers_removed"] or 0
    cleaned = (f"; cleanup removed {plural(removed, 'segment directory', 'segment directories')} "
               "of this job's that no version uses") if removed else ""
    if c.get("committed_by_earlier_run"):
        finished = "checks and cleanup" if c["tasks"] is not None else "cleanup"
        return [f"{indexed}, {plural(c['segments_committed'], 'segment')}: committed by an earlier run of this job, "
                f"which stopped before it finished; this run finished its {finished}{cleaned}"]
    if c["tasks"] is None:
        return [indexed]
    if c["segments"] == 1:
        segments = "1 segment"
    elif c["segments"] != c["segments_committed"]:
        segments = f"{plural(c['segments'], 'segment')} merged into {c['segments_committed']}"
    else:
        segments = f"{plural(c['segments_committed'], 'segment')} committed as built"
    return [f"{indexed} (pinned version {ds['pinned_version']}); {plural(c['tasks'], 'task')}, {segments}",
            f"  segments built {c['segments_built']}, reused from an earlier run {c['segments_reused']}{cleaned}"]


def _update(r: dict[str, Any]) -> list[str]:
    u, ds = r.get("update"), r["dataset"]
    lines = []
    if u and u["new_rows"] and ds["committed_version"] is not None:
        lines.append(f"  update: {u['new_rows']:,} new rows in {plural(u['new_fragments'], 'fragment')}, encoded "
                     f"with the index's model; {plural(u['segments_reencoded'], 'small segment')} "
                     f"({u['rows_reencoded']:,} rows) re-encoded with them, {u['segments_kept']} kept")
    drift = (u or {}).get("drift")
    if drift:
        shift = "too few new rows to tell" if drift["partition_shift"] is None else f"{drift['partition_shift']:.3f}"
        line = f"  drift: partition shift {shift}"
        if drift["recall_new_rows"] is not None:
            line += (f"; recall@k {drift['recall_new_rows']:.3f} on new rows, {drift['recall_old_rows']:.3f} on "
                     f"older rows ({drift['recall_setting']})")
        lines.append(line)
        if drift["advice"]:
            lines.append(f"  REBUILD ADVISED: {drift['advice']}")
    return lines


def _notes(r: dict[str, Any]) -> list[str]:
    c = r["counts"]
    lines = []
    if c.get("rows_deleted_since_pinned"):
        lines.append(f"  rows deleted after the pinned version: {c['rows_deleted_since_pinned']:,} "
                     "(the index covers their fragments; Lance skips deleted rows)")
    if r.get("leftovers_unaccounted"):
        lines.append(f"  left in _indices, not provably this job's: {', '.join(r['leftovers_unaccounted'][:8])}")
    if c["rows_unindexed"]:
        lines.append(f"  not yet indexed: {c['rows_unindexed']:,} rows in "
                     f"{plural(c['fragments_unindexed'], 'fragment')} added after the pinned version "
                     "(run `spark-lance-index update`, or Lance's optimize_indices)")
    if any(r["artifacts"].values()):
        lines.append("  artifacts: " + ", ".join(f"{k} {v[:12]}" for k, v in sorted(r["artifacts"].items()) if v))
    return lines


def _checks(r: dict[str, Any]) -> list[str]:
    check = r.get("index_check")
    if not check:
        return []
    lines = []
    if check["filters"]:
        exact = sum(c["ok"] and c["same_rows"] is True for c in check["filters"])
        counted = sum(c["ok"] and c["same_rows"] is None for c in check["filters"])
        first = check["filters"][0]
        lines.append(f"  filter check: {exact} of {len(check['filters'])} filters on sampled values return through the "
                     "index exactly the rows a scan without it returns"
                     + (f", {counted} more the same number of rows (row ids not compared)" if counted else "")
                     + f", e.g. {first['filter']} ({first['rows_index']:,} rows)")
    if check.get("unchecked"):
        lines.append(f"  filter check: NOT CHECKED: {check['unchecked']}")
    if check["search"]:
        s = check["search"]
        lines.append(f"  full-text check: {s['found']} of {s['queries']} sampled rows are in the top {s['k']} of a "
                     "query of their own text")
    return lines


def _recall(r: dict[str, Any]) -> list[str]:
    lines = []
    for f in r["recall"]:
        refine = f"refine_factor {f['refine_factor']}" if f["refine_factor"] else "no refine"
        lines.append(f"  recall@{f['k']} {f['recall']:.3f} at nprobes {f['nprobes']}, {refine} "
                     f"({f['queries']} queries, exact search on the executors)")
    if any(f["refine_factor"] for f in r["recall"]) and any(not f["refine_factor"] for f in r["recall"]):
        lines.append("  (a refine_factor R re-ranks R x k candidates by exact distance, reading their vectors: "
                     "higher recall for more work per query)")
    if r.get("recall_diagnosis"):
        lines.append(f"  LOW RECALL: {r['recall_diagnosis']}")
    if r["outcome"] == "recall_below_minimum":
        lines.append(f"  RECALL BELOW --min-recall {r['min_recall']}: {r['error']}")
    return lines


def _query_settings(r: dict[str, Any]) -> list[str]:
    q = r.get("query_settings")
    if not q:
        return []
    split = bool(q["grid"]) and q["grid"][0].get("confirm_recall") is not None
    lines = [f"  query settings for recall@{q['k']} >= {q['target']} ({q['queries']} queries"
             + (", a setting chosen on half of them and confirmed on the other "
                f"{q['queries'] - q['queries'] // 2}" if split else "") + f"; on {q['where']}):",
             "    nprobes  refine  recall" + ("  choose  confirm" if split else "") + "  p50 ms  p95 ms"]
    for s in q["grid"]:
        mark = "  <- recommended" if s == q["recommended"] else ""
        halves = f"  {s['select_recall']:.3f}   {s['confirm_recall']:.3f}" if split else ""
        lines.append(f"    {s['nprobes']:>7}  {s['refine_factor'] or '-':>6}  {s['recall']:.3f}{halves}  "
                     f"{s['latency_ms_p50']:>6.2f}  {s['latency_ms_p95']:>6.2f}{mark}")
    s = q["recommended"]
    if not s:
        return [*lines, f"  NO SETTING REACHES recall@{q['k']} {q['target']}: {q['advice']}"]
    refine = f"refine_factor={s['refine_factor']}" if s["refine_factor"] else "no refine"
    if split:
        low, high = s["confirm_interval"]
        figure = (f"recall@{q['k']} {s['confirm_recall']:.3f} on the queries it was not chosen with "
                  f"(95% interval {low:.3f}-{high:.3f})")
    else:
        figure = f"recall@{q['k']} {s['recall']:.3f}"
    lines.append(f"  query with nprobes={s['nprobes']}, {refine}: {figure}, {s['latency_ms_p50']:.1f} ms p50")
    if split and s["confirm_recall"] < q["target"]:
        lines.append(f"  NOT CONFIRMED: on the queries it was not chosen with it reads under {q['target']}: "
                     f"{q['queries'] // 2} queries a half are few; give more --verify-queries (or a "
                     "--query-file of more queries) for a surer choice")
    return lines


def _time(r: dict[str, Any]) -> list[str]:
    """The phases' wall seconds in one line; Lance's trainer on the driver while Spark started is
    part of `train`, and the build tasks' summed seconds (work, not wall time) a line of their own."""
    t = dict(r["timings_seconds"])
    if not t:
        return []
    early = t.pop("train (background)", None)
    tasks, assigning = t.pop("build tasks (sum)", None), t.pop("build tasks assigning (sum)", None)
    parts = []
    for k, v in t.items():
        parts.append(f"{k} {v:.1f}s" + (f" (+{early:.1f}s on the driver while Spark started)"
                                         if k == "train" and early and early >= 0.05 else ""))
    lines = ["  time: " + ", ".join(parts)]
    if tasks:
        share = f", {assigning:.1f}s ({assigning / tasks:.0%}) of it assigning rows to partitions" if assigning else ""
        lines.append(f"  build tasks: {tasks:.1f}s of task time in all{share}")
    return lines
