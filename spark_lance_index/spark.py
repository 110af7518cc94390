"""The Spark session: find Java, start or reuse a session, label its jobs, read its settings.

What the job runs on the cluster goes through `transport.py` (map, map-reduce, cache), which
hides whether the session is classic Spark or Spark Connect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional

from . import interrupts, jvm_archive
from .errors import JobError
from .preflight import NodeVersions, node_versions
from .transport import is_connect, transport_for

log = logging.getLogger(__name__)

# Set by the command line: Ctrl-C then ends the process, so its handler may silence everything
# (a library user's session and logging are never touched).
QUIET_INTERRUPTS = False

# Faster JVM start for short local runs (measured: ~10 s -> ~6 s on 2 cores); the class archive
# (jvm_archive.py) is keyed on these.
LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def find_java() -> tuple[Optional[str], str]:
    """(the java Spark would start, where it looked): $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        return (java if os.access(java, os.X_OK) else None), f"JAVA_HOME={home}"
    return shutil.which("java"), "PATH; JAVA_HOME is not set"


def java_major(java: str) -> Optional[int]:
    """The major version `java -version` reports (8 for "1.8.0_x"), or None if unreadable."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def check_java() -> None:
    """Refuse in one line, before Spark tries, when there is no Java or one too old for this
    pyspark (4.x needs 17; 3.5 needs 8)."""
    import pyspark

    java, where = find_java()
    if java is None:
        raise JobError(f"Java was not found (looked in {where}): install Java 17 and put it on PATH "
                       "or set JAVA_HOME; Spark needs it to start")
    needed = 17 if int(pyspark.__version__.split(".")[0]) >= 4 else 8
    major = java_major(java)
    if major is not None and major < needed:
        raise JobError(f"{java} is Java {major}, and pyspark {pyspark.__version__} needs Java {needed} "
                       "or newer: install it and put it on PATH or set JAVA_HOME")


MASTER_ATTEMPTS = 3  # connection tries per standalone master, a second apart


def check_master(master: str) -> None:
    """For a standalone master (`spark://host:port[,host:port]`), refuse in one line when no
    master accepts a connection, instead of Spark's minute of retries and JVM stack traces."""
    import socket
    import time

    addresses = [a.strip() for a in master[len("spark://"):].split(",") if a.strip()]
    reasons: list[str] = []
    for attempt in range(MASTER_ATTEMPTS):
        reasons = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host or address, int(port or 7077)), timeout=5).close()
                return
            except (OSError, ValueError) as e:
                reasons.append(f"{address}: {getattr(e, 'strerror', None) or e}")
        if attempt < MASTER_ATTEMPTS - 1:
            time.sleep(1)
    raise JobError(f"cannot reach the Spark master {master} ({'; '.join(reasons)}) after {MASTER_ATTEMPTS} "
                   "tries: check --master, and that the master is running and reachable from here")


