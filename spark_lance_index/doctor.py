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
               job_dir: Optional[str], spark=None) -> tuple[bool, list[str]]:
    """(all passed, the report lines). Checks: pyspark, Java, the master, the executors'
    libraries, the dataset, write access to the job directory."""
    from . import spark as spark_layer
    from .dataset import open_dataset
    from .preflight import require_driver_libraries
    from .state import default_jobs_root
    from .storage import Files, locate

    lines: list[str] = []
    ok = True

    def pyspark_version() -> str:
        try:
            import pyspark
        except ImportError:
            raise JobError("pyspark is not installed: install the spark extra, or run inside a Spark "
                           "environment") from None
        return pyspark.__version__

    ok &= _check("pyspark", pyspark_version, lines)
    session = {"spark": spark, "created": False}
    if ok:
        if spark is None:
            def java() -> str:
                spark_layer.check_java()
                path, where = spark_layer.find_java()
                return f"Java {spark_layer.java_major(path)} at {path} (from {where})"

            ok &= _check("java", java, lines)

            def start() -> str:
                session["spark"], session["created"] = spark_layer.get_session(master, "spark-lance-index-doctor")
                app = spark_layer.application_id(session["spark"])
                return f"{spark_layer.master(session['spark'])} (application {app})"

            if ok:
                ok &= _check("spark master", start, lines)
            else:
                lines.append("skip spark master: fix the checks above first")
        else:
            lines.append(f"ok   spark master: {spark_layer.master(spark)} (the active session)")
    if session["spark"] is not None:
        def executors() -> str:
            found = spark_layer.run_preflight(session["spark"])
            driver = require_driver_libraries(found)
            return f"{len(found)} executor processes, all with {driver.describe()}"

        ok &= _check("executors' libraries", executors, lines)
        if session["created"]:
            session["spark"].stop()
    else:
        lines.append("skip executors' libraries: no Spark session")
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
    return bool(ok), lines
