"""``python -m zoo`` is ``python -m zoo.run``."""

import sys

from .run import main

sys.exit(main())
