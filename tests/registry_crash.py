"""The batchscore CLI, dying the moment the registry has written a model's artifact and before its manifest.

``python -m tests.registry_crash models register ...`` (from the repo's root) is a writer
killed between its two writes, as a power cut, an OOM kill or a SIGKILL would leave it:
``os._exit`` runs no ``finally`` and no clean-up, and the process exits with :data:`CRASH_EXIT`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from batchscore.cli.main import main
from batchscore.models import storage

CRASH_EXIT = 86
_create_exclusive = storage.create_exclusive


def _create_then_die(url: str, data: bytes, **kwargs: Any) -> None:
    _create_exclusive(url, data, **kwargs)
    if "/artifacts/" in url:
        os._exit(CRASH_EXIT)


if __name__ == "__main__":
    storage.create_exclusive = _create_then_die
    sys.exit(main(sys.argv[1:]))
