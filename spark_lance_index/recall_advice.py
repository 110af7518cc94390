"""What to do about a low recall figure, read off what was measured: whether recall rises with
nprobes (probing is the limit: query with more) or stays flat (the encoding is the limit: refine,
or rebuild with a finer code), and whether nprobes already covers every partition.

Plain functions over the measured figures (anything with `nprobes`, `refine_factor`, `recall`);
no Spark, no Lance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol

from .index_types import INDEX_TYPES

LOW_RECALL = 0.8  # recall@k under this at every measured setting is flagged in the summary
RISES = 0.05  # recall gained from the lowest to the highest nprobes measured that counts as rising
WIDER_PROBES = 4  # a low figure is measured again at this many times the largest nprobes


class Measured(Protocol):
    """A measured query setting (exact_search.RecallFigure, query_settings.QuerySetting)."""

    @property
    def nprobes(self) -> int: ...

    @property
    def refine_factor(self) -> Optional[int]: ...

    @property
    def recall(self) -> float: ...


def is_low(figures: Sequence[Measured], minimum: Optional[float] = None) -> bool:
    """Under LOW_RECALL (or the run's --min-recall) at every measured setting."""
    return bool(figures) and max(f.recall for f in figures) < max(LOW_RECALL, minimum or 0.0)


def wider_nprobes(figures: Sequence[Measured], num_partitions: int) -> Optional[int]:
    """The nprobes to measure once more at, to tell probing from encoding (None: nothing wider)."""
    widest = max(f.nprobes for f in figures)
    wider = min(num_partitions, WIDER_PROBES * widest)
    return wider if wider > widest else None


def what_limits_recall(figures: Sequence[Measured], num_partitions: int, index_type: str) -> str:
    """One sentence: what limits recall, and what to change."""
    plain = sorted((f for f in figures if not f.refine_factor), key=lambda f: f.nprobes)
    refined = max((f for f in figures if f.refine_factor), key=lambda f: f.recall, default=None)
    if len({f.nprobes for f in plain}) >= 2:
        # the last step measured: what more probes still bring (a sweep stops once a row flattens)
        high = plain[-1]
        low = next(f for f in reversed(plain) if f.nprobes < high.nprobes)
        every = " (every partition)" if high.nprobes >= num_partitions else f" of {num_partitions} partitions"
        if high.recall - low.recall >= RISES:
            return (f"recall rises with nprobes ({low.recall:.3f} at {low.nprobes}, {high.recall:.3f} at "
                    f"{high.nprobes}{every}): query with a larger nprobes (--target-recall finds the cheapest "
                    "that reaches a target)")
        probing = (f"recall is flat from nprobes {low.nprobes} to {high.nprobes}{every} ({low.recall:.3f}, "
                   f"{high.recall:.3f}), so probing more partitions will not help")
    elif plain and plain[-1].nprobes >= num_partitions:
        probing = f"nprobes {plain[-1].nprobes} already searches all {num_partitions} partitions"
    else:
        probing = "only one nprobes was measured"
    return f"{probing}; {_encoding_tips(index_type, refined)}"


def _encoding_tips(index_type: str, refined: Optional[Measured]) -> str:
    """What raises recall when the encoding, not probing, limits it."""
    kind = INDEX_TYPES.get(index_type)
    if kind is not None and kind.exact_ranking and not kind.graph:
        return ("an IVF_FLAT index that searches every partition it needs is exact search, so a low figure "
                "means the queries or the metric (--metric) do not match how the vectors are compared")
    tips = []
    if kind is not None and kind.graph:
        tips.append("query with a larger ef (Lance's nearest={..., \"ef\": ...}: more graph candidates)")
    if kind is None or not kind.exact_ranking:  # a type that ranks by exact distance gains nothing from refine
        if refined is None:
            tips.append("query with a refine_factor (e.g. 10: re-rank by exact distance)")
        elif refined.recall >= LOW_RECALL:
            tips.append(f"query with refine_factor {refined.refine_factor} ({refined.recall:.3f})")
        else:
            tips.append(f"query with a refine_factor above {refined.refine_factor}")
    tips += [f"rebuild with {t}" for t in (kind.rebuild_tips() if kind is not None else [])]
    limit = "the graph search or the encoding" if kind is not None and kind.graph else "the encoding"
    return f"{limit} is the limit: " + ", or ".join(tips)
