"""Command line: `spark-lance-index build|update|verify|demo|doctor ...`, parsed into one
BuildConfig, then run()."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, Optional

from . import interrupts
from .config import INDEX_TYPES, METRICS, BuildConfig, load_toml, make_config, parse_fts_options, parse_storage_options
from .errors import JobError, RecallTooLowError

if TYPE_CHECKING:
    from .update_all import TableUpdate

log = logging.getLogger("spark_lance_index")


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers: no prefix matching (`--colum` is not `--column`), and a bad flag or
    value says so in one line with the command's usage hint, not the whole usage."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_build_flags(p: argparse.ArgumentParser) -> None:
    # Every default is None here so that a flag not given does not override --config.
    p.add_argument("--uri", help="Lance dataset URI (local path, s3://, gs://, az://)")
    p.add_argument("--column", help="the column to index: vectors (fixed-size list of floats, or a list of "
                                   "them for multivectors), scalars or text; a dotted path reaches into "
                                   "structs (emb.vector)")
    _add_index_flags(p)
    _add_run_flags(p)


def _add_update_flags(p: argparse.ArgumentParser) -> None:
    """`update` takes the index's type, metric and model from the index itself."""
    p.add_argument("--uri", help="Lance dataset URI (local path, s3://, gs://, az://)")
    p.add_argument("--column", help="the indexed vector column; with neither --column nor --index-name, "
                                     "every index of the table, one after another (exit 4: some skipped)")
    p.add_argument("--index-name", help="the index to update (default <column>_idx)")
    p.add_argument("--segment-ratio", type=int,
                   help="re-encode a small segment with the new rows while it holds fewer than this many "
                        "times the rows merged so far (default 3)")
    _add_run_flags(p)


