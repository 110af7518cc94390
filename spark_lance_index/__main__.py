"""`python -m spark_lance_index build ...`"""

import sys

from .cli import main

sys.exit(main())
