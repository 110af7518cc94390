"""A class-data archive for the local driver JVM the job starts: a session in about 1.7 s less.

A local Spark session spends most of its 3 s start loading and verifying Spark's ~13,000
classes from its jars. Java's dynamic class-data sharing (JDK 13 on) records the loaded classes
once into an archive (`-XX:ArchiveClassesAtExit`) that later JVMs map (`-XX:SharedArchiveFile`);
measured here: JVM launch 1.0 -> 0.6 s, session 2.2 -> 1.1 s (docs/benchmarks.md).

Made once, by `python -m spark_lance_index.jvm_archive` (`make setup` runs it): recording costs
about 10 s and 120 MB, not something to add to a user's first job unasked. A job maps it only
for a local master whose JVM it launches itself, and only an archive made for the same Java, the
same Spark jars and the same JVM options (the key in its name). The JVM checks the rest itself
and, if the archive does not fit, starts without it. A damaged archive can crash the JVM at
launch: the job then moves it aside and starts without it (`spark.py`), and it is only ever put
in place whole, after a JVM has started with it.

SPARK_LANCE_INDEX_JVM_ARCHIVE=off turns it off; SPARK_LANCE_INDEX_CACHE moves it (default
$XDG_CACHE_HOME/spark-lance-index, else ~/.cache/spark-lance-index).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger("spark_lance_index")

PREFIX, SUFFIX = "spark-driver-", ".jsa"
# the archive's own warnings (classes it cannot hold) are no concern of a user's
QUIET = "-Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"


def enabled() -> bool:
    return os.environ.get("SPARK_LANCE_INDEX_JVM_ARCHIVE", "on").lower() not in ("0", "off", "false", "no")


def cache_dir() -> Path:
    if os.environ.get("SPARK_LANCE_INDEX_CACHE"):
        return Path(os.environ["SPARK_LANCE_INDEX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spark-lance-index"


def _spark_jars() -> list[str]:
    from pyspark.find_spark_home import _find_spark_home

    jars = Path(_find_spark_home()) / "jars"  # the JVM checks the classpath's paths, sizes and times
    if not jars.is_dir():
        return []
    return [str(jars), *sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in jars.glob("*.jar"))]


def archive_path(java: str, java_options: str) -> Path:
    """Where the archive for this Java, these Spark jars and these JVM options lives."""
    real = os.path.realpath(java)
    stat = os.stat(real)
    parts = [real, str(stat.st_size), str(stat.st_mtime_ns), java_options, *_spark_jars(),
             *(f"{k}={os.environ.get(k, '')}" for k in ("SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR",
                                                         "SPARK_DIST_CLASSPATH", "SPARK_HOME"))]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / f"{PREFIX}{key}{SUFFIX}"


def options_for(java: Optional[str], java_options: str) -> tuple[str, Optional[Path]]:
    """(JVM options that map the archive, the archive), or ("", None) when there is none to map."""
    if not enabled() or not java:
        return "", None
    try:
        path = archive_path(java, java_options)
    except (OSError, ImportError) as e:  # no Java or no Spark home to key it on: nothing to map
        log.debug("no JVM class archive: %s", e)
        return "", None
    if not path.is_file() or " " in str(path):  # Spark splits the JVM's options at spaces
        return "", None
    return f"-XX:SharedArchiveFile={path} {QUIET} -XX:ErrorFile={path.parent}/hs_err_pid%p.log", path


def mapped_by_driver() -> Optional[str]:
    """The archive the driver JVM this process launched has mapped, from /proc (Linux), or None."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    try:
        with open(f"/proc/{proc.pid}/maps") as maps:  # type: ignore[union-attr]
            return next((line.split()[-1] for line in maps if PREFIX in line and SUFFIX in line), None)
    except (AttributeError, OSError):
        return None


def set_aside(path: Path) -> Optional[Path]:
    """An archive a JVM could not start with: renamed, never mapped again, kept for a bug report.
    -> where it went (None if it could not be moved)."""
    try:
        os.replace(path, path.with_suffix(".unusable"))
        return path.with_suffix(".unusable")
    except OSError as e:
        log.debug("could not set the archive %s aside: %s", path, e)
        return None


