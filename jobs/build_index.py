"""spark-submit entry point: `spark-submit jobs/build_index.py --uri ... --column ...`.

Thin on purpose: parsing, the session and the pipeline live in the package, where they are
tested without spark-submit. The subcommand defaults to `build`.
"""

from spark_lance_index.cli import entry

if __name__ == "__main__":
    entry()
