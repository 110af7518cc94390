"""The job's configuration: one typed value built from defaults, a TOML file and flags.

Precedence is defaults < `--config FILE` < command-line flags. `conf/defaults.toml` documents
the defaults below; a test keeps the two in agreement.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

from .errors import InputError
from .index_types import (
    DEFAULT_HNSW_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    DEFAULT_MAX_ITERS,
    DEFAULT_SAMPLE_RATE,
    INDEX_TYPES,
    MIN_HNSW_M,
    TEXT_OPTION_TYPES,
    TEXT_OPTIONS,
)
from .store_errors import refuse_unwritable_place

METRICS = ("l2", "cosine", "dot")
RQ_NUM_BITS = range(1, 10)  # what Lance's IVF_RQ accepts: "num_bits must be in 1..=9"


@dataclass(frozen=True)
class DatasetSettings:
    """Which data: the dataset, the version to pin, how to reach its store, where job state lives."""

    uri: str = ""
    version: Optional[int] = None  # pin this dataset version instead of the latest
    storage_options: Mapping[str, str] = field(default_factory=dict)
    job_dir: Optional[str] = None  # job state for resume; default "<uri>.index-jobs/<job id>"

    def validate(self) -> None:
        if not self.uri:
            raise InputError("--uri is required: the Lance dataset to index")
        if self.job_dir:  # the dataset's URI is checked as it opens
            refuse_unwritable_place("--job-dir", self.job_dir)
        if self.version is not None and self.version < 1:
            raise InputError(f"--version {self.version} is not a dataset version (they start at 1)")


@dataclass(frozen=True)
class IndexSpec:
    """Which index: its column, type, name and metric, and the parameters of its type (read by
    the plan, the trainer and the segment builds)."""

    column: str = ""
    index_type: str = "IVF_RQ"
    index_name: Optional[str] = None  # default: "<column>_idx", as Lance names it
    metric: str = "l2"
    num_partitions: Optional[int] = None  # default: one-node Lance's for the type (index_types.py)
    num_bits: Optional[int] = None  # IVF_RQ bits per dimension; default 5, as one-node Lance
    num_sub_vectors: Optional[int] = None  # IVF_PQ, IVF_HNSW_PQ; default dim/16 (or dim/8)
    m: Optional[int] = None  # IVF_HNSW_*: graph edges per node; default 20, as one-node Lance
    ef_construction: Optional[int] = None  # IVF_HNSW_*: candidate list while building; default 150
    max_level: Optional[int] = None  # IVF_HNSW_*: graph levels; default 7
    # INVERTED (full-text) options, passed to Lance's create_scalar_index as they are: the named
    # flags (--with-position, ..., TEXT_OPTIONS) and any other (--fts-option KEY=VALUE), one mapping.
    text_options: Mapping[str, Any] = field(default_factory=dict)
    replace: bool = False  # an index of the same name is replaced

    @property
    def name(self) -> str:
        """The index name the job commits under."""
        return self.index_name or f"{self.column}_idx"

    def validate(self) -> None:
        if not self.column:
            raise InputError("--column is required: the vector column to index")
        if self.index_type not in INDEX_TYPES:
            raise InputError(f"unknown index type {self.index_type!r}: use one of {', '.join(INDEX_TYPES)}")
        if self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}: use one of {', '.join(METRICS)}")

    def validate_values(self) -> None:
        """The type's parameters within what Lance accepts (after the flags of other types)."""
        if self.num_bits is not None and self.num_bits not in RQ_NUM_BITS:
            raise InputError(f"--num-bits {self.num_bits} is outside what Lance's IVF_RQ accepts: use 1 to 9")
        if self.m is not None and self.m < MIN_HNSW_M:
            raise InputError(f"--m {self.m} is below what Lance's HNSW accepts (at least {MIN_HNSW_M}, "
                             "to avoid severely fragmented graphs; its default is 20)")
        _positive("--ef-construction", self.ef_construction)
        ef, m = self.ef_construction or DEFAULT_HNSW_EF_CONSTRUCTION, self.m or DEFAULT_HNSW_M
        if (self.m is not None or self.ef_construction is not None) and ef < m:
            raise InputError(f"--ef-construction {ef}{'' if self.ef_construction else ' (the default)'} is below "
                             f"--m {m}: Lance's HNSW needs ef_construction >= m; give --ef-construction {m} or more")
        if self.max_level is not None and not 1 <= self.max_level <= 65535:
            raise InputError(f"--max-level {self.max_level} is outside what Lance's HNSW accepts: use 1 to "
                             "65535 (its default is 7)")
        _positive("--num-partitions", self.num_partitions)
        _positive("--num-sub-vectors", self.num_sub_vectors)


