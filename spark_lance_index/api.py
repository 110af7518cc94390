"""The Python API, for notebooks and drivers of your own: `import spark_lance_index as sli`.

    run = sli.build("s3://bucket/table.lance", "embedding", spark=spark, index_type="IVF_PQ",
                    storage_options={"region": "us-east-1"})
    run.report["recall"]          # the --report document
    sli.status("s3://bucket/table.lance", storage_options={...})

Each call takes the CLI's flags as keywords (`--num-sub-vectors 8` is `num_sub_vectors=8`,
`--config FILE` is `config="FILE"`), uses the session it is given (or the active one) and never
stops a session it did not create. A failure raises its own exception type (`InputError`: bad
input, the dataset untouched). The job logs through Python `logging` ("spark_lance_index"); when
nothing is configured to show it, a call shows INFO and above on stderr while it runs.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from .config import SETTING_NAMES, BuildConfig, check_types, load_toml, make_config
from .errors import InputError, RecallTooLowError
from .index_status import IndexStatus, index_status
from .report import JobResult
from .update_all import TableUpdate

__all__ = ["build", "update", "update_all", "verify", "status", "discard", "Run"]

log = logging.getLogger("spark_lance_index")
LOG_FORMAT = "%(asctime)s spark-lance-index %(levelname)s %(message)s"


@dataclass(frozen=True)
class Run:
    """What one build, update or verify did: `.report` is the `--report` document, `.summary`
    the lines the CLI prints, `.result` the typed fields behind both."""

    result: JobResult

    @property
    def report(self) -> dict[str, Any]:
        return self.result.to_report()

    @property
    def summary(self) -> str:
        return self.result.summary()

    @property
    def outcome(self) -> str:
        return self.result.outcome

    @property
    def committed_version(self) -> Optional[int]:
        return self.result.committed_version

    def __str__(self) -> str:
        return self.summary

    def __repr__(self) -> str:
        r = self.result
        return (f"Run(outcome={r.outcome!r}, index={r.index_name!r}, uri={r.uri!r}, "
                f"committed_version={r.committed_version!r})")


def build(uri: str | os.PathLike[str], column: str, *, spark: Any = None, print_summary: bool = True,
          **options: Any) -> Run:
    """Build and commit an index on `column` (`spark-lance-index build`). Options: the build
    flags as keywords, e.g. `index_type="IVF_PQ", num_partitions=1024, replace=True`."""
    config = _config("build", os.fspath(uri), column, options)
    return _run(config, spark, print_summary)


def update(uri: str | os.PathLike[str], column: Optional[str] = None, *, spark: Any = None,
           print_summary: bool = True, **options: Any) -> Run:
    """Extend an index with the rows it does not cover yet, with its own model
    (`spark-lance-index update`). `column` may be left out when `index_name` names the index or
    the table has one vector index."""
    config = _config("update", os.fspath(uri), column, options)
    return _run(config, spark, print_summary)


def update_all(uri: str | os.PathLike[str], *, spark: Any = None, print_summary: bool = True,
               **options: Any) -> TableUpdate:
    """Update every index of the table, one after another in one Spark session
    (`spark-lance-index update --uri U`). An index update cannot extend is skipped with its reason
    (`TableUpdate.indexes`, `exit_code` 4), one that fails is named with its error, and the
    others still update. The options are `update`'s, for each index (no column or index_name)."""
    from .update_all import update_every_index

    uri = os.fspath(uri)
    for taken in ("column", "index_name"):
        if taken in options:
            raise InputError(f"{taken}= picks one index: call update() for that")
    base = _config("update", uri, "any", {**options, "index_name": "any"})
    with job_logging(base.runtime.verbose):
        table = update_every_index(base, lambda column, name: _config("update", uri, column, {
            **options, "index_name": name}), spark)
    if print_summary:
        print(table.summary())
    return table


def verify(uri: str | os.PathLike[str], column: str, *, spark: Any = None, print_summary: bool = True,
           **options: Any) -> Run:
    """Measure recall@k of the committed index against exact search (`spark-lance-index verify`)."""
    from .checks import run_verify

    config = _config("verify", os.fspath(uri), column, options)
    with job_logging(config.runtime.verbose):
        result = run_verify(config, spark)
    return _finish(result, print_summary)


def status(uri: str | os.PathLike[str], *, storage_options: Optional[Mapping[str, str]] = None,
           version: Optional[int] = None) -> list[IndexStatus]:
    """Every index of the table (`spark-lance-index status`): segments, indexed and unindexed
    rows, size, model, and whether `update` can extend it. No Spark."""
    return index_status(os.fspath(uri), storage_options, version)


def discard(uri: str | os.PathLike[str], column: str, **options: Any) -> list[str]:
    """Remove the state of this index's jobs and the segment directories they wrote that no
    version uses (`spark-lance-index discard`). -> the lines the CLI prints. No Spark."""
    from .discard_jobs import run_discard

    config = _config("discard", os.fspath(uri), column, options)
    with job_logging(config.runtime.verbose):
        return run_discard(config)


def _config(command: str, uri: str, column: Optional[str], options: dict[str, Any]) -> BuildConfig:
    """The BuildConfig of a call: `config=FILE` underneath, the keywords over it, as the CLI."""
    from .cli import command_settings

    options = dict(options)
    config_file = options.pop("config", None)
    file_values = load_toml(config_file) if config_file else {}

    takes = command_settings(command) - {"uri", "column", "config"}
    unknown = sorted(set(options) - takes)
    if unknown:
        if unknown[0] in SETTING_NAMES:  # a setting of another command: update takes the index's own
            raise InputError(f"{unknown[0]}= does not apply to {command}"
                             + (": it extends the index with its own type, metric and model" if command == "update"
                                else ""))
        close = difflib.get_close_matches(unknown[0], sorted(takes), n=1)
        raise InputError(f"unknown option {unknown[0]}= for {command}"
                         + (f": did you mean {close[0]}=?" if close else ""))
    check_types(options, "=")
    options.update(uri=uri, column=column, mode="update" if command == "update" else "build")
    if command == "update":
        from .update_job import fill_update_target

        fill_update_target(file_values, options)
    return make_config(file_values, options)  # a single nprobes, refine factor or stop word is a list of one


def _run(config: BuildConfig, spark: Any, print_summary: bool) -> Run:
    from .pipeline import run

    with job_logging(config.runtime.verbose):
        try:
            result = run(config, spark)
        except RecallTooLowError as e:
            if print_summary and isinstance(e.result, JobResult):
                print(e.result.summary())
            raise
    return _finish(result, print_summary)


def _finish(result: JobResult, print_summary: bool) -> Run:
    if print_summary:
        print(result.summary())
    return Run(result)


@contextlib.contextmanager
def job_logging(verbose: bool = False) -> Iterator[None]:
    """While a call runs: the job's log shown (on stderr) unless logging is configured to show
    it already, Lance's Rust log quiet unless verbose, and no fork-safety warning."""
    os.environ.setdefault("LANCE_LOG", "info" if verbose else "error")  # read when lance is first imported
    handler: Optional[logging.Handler] = None
    old_level = log.level
    if not log.hasHandlers():  # logging is not set up at all (a notebook's default): show INFO on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
    elif verbose:  # set up by the user: their levels stand, unless they ask for the debug log
        log.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="lance is not fork-safe")
            yield
    finally:
        if handler is not None:
            log.removeHandler(handler)
        log.setLevel(old_level)