def check_can_start(master: Optional[str]) -> None:
    """What starting a session needs, checked in one line each before anything starts: pyspark,
    and unless a session is already there, Java and a reachable standalone master. Also sets
    PYSPARK_PYTHON for local executors, before any other thread runs (the pipeline trains on one)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise JobError(
            "pyspark is not installed: install it with the spark extra (pip install "
            "'spark-lance-index[spark]'), or run the job inside a Spark environment "
            "(spark-submit, Databricks)"
        ) from None
    if SparkSession.getActiveSession() is not None or os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return
    if master and master.startswith("local"):
        # Local executors must run this Python, the one that has lance and this package.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not (master or "").startswith("sc://") and not (os.environ.get("SPARK_REMOTE") and not master):
        check_java()  # a Connect client starts no JVM
    if master and master.startswith("spark://"):
        check_master(master)


def _running_context() -> bool:
    """Whether this process already runs a classic SparkContext (started by the user)."""
    try:
        from pyspark import SparkContext
    except ImportError:
        return False
    sc = SparkContext._active_spark_context
    return sc is not None and getattr(sc, "_jsc", None) is not None


def get_session(master: Optional[str], app_name: str, verbose: bool = False,
                task_bytes: int = 0) -> tuple[Any, bool]:
    """Return (session, created). An active session (Databricks, a notebook, a test) is
    reused and never stopped by the job; otherwise one is created and the caller stops it.

    A session created for a cluster gets what the job's tasks need where the user left it unset
    (resources.py): Lance's threads bounded to the task's cores, and, when the executors' cores
    are known, the memory overhead that `task_bytes` of vectors per task needs."""
    from pyspark.sql import SparkSession  # importable: check_can_start said so

    check_can_start(master)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    if _running_context():
        # A session of this process's running SparkContext, made on another thread (a notebook's
        # thread pool): the user's, never stopped by the job. getActiveSession is per thread.
        return SparkSession.builder.getOrCreate(), False
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        # A Databricks job owns its session: take it, never configure or stop it.
        return SparkSession.builder.getOrCreate(), False
    # --master wins over SPARK_REMOTE; SPARK_REMOTE over nothing
    remote = master if (master or "").startswith("sc://") else None if master else os.environ.get("SPARK_REMOTE")
    if remote:  # Spark Connect: the server owns the configuration and the logs, no JVM here
        session = SparkSession.builder.remote(remote).appName(app_name).getOrCreate()
        _handle_ctrl_c()
        return session, True
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):
        builder = builder.config("spark.driver.extraJavaOptions", LOCAL_JAVA_OPTIONS)
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    _launch_jvm_apart(builder)
    # Lance's Rust log level on executors: quiet unless asked (one "partition N is empty"
    # warning per partition per task otherwise floods the executor logs).
    builder = builder.config("spark.executorEnv.LANCE_LOG", "info" if verbose else "error")
    # Under spark-submit the JVM is up already and holds the master; otherwise read the
    # configuration only for a cluster master (starting the JVM early would lose the local
    # driver's Java options).
    on_cluster = not (master or "local").startswith(("local", "sc://")) or (
        master is None and os.environ.get("PYSPARK_GATEWAY_PORT"))
    if on_cluster and not os.environ.get("SPARK_REMOTE"):
        for key, value in cluster_settings(task_bytes, master).items():
            log.info("setting %s=%s for this job's tasks (set it yourself to override)", key, value)
            builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as e:
        if "JAVA_GATEWAY_EXITED" in str(e):
            raise JobError("Spark's Java process exited before it started (JAVA_GATEWAY_EXITED): "
                           "rerun with --verbose to see its output") from None
        raise
    if not verbose:
        spark.sparkContext.setLogLevel("WARN")
    _handle_ctrl_c()
    return spark, True


def _launch_jvm_apart(builder: Any) -> None:
    """Start the driver's JVM (unless spark-submit did) in a process group of its own.

    A terminal sends Ctrl-C to its whole foreground group: Spark's JVM then shuts down under
    the running job, and its local Python workers (PySpark's daemon restores their Ctrl-C
    handler) print a traceback each. Apart, they never see it: the driver handles Ctrl-C and
    cancels the jobs. The JVM still ends with the driver (it exits when its stdin closes), and
    its workers with it."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return
    conf = SparkConf(loadDefaults=False)
    # what the JVM must start with (the driver's Java options)
    conf.setAll(list(getattr(builder, "_options", {}).items()))
    java_options = conf.get("spark.driver.extraJavaOptions", "")
    archive_options, archive = (jvm_archive.options_for(find_java()[0], java_options)
                                if java_options == LOCAL_JAVA_OPTIONS else ("", None))
    gateway, aside = None, None
    if archive is not None:
        conf.set("spark.driver.extraJavaOptions", f"{java_options} {archive_options}")
        try:
            gateway = launch_gateway(conf, popen_kwargs={"start_new_session": True})
            log.debug("driver JVM started with the class archive %s", archive)
        except Exception as e:
            if "JAVA_GATEWAY_EXITED" not in str(e):
                raise
            log.warning("Spark's JVM did not start with its class archive %s: set it aside, starting "
                        "without it", archive)
            aside = jvm_archive.set_aside(archive)
            conf.set("spark.driver.extraJavaOptions", java_options)
    if gateway is None:
        try:
            gateway = launch_gateway(conf, popen_kwargs={"start_new_session": True})
        except Exception as e:
            if archive is not None:  # it fails without the archive too: the archive was not the cause
                jvm_archive.put_back(aside, archive)
            if "JAVA_GATEWAY_EXITED" in str(e):
                raise JobError("Spark's Java process exited before it started (JAVA_GATEWAY_EXITED): "
                               "rerun with --verbose to see its output") from None
            raise
    SparkContext._ensure_initialized(gateway=gateway, conf=conf)


