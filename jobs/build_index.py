"""spark-submit entry point: `spark-submit jobs/build_index.py --uri ... --column ...`.

Thin on purpose: parsing, the session and the pipeline live in the package, where they are
tested without spark-submit. The subcommand defaults to `build`.
"""

import sys

from spark_lance_index.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = ["build", *args]
    sys.exit(main(args))
