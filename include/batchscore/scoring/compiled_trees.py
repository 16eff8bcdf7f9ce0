"""A compiled scorer for scikit-learn's histogram gradient boosting models, bit for bit the same.

Scoring is most of a run's CPU, and the usual model of a fraud or churn sweep is a
``HistGradientBoostingClassifier``. Every tree finds its leaf with QuickScorer's bit masks,
a block of rows at a time: each numeric node is one SIMD pass comparing its threshold with
the block's raw values (vQS, node ops: ``predict``'s own comparison, so no binning), and
categorical features read tables over their codes (:mod:`batchscore.scoring.tree_tables` says
why the decisions are exactly ``predict``'s, NaN, +-inf and native categories included;
:mod:`batchscore.scoring.tree_kernels` holds the kernels numba compiles, which release the GIL).

The result is identical, not close: the same leaves, their values summed in scikit-learn's
order (baseline, then iteration by iteration), and the model's own link (sigmoid, softmax,
exp...). Each scorer also checks itself against the model on the first rows it sees and, if
they differ in any bit, logs a warning and hands every later call to scikit-learn.

Candidates measured on this machine (CPU time, one thread, the bench model: 96 trees of 31
leaves over 20 features, 300k rows, 1% NaN; a shared machine at load 10-16, so ~1.3x a quiet one):

    scikit-learn's predictor (raw float walk)                 56-75 ns per tree-row  5.4-7.2 CPU-s/M rows
    the earlier compiled walk (8 rows in lock step, floats)   35    ns               3.4
    bin codes + lock-step walk over 256-bit node decisions    28    ns               2.7
    bin codes + QuickScorer, one feature table per pass       5.6-6.5 ns             0.53-0.62 + binning
    bin codes + QuickScorer, four feature tables per pass     4.4-4.9 ns             0.42-0.47 + binning
      (eight per pass: 5.9-6.5 ns; rows outer, masks in registers: 8.9 ns)
    binning: branch-free search over 256 padded thresholds    ~1.7-2 ns per tree-row 0.16-0.20
      (a coarse lookup table then a linear fix-up: 0.7 CPU-s/M, slower)
    binning fused with the four-table passes (until 2026-12-02) ~6.4 ns per tree-row 0.55-0.65 CPU-s/M
      (over a column-major matrix: 6.36 ns, row-major 6.23 at load 16; the layout's gain is in
      building the matrix: 0.06 CPU-s/M for 24 contiguous column writes against 0.42 row-major)

2026-12-02, 500k rows (100k for the last line), best of 3-30 interleaved runs, load 6-12 (the
compiler's vectorisation checked in the assembly: the table loop has no gathers, since the
compiler cannot prove the gathered tables do not alias the masks it writes; node ops are
SIMD compares and masked ANDs):

    the four-table passes above, same minutes                 6.7-8.0 ns per tree-row 0.64-0.77 CPU-s/M
    bin codes + node ops (one SIMD pass per node, uint8 codes) 7.7 ns                0.74
    raw values + node ops (no binning), four nodes per pass   7.6 ns                 0.73
    **raw values + node ops, one node per pass (this module)** 5.0-5.4 ns            0.48-0.51
      (the same kernels allowed 512-bit vectors, NUMBA_CPU_FEATURES with -prefer-256-bit:
      codes + node ops 4.6 ns, raw node ops 4.5 ns: 0.44 CPU-s/M)
    in scripts/benchkit/scoring_steps.py, 1M rows, load 8-10: main's kernel 0.77-1.01,
      this one 0.59-0.60 CPU-s/M

Models qualify when bare or as a Pipeline's last step. A Pipeline's ``ColumnTransformer`` of
imputers, scalers and encoders is computed from the Arrow batch itself when
:mod:`batchscore.scoring.arrow_steps` reproduces it exactly (else it transforms the pandas frame,
as does a model's own categorical encoder); any other estimator keeps scikit-learn's own code
(``accelerate`` returns it unchanged). ``BATCHSCORE_COMPILED_TREES=0``
turns the compiled trees off.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from batchscore import numba_cache
from batchscore.scoring.arrow_steps import ArrowSteps, NotReproduced, compile_steps
from batchscore.scoring.features import ArrowRows
from batchscore.scoring.tree_tables import TreeTables, Unsupported, build_tables

log = logging.getLogger(__name__)

SELF_CHECK_ROWS = 512
MIN_ROWS_PER_THREAD = 20_000
_ACCELERATED: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


_kernels: dict[str, Any] = {}
_KERNEL_LOCK = threading.Lock()


def numba_cache_dir() -> str | None:
    """Where numba keeps the tree kernels (:func:`batchscore.numba_cache.numba_cache_dir` says how it is chosen)."""
    return numba_cache.numba_cache_dir(__file__)


def _kernel(name: str) -> Any:
    """A kernel of :mod:`batchscore.scoring.tree_kernels`: compiled on first use, then from numba's disk cache."""
    with _KERNEL_LOCK:  # one set of dispatchers per process, however many threads ask at once
        if not _kernels:
            numba_cache_dir()
            from batchscore.scoring import tree_kernels

            _kernels.update(tree_kernels.compiled())
        return _kernels[name]