def put_back(aside: Optional[Path], path: Path) -> None:
    """The JVM failed without the archive too: the archive was not the cause."""
    if aside is not None:
        try:
            os.replace(aside, path)
        except OSError as e:
            log.debug("could not put the archive %s back: %s", path, e)


def make(java_options: str) -> tuple[Path, bool]:
    """Record the archive with one local session and one Python task, check that a JVM starts with
    it, then put it in place. -> (its path, whether it was made now)."""
    from . import spark as spark_layer

    java, _ = spark_layer.find_java()
    if not java:
        raise SystemExit("no Java found: set JAVA_HOME")
    path = archive_path(java, java_options)
    if " " in str(path):
        raise SystemExit(f"the cache folder {path.parent} has a space in its path, which the JVM's options "
                         "cannot hold: set SPARK_LANCE_INDEX_CACHE to another folder")
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    recording = path.with_name(f"{path.stem}.{os.getpid()}.recording")
    output = path.with_suffix(".log")
    output.unlink(missing_ok=True)
    try:
        _run_session(f"{java_options} -XX:ArchiveClassesAtExit={recording} {QUIET}", output)
        if not recording.is_file():
            raise SystemExit(f"the JVM wrote no archive to {recording}")
        _run_session(f"{java_options} -XX:SharedArchiveFile={recording} -Xshare:on -Xlog:cds=off "
                     f"-Xlog:cds+dynamic=off", output)  # -Xshare:on: a JVM that cannot map it fails here
        os.replace(recording, path)
    finally:
        recording.unlink(missing_ok=True)
    made_for = "\n".join([os.path.realpath(java), *_spark_jars()[:1]]) + "\n"
    path.with_suffix(".made-for").write_text(made_for)
    _remove_orphans(path.parent, path, made_for)
    return path, True


def _remove_orphans(folder: Path, made: Path, made_for: str) -> None:
    """Our files no JVM will use: archives made for a Java or a Spark no longer on this machine
    (an old venv) or superseded by `made` (the same Java and Spark folder, changed since), crash
    logs of driver JVMs, and recordings whose process is gone."""
    for record in folder.glob(f"{PREFIX}*.made-for"):
        paths = record.read_text().splitlines()
        if record.stem != made.stem and (record.read_text() == made_for
                                         or not all(os.path.exists(p) for p in paths)):
            for suffix in (SUFFIX, ".unusable", ".log", ".made-for"):
                record.with_suffix(suffix).unlink(missing_ok=True)
    for crash in folder.glob("hs_err_pid*.log"):
        crash.unlink(missing_ok=True)
    for recording in folder.glob(f"{PREFIX}*.recording"):
        pid = recording.name.split(".")[-2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            recording.unlink(missing_ok=True)


def _run_session(java_options: str, output: Path) -> None:
    """A local session in a JVM of its own, one Python task (what a job's preflight loads), and
    the JVM stopped and waited for (the archive is written as it exits)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    from .spark import run_preflight

    conf = SparkConf(loadDefaults=False).setMaster("local[2]").setAppName("spark-lance-index-jvm-archive")
    conf.set("spark.driver.extraJavaOptions", java_options).set("spark.ui.showConsoleProgress", "false")
    with open(output, "ab") as out:  # Spark's start-up lines, kept for when it fails
        gateway = launch_gateway(conf, popen_kwargs={"start_new_session": True, "stdout": out, "stderr": out})
    try:
        SparkContext._ensure_initialized(gateway=gateway, conf=conf)
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        run_preflight(spark)
        spark.stop()
    finally:
        gateway.shutdown()
        gateway.proc.stdin.close()
        code = gateway.proc.wait(timeout=300)
        SparkContext._gateway = SparkContext._jvm = None
    if code != 0:
        raise SystemExit(f"Spark's JVM exited with code {code}: see {output}")


def main() -> int:
    from .spark import LOCAL_JAVA_OPTIONS

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers: this interpreter
    if not enabled():
        print("the JVM class archive is off (SPARK_LANCE_INDEX_JVM_ARCHIVE)")
        return 0
    path, made = make(LOCAL_JAVA_OPTIONS)
    size = path.stat().st_size / 2**20
    print(f"JVM class archive for local Spark {'made' if made else 'up to date'}: {path} ({size:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
