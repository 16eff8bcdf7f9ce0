"""``load_kernels`` (the forkserver's preload) leaves a task's first kernel call nothing to import."""

import subprocess
import sys

PROBE = """
import sys
from batchscore.scoring import compiled_trees
compiled_trees.{call}
before = set(sys.modules)
from numba.core.registry import cpu_target
cpu_target.typing_context.refresh()  # what a dispatcher's first compile (or cache load) does first
cpu_target.target_context.refresh()
print(len(set(sys.modules) - before))
"""


def _imported_by_first_call(call: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=call)], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.split()[-1])


def test_the_preload_fills_numbas_contexts_so_the_first_call_imports_nothing() -> None:
    # Only the dispatchers (the preload before this change): the first call still imported ~230 modules.
    assert _imported_by_first_call('_kernel("narrow")') > 100
    assert _imported_by_first_call("load_kernels()") == 0
