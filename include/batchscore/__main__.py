"""``python -m batchscore``."""

import sys

from batchscore.cli.main import main

sys.exit(main())