def load_kernels() -> None:
    """Import numba, make the kernels' dispatchers and fill numba's CPU contexts now (a forkserver's preload).

    The first kernel call of a process, even one answered from numba's disk cache, first
    fills numba's typing and target contexts (imports and registries, no threads): about 0.25
    CPU-s of every slice task's model load until it moved here (``airflow/warm_start``).
    """
    _kernel("narrow")
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def _column_map(model: Any, columns: Sequence[str]) -> np.ndarray | None:
    """Model feature index -> position in the frame's columns, or None when they do not match."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return np.arange(len(columns)) if model.n_features_in_ == len(columns) else None
    position = {name: j for j, name in enumerate(columns)}
    if len(names) != len(columns) or any(str(n) not in position for n in names):
        return None
    return np.array([position[str(n)] for n in names], dtype=np.int64)


ROW_MAJOR_CHUNK_ROWS = 16_384


def _walk(  # noqa: PLR0917 (the kernel's own arguments, passed through)
    kernel: Callable[..., None], x: np.ndarray, args: tuple[np.ndarray, ...], out: np.ndarray, a: int, b: int
) -> None:
    """Rows ``[a, b)`` of ``x`` through ``kernel`` into ``out``; a row-major ``x`` a column-major chunk at a time.

    The node ops read one feature over a block of rows, contiguous only in a column-major
    matrix: over a row-major one (a frame scikit-learn's ColumnTransformer transformed, a
    caller's array) they ran at 9.2 CPU-s per million rows against 0.68. Copying a chunk
    into column-major order costs a fraction of that, and the values are the same.
    """
    if x.flags.f_contiguous:
        kernel(x, *args, out, a, b)
        return
    for start in range(a, b, ROW_MAJOR_CHUNK_ROWS):
        stop = min(b, start + ROW_MAJOR_CHUNK_ROWS)
        chunk = np.asfortranarray(x[start:stop])
        chunk.flags.writeable = False  # the signature the column-major frames use
        kernel(chunk, *args, out[start:stop], 0, stop - start)


def enabled() -> bool:
    """On unless ``BATCHSCORE_COMPILED_TREES=0`` (to compare, or to rule it out)."""
    return os.environ.get("BATCHSCORE_COMPILED_TREES", "1") != "0"


def _trees(model: Any) -> tuple[Any, Any]:
    """(the steps before the trees or None, the gradient boosting model) of a bare model or a Pipeline."""
    from sklearn.pipeline import Pipeline

    if type(model) is Pipeline and len(model.steps) > 1:
        return model[:-1], model.steps[-1][1]
    return None, model


def supports(model: Any) -> bool:
    """A fitted HistGradientBoosting classifier or regressor, bare or ending a Pipeline (numeric or categorical)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    model = _trees(model)[1]
    if type(model) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return False
    return bool(getattr(model, "_predictors", None)) and hasattr(model, "_bin_mapper")


class CompiledTrees:
    """Stands in for the model in ``predict_proba`` / ``predict``; everything else is the model's."""

    def __init__(
        self,
        model: Any,
        columns: Sequence[str],
        column_map: np.ndarray,
        tables: TreeTables,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.columns = tuple(columns)
        self._prep, trees = _trees(model)  # a Pipeline's steps transform, the compiled walk replaces its model
        self._trees = trees
        self._encoder = getattr(trees, "_preprocessor", None)  # native categories: the model's own OrdinalEncoder
        self._loss = trees._loss
        self._classes = getattr(trees, "classes_", None)
        self.tables = tables
        self._column_map = np.ascontiguousarray(column_map, dtype=np.int64)
        self._ones = np.array([np.iinfo(tables.tables.dtype).max], dtype=tables.tables.dtype)
        self._kernel_name = "narrow" if tables.words == 1 else "wide"
        self._masks = np.ascontiguousarray(tables.tables[:, 0, :]) if tables.words == 1 else tables.tables
        self._verified = False
        self._fallback = False
        self._check_lock = threading.Lock()
        from threadpoolctl import ThreadpoolController

        self._openmp = ThreadpoolController().select(user_api="openmp")  # scanned once: a scan costs ~5 ms
        self._width = int(trees.n_features_in_) if self._prep is not None or self._encoder is not None else len(columns)
        self._steps = self._arrow_steps(kinds)
        # Compile (or load from cache) now, not mid-part: the column-major layout of frames and Arrow
        # steps, and the row-major one scikit-learn's ColumnTransformer gives when it transforms.
        self.raw_predict(np.zeros((2, self._width), order="F"), 1)
        if self._prep is not None and self._steps is None:
            self.raw_predict(np.zeros((2, self._width)), 1)

    def _arrow_steps(self, kinds: Mapping[str, str] | None) -> ArrowSteps | None:
        """The Pipeline's steps compiled over Arrow, or None (no steps, no kinds, or not reproduced exactly)."""
        if self._prep is None or self._encoder is not None or kinds is None:
            return None
        try:
            steps = compile_steps(self._prep, dict(kinds))
        except NotReproduced as exc:
            log.info("a Pipeline's steps transform in scikit-learn: %s", exc)
            return None
        return steps if steps.width == self._width else None

    @property
    def reads_arrow(self) -> bool:
        """Whether to hand it :class:`ArrowRows` (its steps run over Arrow) rather than a pandas frame."""
        return self._steps is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)  # classes_, n_features_in_, ... come from the model

    def _matrix(self, frame: Any) -> np.ndarray:
        """The frame as the float64 matrix the trees split on (a column-major view for ``to_model_frame``'s frames).

        :class:`ArrowRows` go through the compiled steps; otherwise a Pipeline's earlier steps and a
        model's own categorical encoder run as scikit-learn runs them.
        """
        if isinstance(frame, ArrowRows):
            matrix = self._steps.matrix(frame.table) if self._steps is not None else None
            if matrix is not None:
                return matrix
            frame = frame.frame()  # a batch scikit-learn must see (and perhaps refuse) itself
        if self._prep is not None:
            frame = self._prep.transform(frame)
            if hasattr(frame, "toarray"):  # a sparse encoder's output
                frame = frame.toarray()
        elif hasattr(frame, "columns") and tuple(map(str, frame.columns)) != self.columns:
            raise ValueError(f"frame columns {list(frame.columns)} are not the scorer's {list(self.columns)}")
        if self._encoder is not None:
            frame = self._encoder.transform(self._for_model(frame) if self._prep is None else frame)
        matrix = np.asarray(frame, dtype=np.float64)
        return matrix if matrix.flags.f_contiguous or matrix.flags.c_contiguous else np.ascontiguousarray(matrix)

    def raw_predict(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """The model's raw predictions (before the link), shape (rows, trees per iteration)."""
        if x.ndim != 2 or x.shape[1] != self._width:  # the kernel does not bounds-check its reads
            raise ValueError(f"expected {self._width} feature columns, got an array of shape {x.shape}")
        kernel: Callable[..., None] = _kernel(self._kernel_name)
        t = self.tables
        out = np.empty((x.shape[0], t.baseline.shape[0]), dtype=np.float64)
        args: tuple[np.ndarray, ...]
        if self._kernel_name == "narrow":
            args = (self._column_map, t.thresholds, t.categorical, t.op_start, t.op_feature, t.op_threshold)
            args += (t.op_missing_right, t.op_mask, t.cat_slot_start, t.cat_slots, t.slot_feature, self._masks)
        else:
            args = (self._column_map, t.thresholds, t.numeric, t.categorical, t.slot_start, t.slot_feature)
            args += (self._masks,)
        args += (t.leaf_values, t.tree_output, t.baseline, self._ones)
        if x.dtype != np.float64 or not (x.flags.c_contiguous or x.flags.f_contiguous):
            x = np.ascontiguousarray(x, dtype=np.float64)
        x = x.view()
        x.flags.writeable = False  # one compiled signature per layout, whether or not the caller's array was writable
        n = threads or os.cpu_count() or 1
        n = max(1, min(n, x.shape[0] // MIN_ROWS_PER_THREAD))
        if n == 1:
            _walk(kernel, x, args, out, 0, x.shape[0])
            return out
        bounds = np.linspace(0, x.shape[0], n + 1).astype(int)
        with ThreadPoolExecutor(n, thread_name_prefix="trees") as pool:
            for future in [pool.submit(_walk, kernel, x, args, out, a, b) for a, b in itertools.pairwise(bounds)]:
                future.result()
        return out

    def _threads(self) -> int | None:
        """The calling thread's OpenMP limit, as scikit-learn would use it (``threadpool_limits`` sets it)."""
        limits = [lib.num_threads for lib in self._openmp.lib_controllers]
        return min(limits) if limits else None

    def _self_check(self, frame: Any, mine: np.ndarray, method: str) -> None:
        """Compare with scikit-learn on the first rows once; any difference switches to scikit-learn."""
        with self._check_lock:
            if self._verified:
                return
            rows = min(len(mine), SELF_CHECK_ROWS)
            expected = self._sklearn(frame[:rows], method)
            if not np.array_equal(expected, mine[:rows], equal_nan=True):
                log.warning(
                    "compiled trees differ from scikit-learn's %s on the first rows; using scikit-learn", method
                )
                self._fallback = True
            self._verified = True

    def _for_model(self, frame: Any) -> Any:
        """The frame with its columns in the model's own order, for scikit-learn's calls."""
        names = getattr(self.model, "feature_names_in_", None)
        if not hasattr(frame, "columns"):
            return frame
        if names is None:
            return frame.to_numpy()  # fitted on a bare array: no names to check (nor to warn about)
        return frame[list(names)] if list(frame.columns) != list(names) else frame

    def _sklearn(self, frame: Any, method: str) -> np.ndarray:
        if isinstance(frame, ArrowRows):
            frame = frame.frame()
        return np.asarray(getattr(self.model, method)(self._for_model(frame)))

    def _from_raw(self, raw: np.ndarray, method: str) -> np.ndarray:
        """What scikit-learn's ``method`` returns for these raw predictions (same link, same tie rule)."""
        if method == "predict_proba":
            return np.asarray(self._loss.predict_proba(raw))
        if self._classes is not None:
            encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
            return np.asarray(self._classes[encoded])
        return np.asarray(self._loss.link.inverse(raw.ravel()))

    def _score(self, frame: Any, method: str) -> np.ndarray:
        if self._fallback:
            return self._sklearn(frame, method)
        result = self._from_raw(self.raw_predict(self._matrix(frame), self._threads()), method)
        if not self._verified and len(result):
            self._self_check(frame, result, method)
            if self._fallback:
                return self._sklearn(frame, method)
        return result

    def predict_proba(self, frame: Any) -> np.ndarray:
        return self._score(frame, "predict_proba")

    def predict(self, frame: Any) -> np.ndarray:
        return self._score(frame, "predict")


def accelerate(model: Any, columns: Sequence[str], kinds: Mapping[str, str] | None = None) -> Any:
    """The compiled scorer for ``model`` fed frames with ``columns``, or the model itself when it does not qualify.

    ``kinds`` (column -> ``numeric`` / ``categorical``) lets a Pipeline's steps run over
    :class:`ArrowRows`. Kept per model object, so the parts one process scores share one scorer.
    """
    if not enabled() or not supports(model):
        return model
    prep, trees = _trees(model)
    # After a Pipeline's steps, or the model's own encoder, the columns are the ones the trees split on.
    if prep is None and getattr(trees, "_preprocessor", None) is None:
        column_map = _column_map(model, columns)
    else:
        column_map = np.arange(trees.n_features_in_)
    if column_map is None:
        return model
    key = tuple(columns) + tuple(f"{c}:{k}" for c, k in sorted((kinds or {}).items()))
    with _LOCK:
        per_model = _ACCELERATED.setdefault(model, {})
        if key not in per_model:
            try:
                tables = build_tables(trees)
            except Unsupported as exc:
                log.info("scoring with scikit-learn: %s", exc)
                return model
            per_model[key] = CompiledTrees(model, columns, column_map, tables, kinds)
            log.info(
                "scoring %s with compiled trees (%d trees, %d feature tables)",
                type(trees).__name__ if prep is None else f"Pipeline(..., {type(trees).__name__})",
                tables.n_trees,
                len(tables.slot_feature),
            )
        return per_model[key]
