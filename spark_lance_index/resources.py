"""What an executor's Python workers need, and what the cluster gives them.

Lance runs in the Python worker, outside the JVM heap (`spark.executor.memory`). On YARN,
Kubernetes and Databricks a container holds heap + `spark.executor.memoryOverhead` (default
max(384 MiB, 10% of the heap), meant for the JVM's own off-heap use), or heap + overhead +
`spark.executor.pyspark.memory` when that is set. A build task peaks at about 100 MiB plus 1.06x
its vector bytes (measured, IVF types), so one 512 MiB task already exceeds a default overhead:
the container is killed and Spark retries the task until the stage fails.

Lance also sizes its compute thread pool from the machine's cores, not from the task's slot, so
`spark.executor.cores` tasks each start a pool as large as the machine. `LANCE_CPU_THREADS`
bounds it to `spark.task.cpus`, and `OPENBLAS_NUM_THREADS` numpy's BLAS likewise.

Plain functions over Spark's configuration strings; no Spark import.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

MIB = 1024 * 1024
TASK_BASE_BYTES = 100 * MIB  # a build task's peak above its vector bytes (measured)
TASK_VECTOR_FACTOR = 1.06
MIN_OVERHEAD_BYTES = 384 * MIB  # Spark's floor for memoryOverhead
OVERHEAD_FRACTION = 0.10  # Spark's default memoryOverhead, of the heap


def task_peak_bytes(vector_bytes: int) -> int:
    """Peak memory of one build task holding `vector_bytes` of vectors."""
    return int(TASK_BASE_BYTES + TASK_VECTOR_FACTOR * vector_bytes)


def parse_size(text: Optional[str], default_unit: str = "m") -> Optional[int]:
    """Spark's size strings ("4g", "512m", "1024" in MiB by default) in bytes; None if unset."""
    if text is None or str(text).strip() == "":
        return None
    found = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)i?b?\s*", str(text).lower())
    if not found:
        return None
    unit = found.group(2) or default_unit
    return int(found.group(1)) * 1024 ** "bkmgtp".index(unit)


def size_in_bytes(text: str, what: str) -> int:
    """A size given by a user, in bytes or as Spark writes them (16g, 512m); ValueError, in one
    line, for anything else."""
    size = parse_size(text, default_unit="b")
    if size is None:
        raise ValueError(f"{what} {text!r} is not a size: give bytes or a number with k, m, g or t")
    return size


@dataclass(frozen=True)
class ExecutorResources:
    """An executor's settings, as far as the session's configuration says them."""

    heap: int  # spark.executor.memory
    overhead: Optional[int]  # spark.executor.memoryOverhead, None: Spark's default
    overhead_factor: Optional[float] = None  # spark.executor.memoryOverheadFactor (or Kubernetes')
    pyspark: Optional[int] = None  # spark.executor.pyspark.memory
    cores: Optional[int] = None  # spark.executor.cores, None: unknown (standalone: all of a worker's)
    task_cpus: int = 1  # spark.task.cpus

    @property
    def jvm_share(self) -> int:
        """What the JVM keeps of the overhead for itself: Spark's default overhead."""
        return max(MIN_OVERHEAD_BYTES, int(OVERHEAD_FRACTION * self.heap))

    @property
    def overhead_bytes(self) -> int:
        """The overhead the executors get: given, or from the factor, or Spark's default."""
        if self.overhead is not None:
            return self.overhead
        return max(MIN_OVERHEAD_BYTES, int((self.overhead_factor or OVERHEAD_FRACTION) * self.heap))

    @property
    def slots(self) -> int:
        """Tasks an executor runs at once (1 when its cores are unknown)."""
        return max(1, (self.cores or 1) // max(1, self.task_cpus))

    @property
    def python_bytes(self) -> int:
        """What the container leaves the Python workers: pyspark.memory when set, else the
        overhead beyond what the JVM keeps for itself (Spark's own default overhead)."""
        if self.pyspark:
            return self.pyspark
        return max(0, self.overhead_bytes - self.jvm_share)

    @property
    def per_task_bytes(self) -> int:
        return self.python_bytes // self.slots


def read_resources(conf: Callable[[str], Optional[str]]) -> ExecutorResources:
    """ExecutorResources from a configuration getter (`spark.conf.get(key, None)`)."""
    cores = conf("spark.executor.cores")
    given = conf("spark.executor.memoryOverheadFactor") or conf("spark.kubernetes.memoryOverheadFactor")
    factor: Optional[float]
    try:
        factor = float(given) if given else None
    except ValueError:
        factor = None
    return ExecutorResources(
        heap=parse_size(conf("spark.executor.memory")) or 1024 * MIB,
        overhead=parse_size(conf("spark.executor.memoryOverhead")),
        overhead_factor=factor,
        pyspark=parse_size(conf("spark.executor.pyspark.memory")),
        cores=int(cores) if cores and str(cores).isdigit() else None,
        task_cpus=int(conf("spark.task.cpus") or 1),
    )


def needed_overhead(res: ExecutorResources, task_bytes: int) -> int:
    """memoryOverhead that lets every slot run a task of `task_bytes` vectors (JVM share included)."""
    return res.jvm_share + res.slots * task_peak_bytes(task_bytes)


def memory_advice(res: ExecutorResources, task_bytes: int) -> Optional[str]:
    """One line when the executors' Python workers cannot hold the job's tasks, else None."""
    if res.python_bytes >= res.slots * task_peak_bytes(task_bytes):
        return None
    need = needed_overhead(res, task_bytes)
    return (f"each build task peaks at about {task_peak_bytes(task_bytes) // MIB} MiB in its Python worker and an "
            f"executor runs {res.slots} at once, but its Python workers get about {res.python_bytes // MIB} MiB "
            f"(spark.executor.memoryOverhead {'default' if res.overhead is None else str(res.overhead // MIB) + 'm'}): "
            f"set spark.executor.memoryOverhead={-(-need // MIB)}m, or lower --rows-per-task")


def enforces_memory(master: Optional[str]) -> bool:
    """YARN and Kubernetes kill a container past heap + overhead; standalone workers and
    Databricks do not (there the Python workers share the node's memory beyond the heap)."""
    return master is not None and master.startswith(("yarn", "k8s://"))


def session_settings(res: ExecutorResources, task_bytes: int, env: Callable[[str], Optional[str]],
                     master: Optional[str]) -> dict:
    """Settings for a session the job creates on a cluster, where the user left them unset:
    Lance's thread pool sized to the task's slot, and where containers are enforced, the
    overhead its tasks need."""
    out = {}
    if env("spark.executorEnv.LANCE_CPU_THREADS") is None:
        out["spark.executorEnv.LANCE_CPU_THREADS"] = str(res.task_cpus)
    # numpy's BLAS (the partition assignment, assign.py) starts a thread per core of the machine
    # in every Python worker unless told; the task bounds it too (threadpoolctl), this covers the
    # import-time pool
    if env("spark.executorEnv.OPENBLAS_NUM_THREADS") is None:
        out["spark.executorEnv.OPENBLAS_NUM_THREADS"] = str(res.task_cpus)
    if (enforces_memory(master) and res.overhead is None and res.overhead_factor is None and res.pyspark is None
            and res.cores is not None):
        out["spark.executor.memoryOverhead"] = f"{-(-needed_overhead(res, task_bytes) // MIB)}m"
    return out
