"""``python -m cardiac_sr``: the same as the ``cardiac-sr`` command."""

import sys

from .cli import main

sys.exit(main())