@dataclass(frozen=True)
class Sizing:
    """How the work is cut: rows per build task, rows per merged segment, what a merge may hold,
    and update's segment policy (read by the plan and the merge)."""

    rows_per_task: Optional[int] = None  # default: ~512 MiB of vectors, and >= 2 tasks per core
    fragments_per_task: Optional[int] = None
    max_segment_rows: Optional[int] = None  # merged segment size; default: what a merge holds in merge_memory
    merge_memory: int = 4 * 1024**3  # bytes one merge task may hold (plan.default_max_segment_rows)
    segment_ratio: int = 3  # update: a small segment is re-encoded while it has < this x the rows merged so far

    def validate(self) -> None:
        _positive("--rows-per-task", self.rows_per_task)
        _positive("--fragments-per-task", self.fragments_per_task)
        _positive("--max-segment-rows", self.max_segment_rows)
        _positive("--merge-memory", self.merge_memory)
        _positive("--segment-ratio", self.segment_ratio)
        if self.rows_per_task and self.fragments_per_task:
            raise InputError("give --rows-per-task or --fragments-per-task, not both")


@dataclass(frozen=True)
class Training:
    """How the model is trained: the sample, the trainer, and how rows are assigned to partitions."""

    sample_rate: int = DEFAULT_SAMPLE_RATE  # training rows per partition, as in Lance's create_index
    max_sample_rows: int = 1_048_576  # cap on the training sample's rows (4096 x 256)
    max_sample_bytes: int = 1 << 30  # and on its bytes: 1 GiB is 2M rows at 128-d, 349k at 768-d
    trainer: str = "auto"  # lance (Lance's k-means on the driver), distributed (on the executors), auto
    assignment: str = "gemm"  # rows to partitions: gemm (exact, a GEMM in each task) or lance (Lance's own)
    max_iters: int = DEFAULT_MAX_ITERS

    def validate(self) -> None:
        _positive("--sample-rate", self.sample_rate)
        _positive("--max-sample-rows", self.max_sample_rows)
        _positive("--max-sample-bytes", self.max_sample_bytes)
        if self.trainer not in TRAINERS:
            raise InputError(f"unknown trainer {self.trainer!r}: use one of {', '.join(TRAINERS)}")
        if self.assignment not in ASSIGNMENTS:
            raise InputError(f"unknown assignment {self.assignment!r}: use one of {', '.join(ASSIGNMENTS)}")
        _positive("--max-iters", self.max_iters)


@dataclass(frozen=True)
class Checks:
    """After the commit: recall@k of the index on sampled (or given) queries against exact
    search, at each query setting; the scalar and full-text checks use `verify_queries` too."""

    verify_queries: int = 100  # 0 skips the check
    query_file: Optional[str] = None  # .npy of query vectors instead of sampled rows
    nprobes: tuple[int, ...] = (20,)
    refine_factor: tuple[int, ...] = ()  # 0 = no refine; () = by type: 0 and 10 for IVF_RQ and IVF_PQ
    recall_k: int = 10
    min_recall: Optional[float] = None  # no setting reaches it: exit code 3, after the commit
    target_recall: Optional[float] = None  # sweep query settings for the cheapest that reaches it

    def validate(self) -> None:
        if self.query_file:
            refuse_unwritable_place("--query-file", self.query_file)
        if self.verify_queries < 0:
            raise InputError(f"--verify-queries must be 0 (skip) or more, got {self.verify_queries}")
        _positive("--recall-k", self.recall_k)
        if not self.nprobes:
            raise InputError("--nprobes needs at least one value (the default is 20)")
        for n in self.nprobes:
            _positive("--nprobes", n)
        if any(r < 0 for r in self.refine_factor):
            raise InputError("--refine-factor values must be 0 (none) or more")
        if self.min_recall is not None and not 0 <= self.min_recall <= 1:
            raise InputError(f"--min-recall must be between 0 and 1, got {self.min_recall}")
        for flag, value in (("--min-recall", self.min_recall), ("--target-recall", self.target_recall)):
            if value is not None and not self.verify_queries and not self.query_file:
                raise InputError(
                    f"{flag} needs a recall check, and --verify-queries 0 with no --query-file "
                    f"skips it: give --verify-queries N (or --query-file), or drop {flag}"
                )
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise InputError(f"--target-recall must be above 0 and at most 1, got {self.target_recall}")


@dataclass(frozen=True)
class Runtime:
    """How the run runs: build or update, the Spark master, logging, progress and the report."""

    mode: str = "build"  # "update": extend the committed index with the rows it does not cover
    master: Optional[str] = None
    app_name: str = "spark-lance-index"
    verbose: bool = False
    report: Optional[str] = None  # JSON report path (local or object store)
    progress_interval: float = 30.0  # seconds between progress lines outside a terminal

    def validate(self) -> None:
        if self.report:
            refuse_unwritable_place("--report", self.report)
        if self.mode not in ("build", "update"):
            raise InputError(f"unknown mode {self.mode!r}: build or update")


