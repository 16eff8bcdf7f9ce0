"""``python -m batchscore``."""

import sys

from batchscore.cli import main

sys.exit(main())
