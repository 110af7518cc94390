"""The update's segment policy over many updates, simulated with the policy itself (no data).

`update.SegmentPolicy` decides which segments an update re-encodes from segment sizes alone, so
its long-run behaviour can be played out exactly: for each scenario, start from the given
segments, apply N updates of a fixed size, and report the segment count, how many segments
are under half of --max-segment-rows, and the rows encoded per new row. Prints a markdown
section and appends it to docs/benchmarks.md.

    .venv/bin/python bench/segment_policy.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import DEFAULT_MARKDOWN, append_section, environment_lines, load_average, markdown_table

from spark_lance_index.update_plan import CommittedSegment, SegmentPolicy

# (name, starting segment sizes, rows per update, updates)
SCENARIOS = (
    ("10M index, 1,000 updates of 100k", [10_000_000], 100_000, 1000),
    ("1M index, 100 updates of 1% (10k)", [1_000_000], 10_000, 100),
    ("100M one-node segment, 100 updates of 1M", [100_000_000], 1_000_000, 100),
    ("20 segments of 2M (older layout), 50 updates of 10k", [2_000_000] * 20, 10_000, 50),
)


def play(start: list[int], rows: int, updates: int, policy: SegmentPolicy) -> dict:
    segments = [CommittedSegment(f"s{i}", (), n) for i, n in enumerate(start)]
    encoded = most = most_small = largest_update = 0
    for u in range(updates):
        again = policy.to_reencode(segments, rows)
        merged = rows + sum(s.num_rows for s in again)
        segments = [s for s in segments if s not in again] + [CommittedSegment(f"u{u}", (), merged)]
        encoded += merged
        largest_update = max(largest_update, merged)
        most = max(most, len(segments))
        most_small = max(most_small, sum(1 for s in segments if 2 * s.num_rows < policy.max_segment_rows))
    total = sum(start) + rows * updates
    return {"segments": len(segments), "most": most, "most_small": most_small,
            "fresh": -(-total // policy.max_segment_rows), "per_new": encoded / (rows * updates),
            "largest": largest_update, "total": total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-segment-rows", type=int, default=10_000_000)
    p.add_argument("--ratio", type=int, default=3)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    args = p.parse_args(argv)
    started_load = load_average()
    policy = SegmentPolicy(args.max_segment_rows, args.ratio)
    rows = []
    for name, start, size, updates in SCENARIOS:
        r = play(start, size, updates, policy)
        rows.append([name, f"{r['total']:,}", r["segments"], r["most"], r["most_small"], r["fresh"],
                     f"{r['per_new']:.2f}", f"{r['largest']:,}"])
    table = markdown_table(["scenario", "rows after", "segments after", "most segments", "most under max/2",
                            "a fresh build's segments", "rows encoded per new row", "largest update"], rows)
    title = f"segment policy: --max-segment-rows {args.max_segment_rows:,}, --segment-ratio {args.ratio}, simulated"
    print(append_section(args.markdown, title, ["\n".join(environment_lines(started_load)), table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
