"""``python -m psyche_utils.evaluation``: see ``psyche_utils.evaluation.cli``."""

import sys

from psyche_utils.evaluation.cli import main

sys.exit(main())