@dataclass(frozen=True)
class BuildConfig:
    """Everything one run needs, in groups each owned by the phases that read it. Frozen: every
    phase sees the same values. Made from flat settings (a file, flags, keywords) by `of`."""

    dataset: DatasetSettings
    index: IndexSpec
    sizing: Sizing = field(default_factory=Sizing)
    training: Training = field(default_factory=Training)
    checks: Checks = field(default_factory=Checks)
    runtime: Runtime = field(default_factory=Runtime)

    @classmethod
    def of(cls, **settings: Any) -> BuildConfig:
        """A config from flat settings (`uri=..., rows_per_task=...`), unchecked (`validate`);
        TypeError for a name no group has."""
        grouped: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for key, value in settings.items():
            if key not in FIELD_GROUP:
                raise TypeError(f"unknown setting {key!r}")
            grouped[FIELD_GROUP[key]][key] = value
        return cls(**{g: GROUPS[g](**values) for g, values in grouped.items()})

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (what a file, a flag or the report calls it)."""
        return {f.name: getattr(getattr(self, g), f.name) for g, kind in GROUPS.items()
                for f in dataclasses.fields(kind)}

    def with_settings(self, **settings: Any) -> BuildConfig:
        """This config with the flat settings given changed."""
        return BuildConfig.of(**{**self.flat(), **settings})

    def validate(self) -> None:
        """Check the parameters that do not need the dataset. Raises InputError."""
        self.dataset.validate()
        self.index.validate()
        self.runtime.validate()
        self._check_type_flags()
        self.index.validate_values()
        self.sizing.validate()
        self.training.validate()
        self.checks.validate()

    def _check_type_flags(self) -> None:
        """A flag of another index type is refused, not ignored: one-node Lance ignores
        `num_bits` on IVF_SQ (its codes are always 8-bit), HNSW flags on IVF types and tokenizer
        options on other types, and a user who passed them meant something the index will not
        have. A scalar or text index takes none of the vector flags."""
        if self.runtime.mode == "update":
            return  # the index's own settings apply; cli.py offers none of these flags
        spec = self.index
        kind = INDEX_TYPES[spec.index_type]
        given = {"--num-bits": spec.num_bits, "--num-sub-vectors": spec.num_sub_vectors, "--m": spec.m,
                 "--ef-construction": spec.ef_construction, "--max-level": spec.max_level,
                 **{text_flag(o): True for o in spec.text_options}}
        for flag, value in given.items():
            if value is not None and flag not in kind.flags:
                users = [t.name for t in INDEX_TYPES.values() if flag in t.flags]
                raise InputError(f"{flag} applies to {', '.join(users)}, not to {spec.index_type}: drop it, "
                                 "or choose one of those types")
        if not kind.is_vector:
            values, defaults = self.flat(), BuildConfig.of().flat()
            vector_only = [f"--{name.replace('_', '-')}" for name in VECTOR_ONLY if values[name] != defaults[name]]
            if vector_only:
                raise InputError(f"{', '.join(vector_only)} {'applies' if len(vector_only) == 1 else 'apply'} to "
                                 f"vector indexes, not to {spec.index_type}: "
                                 f"drop {'it' if len(vector_only) == 1 else 'them'}")


GROUPS: dict[str, type] = {"dataset": DatasetSettings, "index": IndexSpec, "sizing": Sizing, "training": Training,
                           "checks": Checks, "runtime": Runtime}
FIELD_GROUP = {f.name: g for g, kind in GROUPS.items() for f in dataclasses.fields(kind)}


def text_flag(option: str) -> str:
    """The flag that gives a text option: its own (--with-position), or --fts-option."""
    return "--" + option.replace("_", "-") if option in TEXT_OPTIONS else "--fts-option"


def _positive(flag: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise InputError(f"{flag} must be a positive integer, got {value}")


TRAINERS = ("auto", "lance", "distributed")
ASSIGNMENTS = ("gemm", "lance")
FIELD_NAMES = set(FIELD_GROUP)
# what a file, a flag or a keyword may set: the fields, and the text options they fold into one
SETTING_NAMES = FIELD_NAMES | set(TEXT_OPTIONS) | {"fts_options"}
FIELD_TYPES = {**{f.name: str(f.type) for kind in GROUPS.values() for f in dataclasses.fields(kind)},
               **TEXT_OPTION_TYPES,
               "fts_options": "Mapping[str, Any]"}
# Settings that mean something only for a vector index (a scalar or text index refuses them when
# they differ from their default).
VECTOR_ONLY = ("metric", "num_partitions", "sample_rate", "max_sample_rows", "max_sample_bytes", "trainer",
               "assignment",
               "max_iters", "query_file",
               "nprobes", "refine_factor", "recall_k", "min_recall", "target_recall")


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file into BuildConfig keywords (dashes in keys are allowed)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not valid TOML: {e}") from None
    return _normalise_keys(raw, source=path)


def _normalise_keys(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in SETTING_NAMES:
            raise InputError(f"unknown setting {key!r} in {source}")
        out[name] = value
    check_types(out, f" in {source}")
    for name in ("storage_options", "fts_options", "text_options"):
        if name in out:
            out[name] = dict(out[name])
    return out


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "Mapping[str, str]": ("a table of strings", lambda v: isinstance(v, Mapping)
                          and all(isinstance(x, str) for x in v.values())),
    "Mapping[str, Any]": ("a table", lambda v: isinstance(v, Mapping)),
}
_SIZES = ("merge_memory", "max_sample_bytes")  # bytes, or Spark's "16g"
_LISTS = {"nprobes": "int", "refine_factor": "int", "custom_stop_words": "str"}  # a list, or one value


def check_types(values: Mapping[str, Any], where: str) -> None:
    """Each setting of the type its field holds: `num_partitions = "16"` in a file is one line
    that says so, not a TypeError from deep inside the job."""
    for key, value in values.items():
        if value is None or key not in FIELD_TYPES:
            continue
        hint = FIELD_TYPES[key]
        if hint.startswith("Optional["):
            hint = hint.removeprefix("Optional[").removesuffix("]")
        if key in _SIZES and isinstance(value, str):
            continue
        if key in _LISTS:
            name, ok = _KINDS[_LISTS[key]]
            items = value if isinstance(value, (list, tuple)) else [value]
            if not all(ok(v) for v in items):
                raise InputError(f"{key}{where} must be {name} or a list of them, got {value!r}")
            continue
        if hint in _KINDS:
            name, ok = _KINDS[hint]
            if not ok(value):
                raise InputError(f"{key}{where} must be {name}, got {value!r}")


def make_config(file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> BuildConfig:
    """Merge file values and flags (flags win; None means "not given") into a checked config."""
    merged: dict[str, Any] = dict(file_values)
    for key, value in flag_values.items():
        if value is None:
            continue
        if key in ("storage_options", "fts_options", "text_options"):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    for key in ("uri", "column"):
        merged.setdefault(key, "")
    _fold_text_options(merged)
    for key in ("merge_memory", "max_sample_bytes"):  # sizes: bytes, or Spark's "16g" in a file too
        if isinstance(merged.get(key), str):
            from .resources import size_in_bytes

            try:
                merged[key] = size_in_bytes(merged[key], key.replace("_", "-"))
            except ValueError as e:
                raise InputError(str(e)) from None
    for key in ("nprobes", "refine_factor"):  # TOML lists, or a single number
        if key in merged and not isinstance(merged[key], (list, tuple)):
            merged[key] = (merged[key],)
        if key in merged:
            merged[key] = tuple(merged[key])
    for key, case in (("index_type", str.upper), ("metric", str.lower)):
        if isinstance(merged.get(key), str):
            merged[key] = case(merged[key])
    try:
        config = BuildConfig.of(**merged)
    except TypeError as e:  # a wrong key reached us from code rather than a file
        raise InputError(str(e)) from None
    config.validate()
    return config


def _fold_text_options(merged: dict[str, Any]) -> None:
    """The named text options and --fts-option's into the one mapping Lance is given (a named
    option wins over the same key given through --fts-option)."""
    named = {k: merged.pop(k) for k in TEXT_OPTIONS if k in merged and merged[k] is not None}
    if isinstance(named.get("custom_stop_words"), (tuple, str)):
        words = named["custom_stop_words"]
        named["custom_stop_words"] = [words] if isinstance(words, str) else list(words)
    merged["text_options"] = {**merged.pop("fts_options", {}), **merged.get("text_options", {}), **named}


def parse_fts_options(pairs: Optional[list[str]]) -> Optional[dict[str, Any]]:
    """Repeated `--fts-option KEY=VALUE` into Lance keyword arguments; a VALUE that reads as JSON
    (true, 128, ["a", "b"]) is passed as that value, anything else as a string."""
    if not pairs:
        return None
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--fts-option wants KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_storage_options(pairs: Optional[list[str]]) -> Optional[dict[str, str]]:
    """Turn repeated `KEY=VALUE` flags into a dict."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--storage-option wants KEY=VALUE, got {pair.split('=')[0]!r}...")
        out[key] = value
    return out
