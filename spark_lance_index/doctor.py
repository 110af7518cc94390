"""`spark-lance-index doctor`: the checks a first job depends on, one line each.

Run it before the first big job, and paste its output into bug reports. Exit 0 only when every
check passes. It writes one probe file in its own name under the job directory root, and
deletes only that file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Optional

from .errors import JobError


class _Lines(list):
    """The report's lines, each passed on as it is added (a slow check does not hide the others)."""

    def __init__(self, emit: Optional[Callable[[str], None]]) -> None:
        super().__init__()
        self.emit = emit

    def append(self, line: str) -> None:
        super().append(line)
        if self.emit is not None:
            self.emit(line)


def _check(name: str, fn: Callable[[], str], lines: list[str]) -> bool:
    try:
        detail = fn()
    except JobError as e:
        lines.append(f"FAIL {name}: {e}")
        return False
    except Exception as e:  # a doctor reports, it does not crash
        lines.append(f"FAIL {name}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
        return False
    lines.append(f"ok   {name}: {detail}")
    return True


def run_doctor(uri: Optional[str], master: Optional[str], storage_options: Mapping[str, str],
               job_dir: Optional[str], spark: Any = None,
               emit: Optional[Callable[[str], None]] = None) -> tuple[bool, list[str]]:
    """(all passed, the report lines; each also given to `emit` as it is known). The dataset and
    the job directory first: they need no Spark, and a wrong URI or missing credentials are the
    commonest first failure (no 16 s session start before saying so). Then pyspark, Java, the
    master and the executors' libraries."""
    lines = _Lines(emit)
    stored = _storage_checks(uri, storage_options, job_dir, lines)
    sparked = _spark_checks(master, spark, lines)
    return stored and sparked, lines


def _storage_checks(uri: Optional[str], storage_options: Mapping[str, str], job_dir: Optional[str],
                    lines: list[str]) -> bool:
    from .dataset import open_dataset
    from .state import default_jobs_root
    from .storage import Files, locate

    if not uri:
        lines.append("skip dataset readable: give --uri")
        lines.append("skip job directory writable: give --uri (and --job-dir)")
        return True

    def dataset() -> str:
        ds = open_dataset(uri, storage_options)
        return f"{uri} version {ds.version}, {ds.count_rows():,} rows, {len(ds.get_fragments())} fragments"

    def writable() -> str:
        root = locate(job_dir) if job_dir else default_jobs_root(locate(uri))
        files, probe = Files(root, storage_options), f".doctor-{uuid.uuid4().hex}"
        existed = files.exists()
        files.write(probe, b"spark-lance-index doctor probe")
        files.delete_file(probe)  # only the probe: nothing else in the folder is touched
        if not existed and not job_dir:
            files.remove_if_empty()
        return f"{root} (wrote and deleted one probe file)"

    readable = _check("dataset readable", dataset, lines)
    if readable or job_dir:
        return _check("job directory writable", writable, lines) and readable
    # its default place is beside a dataset that is not there: no folders made for a typo
    lines.append("skip job directory writable: fix the dataset first (or give --job-dir)")
    return False


def _archive_line() -> str:
    """Whether the driver JVM started from the class archive (jvm_archive.py): information only."""
    from .jvm_archive import mapped_by_driver

    mapped = mapped_by_driver()
    if mapped:
        return f"ok   JVM class archive: the driver mapped {mapped}"
    return ("skip JVM class archive: the driver started without one (local Spark starts ~1.5 s faster "
            "with it: python -m spark_lance_index.jvm_archive)")


def _spark_checks(master: Optional[str], spark: Any, lines: list[str]) -> bool:
    """pyspark, Java, the master, the executors' libraries: each needs the ones before it."""
    from . import spark as spark_layer
    from .preflight import require_driver_libraries

    def pyspark_version() -> str:
        try:
            import pyspark
        except ImportError:
            raise JobError("pyspark is not installed: install the spark extra, or run inside a Spark "
                           "environment") from None
        return pyspark.__version__

    def java() -> str:
        spark_layer.check_java()
        path, where = spark_layer.find_java()
        if path is None:  # check_java said there is one
            raise JobError(f"no Java found ({where})")
        return f"Java {spark_layer.java_major(path)} at {path} (from {where})"

    session = {"spark": spark, "created": False}

    def start() -> str:
        session["spark"], session["created"] = spark_layer.get_session(master, "spark-lance-index-doctor")
        app = spark_layer.application_id(session["spark"])
        return f"{spark_layer.master(session['spark'])} (application {app})"

    def executors() -> str:
        found = spark_layer.run_preflight(session["spark"])
        return f"{len(found)} executor processes, all with {require_driver_libraries(found).describe()}"

    runs = _check("pyspark", pyspark_version, lines)
    if runs and spark is None:
        runs = _check("java", java, lines)
        if runs:
            runs = _check("spark master", start, lines)
            if runs and session["created"]:
                lines.append(_archive_line())
        else:
            lines.append("skip spark master: fix the checks above first")
    elif runs:
        lines.append(f"ok   spark master: {spark_layer.master(spark)} (the active session)")
    if session["spark"] is None:
        lines.append("skip executors' libraries: no Spark session")
        return False
    runs = _check("executors' libraries", executors, lines) and runs
    if session["created"]:
        spark_layer.stop_session(session["spark"])
    return runs
