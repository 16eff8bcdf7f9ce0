"""Where numba keeps the engine's compiled kernels (the tree scorer's, the COPY decoder's).

numba caches next to a kernel's source file when it can write there, else in the user's cache
directory; a read-only install on a fresh worker may have neither, so the kernels are then
cached under the temp directory (per user). ``NUMBA_CACHE_DIR`` set by the operator wins.
Call :func:`numba_cache_dir` before numba is first imported: numba reads the variable once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def numba_cache_dir(module_file: str) -> str | None:
    """The cache directory numba will use for kernels defined in ``module_file`` (None: beside it)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    here = os.path.join(os.path.dirname(os.path.abspath(module_file)), "__pycache__")
    with contextlib.suppress(OSError):
        os.makedirs(here, exist_ok=True)
    if os.access(here, os.W_OK):
        return None
    fallback = os.path.join(tempfile.gettempdir(), f"batchscore-numba-{os.getuid()}")
    os.environ["NUMBA_CACHE_DIR"] = fallback  # read once, when numba is first imported
    return fallback
