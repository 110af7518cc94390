"""Call the installed wheel's entry point the way a Databricks python_wheel_task does.

Run with the python of a venv that has only the wheel and pyspark. It starts the session first,
as the Databricks runtime does, loads the entry point by name from the wheel's metadata, sets
sys.argv, calls it, and prints "EXIT <code>" and whether the session is still alive.
python wheel_task.py parameters|named URI [extra key=value ...] (command=update: the update job)
"""

import json
import sys
from importlib import metadata

from pyspark.sql import SparkSession

style, uri, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
spark = SparkSession.builder.master("local[2]").appName("databricks-runtime").getOrCreate()
(entry_point,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "spark-lance-index"]
function = entry_point.load()

given = dict(a.split("=", 1) for a in extra)
build_only = {} if given.get("command") == "update" else {"num-partitions": "16", "replace": "true"}
settings = {"uri": uri, "column": "vector", "rows-per-task": "2000", "verify-queries": "20", **build_only, **given}
if style == "parameters":
    args = ["build"] + [x for k, v in settings.items() for x in ((f"--{k}",) if v == "true" else (f"--{k}", v))]
else:  # named_parameters arrive as --key=value
    args = [f"--{k}={v}" for k, v in settings.items()]
sys.argv = ["spark-lance-index", *args]
try:
    function()
    code = 0
except SystemExit as e:
    code = e.code
print("EXIT", code)
print("SESSION", "alive" if spark.range(3).count() == 3 else "dead")
print(json.dumps({"module": function.__module__}))