def _add_index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index-type", type=str.upper, choices=INDEX_TYPES,
                   help="default IVF_RQ; vector: IVF_*; scalar: BTREE, BITMAP, LABEL_LIST, ZONEMAP, "
                        "BLOOMFILTER, NGRAM; full-text: INVERTED")
    p.add_argument("--index-name", help="default <column>_idx")
    p.add_argument("--metric", type=str.lower, choices=METRICS, help="default l2")
    p.add_argument("--num-partitions", type=int,
                   help="IVF partitions; default one-node Lance's: live rows/4096 (IVF_RQ, IVF_FLAT), "
                        "/8192 (IVF_PQ, IVF_SQ) or /1048576 (IVF_HNSW_*), clamped to 1..4096")
    p.add_argument("--num-bits", type=int, help="IVF_RQ bits per dimension, 1..9; default 5")
    p.add_argument("--num-sub-vectors", type=int, help="IVF_PQ, IVF_HNSW_PQ sub-vectors; default dim/16")
    p.add_argument("--m", type=int, help="IVF_HNSW_*: edges per graph node, at least 4; default 20")
    p.add_argument("--ef-construction", type=int, help="IVF_HNSW_*: candidates while building, at least m; "
                                                       "default 150")
    p.add_argument("--max-level", type=int, help="IVF_HNSW_*: graph levels; default 7")
    text = p.add_argument_group("INVERTED (full-text) options, as one-node Lance's; default: Lance's")
    flag = argparse.BooleanOptionalAction
    text.add_argument("--with-position", action=flag, help="store word positions (phrase queries)")
    text.add_argument("--base-tokenizer", help="simple, whitespace, raw, ngram, icu, icu/split, ...")
    text.add_argument("--language", help="for stemming and stop words, e.g. English, French")
    text.add_argument("--stem", action=flag, help="stem tokens")
    text.add_argument("--remove-stop-words", action=flag, help="drop the language's stop words")
    text.add_argument("--custom-stop-words", nargs="+", metavar="WORD", help="stop words instead of the language's")
    text.add_argument("--lower-case", action=flag, help="lower-case the text")
    text.add_argument("--ascii-folding", action=flag, help="fold accents (é -> e)")
    text.add_argument("--max-token-length", type=int, help="drop longer tokens")
    text.add_argument("--min-ngram-length", type=int, help="ngram tokenizer: shortest n-gram")
    text.add_argument("--max-ngram-length", type=int, help="ngram tokenizer: longest n-gram")
    text.add_argument("--prefix-only", action=flag, help="ngram tokenizer: prefixes only")
    text.add_argument("--block-size", type=int, help="documents per posting block: 128 or 256")
    text.add_argument("--fts-option", action="append", metavar="KEY=VALUE",
                      help="any other INVERTED option Lance takes (repeatable; VALUE as JSON when it parses)")
    p.add_argument("--sample-rate", type=int, help="training rows per partition; default 256")
    p.add_argument("--max-sample-rows", type=int, help="cap on the training sample's rows (default 1,048,576)")
    p.add_argument("--max-sample-bytes", type=int, help="cap on the training sample's bytes (default 1 GiB)")
    p.add_argument("--trainer", choices=("auto", "lance", "distributed"),
                   help="where k-means runs: lance (Lance's, on the driver), distributed (on the executors), "
                        "or auto (default: distributed once the sample is large, see README)")
    p.add_argument("--assignment", choices=("gemm", "lance"),
                   help="how a segment build assigns rows to partitions: gemm (default: exact, a blocked GEMM in "
                        "each task, handed to Lance) or lance (Lance's own, approximate past partitions x dimension "
                        "of 1,000,000)")
    p.add_argument("--max-iters", type=int, help="k-means iterations; default 50")
    p.add_argument("--version", type=int, help="index this dataset version (default: latest)")
    p.add_argument("--replace", action="store_true", default=None, help="replace an index of the same name")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Task sizes, job state, storage, the recall check, the report and Spark: every command's."""
    size = p.add_mutually_exclusive_group()
    size.add_argument("--rows-per-task", type=int, help="target rows per Spark task")
    size.add_argument("--fragments-per-task", type=int, help="fragments per Spark task")
    p.add_argument("--merge-memory", type=_size, metavar="SIZE",
                   help="memory one merge task may hold, e.g. 16g; sets the default --max-segment-rows (default 4g)")
    p.add_argument("--max-segment-rows", type=int,
                   help="rows per committed segment; larger tables commit several (default: what --merge-memory holds)")
    p.add_argument("--job-dir", help="folder for job state (resume); the job uses only its own "
                                     "<job id> subfolder in it (default: <dataset>.index-jobs)")
    p.add_argument(
        "--storage-option", action="append", metavar="KEY=VALUE",
        help="Lance storage option, repeatable (credentials, endpoint, region)",
    )
    p.add_argument("--verify-queries", type=int,
                   help="queries for the recall check after commit; 0 skips (default 100)")
    p.add_argument("--query-file", help=".npy file of query vectors instead of sampled rows")
    p.add_argument("--nprobes", type=int, nargs="+", help="nprobes to measure recall at (default 20)")
    p.add_argument("--refine-factor", type=int, nargs="+",
                   help="refine factors to measure at; 0 = none "
                        "(default: 0 and 10 for IVF_RQ and IVF_PQ, 0 for IVF_FLAT)")
    p.add_argument("--recall-k", type=int, help="k of recall@k (default 10)")
    p.add_argument("--min-recall", type=float, help="exit with code 3 if no measured setting reaches this recall")
    p.add_argument("--target-recall", type=float,
                   help="sweep nprobes x refine_factor and recommend the fastest setting reaching this recall@k")
    p.add_argument("--report", help="write a JSON report here (local path or object store URI)")
    p.add_argument("--progress-interval", type=float,
                   help="seconds between progress lines outside a terminal (default 30)")
    p.add_argument("--config", metavar="FILE", help="TOML file of settings; flags override it")
    p.add_argument("--master", help="Spark master for local runs, e.g. local[2]; default: the session's")
    p.add_argument("--app-name", help="Spark application name")
    p.add_argument("--verbose", action="store_true", default=None, help="debug logs, Lance warnings")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="spark-lance-index",
        description="Build and keep current the indexes of a Lance dataset (vector, multivector, scalar, "
                    "full-text) across a Spark cluster.",
    )
    parser.add_argument("--version", action="version", version=f"spark-lance-index {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    build = sub.add_parser("build", help="build and commit an index on a dataset")
    _add_build_flags(build)
    update = sub.add_parser(
        "update", help="index the rows the committed index does not cover yet, with its own model")
    _add_update_flags(update)
    verify = sub.add_parser(
        "verify", help="measure recall@k of an existing index against exact search on the executors"
    )
    _add_build_flags(verify)
    doctor = sub.add_parser("doctor", help="check pyspark, Java, the master, the executors' libraries, "
                                           "the dataset and the job directory, one line each")
    doctor.add_argument("--uri", help="the Lance dataset to check")
    doctor.add_argument("--master", help="Spark master, e.g. spark://host:7077 or local[2]")
    doctor.add_argument("--job-dir", help="folder for job state to check for write access")
    doctor.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    doctor.add_argument("--verbose", action="store_true", default=None)
    discard = sub.add_parser(
        "discard", help="remove the state of this index's jobs (and the segment directories they wrote that no "
                        "version of the dataset uses), to start afresh; no Spark")
    _add_build_flags(discard)
    status = sub.add_parser("status", help="every index of the dataset, one line each: segments, indexed and "
                                           "unindexed rows, size, model, whether update extends it; no Spark")
    status.add_argument("--uri", required=True, help="Lance dataset URI")
    status.add_argument("--version", type=int, help="this dataset version (default: latest)")
    status.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    status.add_argument("--json", action="store_true", help="a JSON list, one object per index")
    status.add_argument("--verbose", action="store_true", default=None)
    demo = sub.add_parser("demo", help="generate a dataset, index it with local Spark, print recall")
    demo.add_argument("--dir", default="demo-data", help="where to write the demo dataset")
    demo.add_argument("--rows", type=int, default=200_000)
    demo.add_argument("--dim", type=int, default=128)
    demo.add_argument("--fragments", type=int, default=16)
    demo.add_argument("--master", default="local[2]")
    return parser


def command_settings(command: str) -> set[str]:
    """The settings a command takes, as BuildConfig keywords: its flags (the Python API refuses
    any other keyword, as the command line refuses any other flag)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices[command]._actions if a.dest != "help"}
    renamed = {"storage_option": "storage_options", "fts_option": "fts_options"}
    return {renamed.get(d, d) for d in dests}


def updates_every_index(args: argparse.Namespace) -> bool:
    """`update` naming neither a column nor an index (flags or --config): every index of the table."""
    if args.command != "update":
        return False
    file_values = load_toml(args.config) if args.config else {}
    return not (args.column or args.index_name or file_values.get("column") or file_values.get("index_name"))


def update_every_index_from_args(args: argparse.Namespace) -> TableUpdate:
    """`update --uri U` alone: each index of the table with these flags (update_all.py)."""
    from .update_all import update_every_index

    file_values = load_toml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "storage_option", "fts_option")}
    flags.update(mode="update", storage_options=parse_storage_options(args.storage_option))
    base = make_config(file_values, {**flags, "column": "any"})  # the flags checked once, before anything
    return update_every_index(base, lambda column, name: make_config(
        file_values, {**flags, "column": column, "index_name": name}))


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The BuildConfig for parsed `build` flags (with --config underneath)."""
    file_values = load_toml(args.config) if args.config else {}
    flags = {
        k: v for k, v in vars(args).items() if k not in ("command", "config", "storage_option", "fts_option")
    }
    flags["fts_options"] = parse_fts_options(getattr(args, "fts_option", None))
    flags["mode"] = "update" if args.command == "update" else "build"  # never from a --config file
    flags["storage_options"] = parse_storage_options(args.storage_option)
    if args.command == "update":
        from .update_job import fill_update_target

        fill_update_target(file_values, flags)
    return make_config(file_values, flags)


def _size(text: str) -> int:
    """A size as Spark writes them (16g, 512m) or in bytes."""
    from .resources import size_in_bytes

    try:
        return size_in_bytes(text, "")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None


def _setup_logging(verbose: bool) -> None:
    # Lance's Rust logger reads LANCE_LOG once, when lance is first imported (lazily, later).
    os.environ.setdefault("LANCE_LOG", "info" if verbose else "error")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s spark-lance-index %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("py4j").setLevel(logging.WARNING)
        # Spark starts its JVM with a subprocess after lance is imported; the job never uses
        # lance across a fork, so Lance's fork-safety warning is noise here.
        warnings.filterwarnings("ignore", message="lance is not fork-safe")


COMMANDS = ("build", "update", "verify", "status", "discard", "demo", "doctor")
_BOOLEAN_FLAGS = ("--replace", "--verbose")
_TRUE = ("1", "true", "yes", "on")
_BARE_KEY_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*=")


def _quiet_after_interrupt() -> None:
    """After Ctrl-C the process ends: what other threads (the lease, Spark's callback server, a
    background trainer) would print as they are torn down is noise, not news."""
    import threading

    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    try:
        sys.stderr.flush()
    except Exception:
        pass


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept the argument styles schedulers send, and turn them into ours.

    Databricks' python_wheel_task passes `parameters` as they are, `named_parameters` as
    `--key=value` (or `key=value` from some launchers), with no subcommand; booleans come as
    `--replace=true`. The subcommand is `--command=update` in that style, else defaults to `build`.
    """
    out: list[str] = []
    for arg in argv:
        previous = out[-1] if out else ""
        takes_value = previous.startswith("--") and "=" not in previous and previous not in _BOOLEAN_FLAGS
        if not takes_value and _BARE_KEY_VALUE.match(arg):
            arg = "--" + arg
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            key = key.replace("_", "-")
            if key in _BOOLEAN_FLAGS:
                if value.lower() in _TRUE:
                    out.append(key)
                continue
            arg = f"{key}={value}"
        out.append(arg)
    # Databricks named_parameters cannot name a subcommand: {"command": "update"} does.
    if out and out[0] not in COMMANDS:
        rest, command = [], None
        for i, arg in enumerate(out):
            if arg.startswith("--command="):
                command = arg.split("=", 1)[1].lower()
            elif arg == "--command" and i + 1 < len(out):
                command = out[i + 1].lower()
            elif not (i > 0 and out[i - 1] == "--command"):
                rest.append(arg)
        if command is not None:
            out = [command, *rest]
    if not out:  # the program alone: what it does and how to call it
        return ["--help"]
    program_flag = out[0] in ("-h", "--help") or out == ["--version"]  # else --version is a dataset version
    if out[0] not in COMMANDS and not program_flag:
        out.insert(0, "build")
    return out


def entry() -> None:
    """Console script and Databricks wheel entry point: exits with the job's code, because a
    python_wheel_task ignores the return value of the function it calls."""
    code = main(sys.argv[1:])
    if code:
        sys.exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    _setup_logging(bool(getattr(args, "verbose", False)))
    from . import spark as spark_layer

    spark_layer.QUIET_INTERRUPTS = True
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(args.dir, rows=args.rows, dim=args.dim, fragments=args.fragments, master=args.master)
            return 0
        if args.command == "status":
            from .index_status import index_status, render_status

            statuses = index_status(args.uri, parse_storage_options(args.storage_option), args.version)
            print(render_status(args.uri, statuses, as_json=args.json))
            return 0
        if args.command == "doctor":
            from .doctor import run_doctor

            options = parse_storage_options(args.storage_option) or {}
            ok, _ = run_doctor(args.uri, args.master, options, args.job_dir, emit=lambda line: print(line, flush=True))
            return 0 if ok else 1
        from .checks import run_verify
        from .pipeline import run

        if updates_every_index(args):
            table = update_every_index_from_args(args)
            print(table.summary())
            return table.exit_code
        config = config_from_args(args)
        if args.command == "discard":
            from .discard_jobs import run_discard

            print("\n".join(run_discard(config)))
            return 0
        result = run_verify(config) if args.command == "verify" else run(config)
        print(result.summary())
        return 0
    except KeyboardInterrupt:
        return _say_interrupted(args)
    except RecallTooLowError as e:
        print(e.result.summary())  # type: ignore[attr-defined]  # the run's JobResult
        print(f"spark-lance-index: error: {e}", file=sys.stderr)
        return e.exit_code
    except JobError as e:
        if interrupts.caused_by_interrupt(e):  # the cancelled jobs' failure (interrupts.py)
            return _say_interrupted(args)
        print(f"spark-lance-index: error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:  # a dependency ending the process is never a success
        print(f"spark-lance-index: error: a library called sys.exit({e.code!r}) inside the job, "
              "which did not finish; rerun with --verbose to see which", file=sys.stderr)
        return 1
    except Exception as e:
        if interrupts.caused_by_interrupt(e):
            return _say_interrupted(args)
        raise
    finally:
        interrupts.uninstall()
        spark_layer.QUIET_INTERRUPTS = False


def _say_interrupted(args: argparse.Namespace) -> int:
    _quiet_after_interrupt()
    advice = "rerun the same command to resume"
    if args.command in ("build", "update") and not updates_every_index(args):
        from .pipeline import discard_command

        advice += f", or `{discard_command(config_from_args(args))}` to start afresh"
    print(f"spark-lance-index: interrupted; {advice}", file=sys.stderr)
    return 130