def stop_session(spark: Any) -> None:
    """Stop a session the job created. PySpark's `stop` then shuts its accumulator server down and
    waits for the server's handler, which looks for the shutdown once a second: about 0.9 s of
    every run spent waiting. The handler ends on its own at its next look, in a daemon thread, so
    it is told to and not waited for."""
    context = None if is_connect(spark) else spark.sparkContext
    server = getattr(context, "_accumulatorServer", None)
    if context is not None and server is not None:
        context._accumulatorServer = None  # PySpark's stop skips the wait
    try:
        spark.stop()
    finally:
        if server is not None:
            server.server_shutdown = True  # what the handler looks for
            threading.Thread(target=server.shutdown, name="accumulator-server-stop", daemon=True).start()


def _handle_ctrl_c() -> None:
    """Ctrl-C in a session the command line created: see `interrupts.py`. PySpark's own handler
    cancels the jobs from inside the interrupted Py4J call (a reentrant call that fails with two
    tracebacks); the pipeline cancels them once more after the call has unwound (`cancel_jobs`)."""
    if QUIET_INTERRUPTS:
        interrupts.install()


def cancel_jobs(spark: Any) -> None:
    """Cancel what this session runs (Ctrl-C): a Spark Connect server would otherwise go on
    running the tasks of a client that is gone. Quiet: the cancelled tasks' errors are expected."""
    if not is_connect(spark):
        interrupts.cancel_context_jobs(spark.sparkContext)
        return
    try:
        spark.interruptAll()
    except Exception as e:  # the session may be going down already
        log.debug("cancelling the session's jobs: %s", e)


def cluster_settings(task_bytes: int, master: Optional[str] = None) -> dict:
    """What resources.session_settings adds to the configuration spark-submit and
    spark-defaults.conf give (read before the context starts); {} if it cannot be read."""
    from .resources import read_resources, session_settings

    try:
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # the JVM that holds spark-submit's --conf
        given = SparkConf()
        cluster = master or given.get("spark.master", "local")
        if cluster.startswith("local"):
            return {}  # local threads share one machine and have no container to outgrow
        get = lambda key: given.get(key, None)  # noqa: E731
        return session_settings(read_resources(get), task_bytes, get, cluster)
    except Exception as e:  # never fail the job over advice
        log.debug("cannot read the Spark configuration before the session starts: %s", e)
        return {}


def executor_memory_advice(spark: Any, task_bytes: int) -> Optional[str]:
    """resources.memory_advice for this session's executors, where a container limit is
    enforced (YARN, Kubernetes; not local mode, standalone, Databricks or through Connect)."""
    from .resources import enforces_memory, memory_advice, read_resources

    if is_connect(spark) or not enforces_memory(master(spark)):
        return None
    return memory_advice(read_resources(lambda key: _conf(spark, key)), task_bytes)


@contextlib.contextmanager
def job_group(spark: Any, group_id: str, description: str) -> Iterator[None]:
    """Label the Spark jobs of one phase so the Spark UI says what is running."""
    if is_connect(spark):  # Connect labels operations with tags instead of job groups
        spark.addTag(group_id)
        try:
            yield
        finally:
            spark.removeTag(group_id)
        return
    sc = spark.sparkContext
    sc.setJobGroup(group_id, description, interruptOnCancel=True)
    try:
        yield
    finally:
        sc.setJobGroup(None, None)


def failure_reason(error: BaseException) -> str:
    """The Python exception behind a failed Spark stage, in one line (not the JVM's stack)."""
    text = str(error)
    causes = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit|Interrupt)): (.+)$", text, re.M)
    python = [c for c in causes if not c[0].startswith(("Py4J", "Spark", "Task"))]
    if python:
        name, message = python[-1]
        return f"{name}: {message.strip()[:300]}"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _conf(spark: Any, key: str) -> Optional[str]:
    try:
        return spark.conf.get(key, None)
    except Exception:
        return None


def application_id(spark: Any) -> Optional[str]:
    if is_connect(spark):
        return _conf(spark, "spark.app.id")
    return spark.sparkContext.applicationId


def master(spark: Any) -> Optional[str]:
    if is_connect(spark):
        return _conf(spark, "spark.master")
    return spark.sparkContext.master


# Planning needs a core count; a Connect client cannot ask the cluster for one.
CONNECT_DEFAULT_PARALLELISM = 8


def default_parallelism(spark: Any) -> int:
    if is_connect(spark):
        return int(_conf(spark, "spark.default.parallelism") or CONNECT_DEFAULT_PARALLELISM)
    return max(1, spark.sparkContext.defaultParallelism)


def run_preflight(spark: Any) -> list[NodeVersions]:
    """NodeVersions from one tiny task per executor slot (deduplicated by process)."""
    found = transport_for(spark).map(list(range(default_parallelism(spark))), lambda i, _: node_versions())
    return list({v.host: v for v in found}.values())
