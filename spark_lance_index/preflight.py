"""Preflight: the executors can run the job, with the same libraries as the driver.

The classic failure of Python jobs on clusters is a node without a library, or with another
version of it. A missing pylance would otherwise show only when the build tasks fail, after
training; another pylance version is worse, since segments written by two engine versions may
not fit together. One tiny task per executor slot reports what it imports; the driver compares.
Plain Python, no Spark: `spark.run_preflight` ships `node_versions` to the executors.
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from .errors import PreflightError

# (module to import, the name users know it by)
LIBRARIES = (("lance", "pylance"), ("pyarrow", "pyarrow"), ("numpy", "numpy"),
             ("spark_lance_index", "spark-lance-index"))


@dataclass(frozen=True)
class NodeVersions:
    """What one Python process imports: {library: version, or None when it cannot be imported}."""

    host: str
    python: str  # major.minor
    versions: tuple[tuple[str, Optional[str]], ...]

    def describe(self) -> str:
        libs = ", ".join(f"{name} {version or 'MISSING'}" for name, version in self.versions)
        return f"{libs}, python {self.python}"


def node_versions(_: object = None) -> NodeVersions:
    """Import each library here and report its version (runs on the driver and on executors)."""
    found: list[tuple[str, Optional[str]]] = []
    for module, name in LIBRARIES:
        try:
            found.append((name, str(getattr(importlib.import_module(module), "__version__", "unknown"))))
        except Exception:  # ImportError, or a broken install failing on import
            found.append((name, None))
    return NodeVersions(f"{socket.gethostname()}:{os.getpid()}", ".".join(platform.python_version_tuple()[:2]),
                        tuple(found))


def mismatch(driver: NodeVersions, executors: Sequence[NodeVersions]) -> Optional[str]:
    """A one-line reason the executors cannot run this job, or None."""
    want = dict(driver.versions)
    for node in executors:
        host = node.host.rsplit(":", 1)[0]
        for name, version in node.versions:
            if version is None:
                return (f"executor {host} cannot import {name} (the driver has {want[name]}): install "
                        f"{name}=={want[name]} on every node, or ship an environment with --archives")
            if version != want[name]:
                return (f"executor {host} has {name} {version} and the driver {want[name]}: segments "
                        "built by two engine versions may not fit together; install the same versions "
                        f"everywhere (executor: {node.describe()}; driver: {driver.describe()})")
        if node.python != driver.python:
            return (f"executor {host} runs Python {node.python} and the driver {driver.python}: PySpark "
                    "needs the same minor version; set PYSPARK_PYTHON to a matching interpreter")
    return None


def require_driver_libraries(executors: Sequence[NodeVersions]) -> NodeVersions:
    """The driver's NodeVersions; PreflightError if an executor differs from it."""
    driver = node_versions()
    problem = mismatch(driver, executors)
    if problem:
        raise PreflightError(problem + "; nothing was written")
    return driver
