"""`spark-lance-index doctor`: the checks a first job depends on, one line each.

Run it before the first big job, and paste its output into bug reports. Exit 0 only when every
check passes. It writes one probe file in its own name under the job directory root, and
deletes only that file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Optional

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
               job_dir: Optional[str], spark=None,
               emit: Optional[Callable[[str], None]] = None) -> tuple[bool, list[str]]:
    """(all passed, the report lines; each also given to `emit` as it is known). Checks: the
    dataset, write access to the job directory, pyspark, Java, the master, the executors'
    libraries."""
    from . import spark as spark_layer
    from .dataset import open_dataset
    from .preflight import require_driver_libraries
    from .state import default_jobs_root
    from .storage import Files, locate

    lines = _Lines(emit)
    ok = True
    # The dataset and the job directory first: they need no Spark, and a wrong URI or missing
    # credentials are the commonest first failure (no 16 s session start before saying so).
    if uri:
        def dataset() -> str:
            ds = open_dataset(uri, storage_options)
            return f"{uri} version {ds.version}, {ds.count_rows():,} rows, {len(ds.get_fragments())} fragments"

        ok &= _check("dataset readable", dataset, lines)

        def writable() -> str:
            root = locate(job_dir) if job_dir else default_jobs_root(locate(uri))
            files, probe = Files(root, storage_options), f".doctor-{uuid.uuid4().hex}"
            existed = files.exists()
            files.write(probe, b"spark-lance-index doctor probe")
            files.delete_file(probe)  # only the probe: nothing else in the folder is touched
            if not existed and not job_dir:
                files.remove_if_empty()
            return f"{root} (wrote and deleted one probe file)"

        ok &= _check("job directory writable", writable, lines)
    else:
        lines.append("skip dataset readable: give --uri")
        lines.append("skip job directory writable: give --uri (and --job-dir)")

    def pyspark_version() -> str:
        try:
            import pyspark
        except ImportError:
            raise JobError("pyspark is not installed: install the spark extra, or run inside a Spark "
                           "environment") from None
        return pyspark.__version__

    runs = _check("pyspark", pyspark_version, lines)  # each Spark check needs the ones before it
    session = {"spark": spark, "created": False}
    if runs:
        if spark is None:
            def java() -> str:
                spark_layer.check_java()
                path, where = spark_layer.find_java()
                return f"Java {spark_layer.java_major(path)} at {path} (from {where})"

            runs &= _check("java", java, lines)

            def start() -> str:
                session["spark"], session["created"] = spark_layer.get_session(master, "spark-lance-index-doctor")
                app = spark_layer.application_id(session["spark"])
                return f"{spark_layer.master(session['spark'])} (application {app})"

            if runs:
                runs &= _check("spark master", start, lines)
            else:
                lines.append("skip spark master: fix the checks above first")
        else:
            lines.append(f"ok   spark master: {spark_layer.master(spark)} (the active session)")
    if session["spark"] is not None:
        def executors() -> str:
            found = spark_layer.run_preflight(session["spark"])
            driver = require_driver_libraries(found)
            return f"{len(found)} executor processes, all with {driver.describe()}"

        runs &= _check("executors' libraries", executors, lines)
        if session["created"]:
            session["spark"].stop()
    else:
        lines.append("skip executors' libraries: no Spark session")
    ok &= runs
    return bool(ok), lines
