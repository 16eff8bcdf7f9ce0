"""The compiled kernels over :mod:`batchscore.scoring.tree_tables` (plain Python here; numba compiles them on demand).

Nothing here imports numba: :mod:`batchscore.scoring.compiled_trees` wraps these functions with
``numba.njit(nogil=True, cache=True)`` the first time a model needs them, so a process that
scores a linear model never loads numba. Each kernel works through the rows in blocks of
``BLOCK`` rows and runs every tree over the whole block. The narrow kernel (trees of up to
64 leaves, nearly every model) compares each numeric node's threshold with the block's raw
values, one SIMD pass per node, and bins only categorical features to codes for their
tables; the wide one bins every used feature (one uint8 code each, column-major) and reads
each tree's tables (about 1 KB per feature it uses, kept in the L1 cache while used
``BLOCK`` times). Per row, the raw
prediction of output k is ``0.0 + baseline[k]`` plus tree values iteration by iteration:
scikit-learn's order of additions, so the sums are the same floating-point numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK = 256
MISSING_CODE = 255


def trailing_zeros(mask: Any) -> int:
    """The index of the lowest set bit (replaced by LLVM's ``cttz`` when compiled)."""
    mask = int(mask)
    return (mask & -mask).bit_length() - 1


def bin_block(  # noqa: PLR0917
    x: np.ndarray,
    start: int,
    stop: int,
    columns: np.ndarray,
    thresholds: np.ndarray,
    numeric: np.ndarray,
    categorical: np.ndarray,
    codes: np.ndarray,
) -> None:
    """codes[f, r] for rows start..stop of ``x`` (read at column ``columns[f]``), for the used features f.

    ``numeric`` and ``categorical`` list the used features of each kind. Numeric: the number of
    the feature's thresholds below the value (a branch-free binary search over the 256 padded
    thresholds; +inf pads, so +inf codes as the count of finite thresholds), NaN -> 255.
    Categorical: ``int(value)`` for 0 <= value < 255, else 255 (NaN, negative, past the bitsets).
    """
    m = stop - start
    for j in range(numeric.shape[0]):  # feature by feature: one threshold row and one code row at a time
        f = numeric[j]
        column = columns[f]
        t = thresholds[f]
        out = codes[f]
        for r in range(m):
            v = x[start + r, column]
            pos = 128 if t[127] < v else 0  # unrolled: each step halves the range of 256 padded thresholds
            pos += 64 if t[pos + 63] < v else 0
            pos += 32 if t[pos + 31] < v else 0
            pos += 16 if t[pos + 15] < v else 0
            pos += 8 if t[pos + 7] < v else 0
            pos += 4 if t[pos + 3] < v else 0
            pos += 2 if t[pos + 1] < v else 0
            pos += 1 if t[pos] < v else 0
            out[r] = MISSING_CODE if np.isnan(v) else pos
    for j in range(categorical.shape[0]):
        f = categorical[j]
        column = columns[f]
        out = codes[f]
        for r in range(m):
            v = x[start + r, column]
            out[r] = np.uint8(v) if (v >= 0.0) and (v < 255.0) else MISSING_CODE


def predict_narrow(  # noqa: PLR0917 (numba kernels take arrays, not objects)
    x: np.ndarray,
    columns: np.ndarray,
    thresholds: np.ndarray,
    categorical: np.ndarray,
    op_start: np.ndarray,
    op_feature: np.ndarray,
    op_threshold: np.ndarray,
    op_missing_right: np.ndarray,
    op_mask: np.ndarray,
    cat_slot_start: np.ndarray,
    cat_slots: np.ndarray,
    slot_feature: np.ndarray,
    tables: np.ndarray,
    leaf_values: np.ndarray,
    tree_output: np.ndarray,
    baseline: np.ndarray,
    ones: np.ndarray,
    out: np.ndarray,
    first: int,
    last: int,
) -> None:
    """Raw predictions ``out[row, k]`` for rows first..last when every tree has at most 64 leaves (one mask word).

    Numeric nodes are node ops over the raw values: per node, one pass over the block's
    values of its feature, ``x > threshold`` (or, where missing values go right, ``not x <=
    threshold``, true for NaN) AND-ing the node's mask in; the compiler makes each pass SIMD
    compares and masked ANDs. Categorical features are binned to codes and read their tables.
    ``x`` is row-major or column-major (column-major reads each feature's block contiguously);
    threads share the whole arrays and take row ranges, so each layout keeps one signature.
    """
    n_trees = op_start.shape[0] - 1
    n_out = baseline.shape[0]
    no_numeric = np.empty(0, np.int64)
    codes = np.empty((thresholds.shape[0], BLOCK), np.uint8)
    mask = np.empty(BLOCK, tables.dtype)
    acc = np.empty((n_out, BLOCK), np.float64)
    all_ones = ones[0]
    for start in range(first, last, BLOCK):
        stop = min(last, start + BLOCK)
        m = stop - start
        if categorical.shape[0]:
            bin_block(x, start, stop, columns, thresholds, no_numeric, categorical, codes)
        for k in range(n_out):
            for r in range(m):
                acc[k, r] = 0.0
                acc[k, r] += baseline[k]
        for t in range(n_trees):
            for r in range(m):
                mask[r] = all_ones
            for o in range(op_start[t], op_start[t + 1]):
                values = x[start:stop, columns[op_feature[o]]]
                threshold = op_threshold[o]
                bits = op_mask[o]
                keep = bits | ~bits  # all ones, in the mask's type, as a constant the compiler sees
                if op_missing_right[o]:  # branch-free: SIMD compares, selects and ANDs
                    for r in range(m):
                        mask[r] &= keep if values[r] <= threshold else bits
                else:
                    for r in range(m):
                        mask[r] &= bits if values[r] > threshold else keep
            for c in range(cat_slot_start[t], cat_slot_start[t + 1]):
                s = cat_slots[c]
                t0 = tables[s]
                c0 = codes[slot_feature[s]]
                for r in range(m):
                    mask[r] &= t0[c0[r]]
            k = tree_output[t]
            leaves = leaf_values[t]
            for r in range(m):
                acc[k, r] += leaves[trailing_zeros(mask[r])]
        for r in range(m):
            for k in range(n_out):
                out[start + r, k] = acc[k, r]


def predict_wide(  # noqa: PLR0917 (numba kernels take arrays, not objects)
    x: np.ndarray,
    columns: np.ndarray,
    thresholds: np.ndarray,
    numeric: np.ndarray,
    categorical: np.ndarray,
    slot_start: np.ndarray,
    slot_feature: np.ndarray,
    tables: np.ndarray,
    leaf_values: np.ndarray,
    tree_output: np.ndarray,
    baseline: np.ndarray,
    ones: np.ndarray,
    out: np.ndarray,
    first: int,
    last: int,
) -> None:
    """Raw predictions for rows first..last when some tree has more than 64 leaves: masks of several uint64 words."""
    n_trees = slot_start.shape[0] - 1
    n_out = baseline.shape[0]
    words = tables.shape[1]
    codes = np.empty((thresholds.shape[0], BLOCK), np.uint8)
    mask = np.empty((words, BLOCK), tables.dtype)
    acc = np.empty((n_out, BLOCK), np.float64)
    all_ones = ones[0]
    for start in range(first, last, BLOCK):
        stop = min(last, start + BLOCK)
        m = stop - start
        bin_block(x, start, stop, columns, thresholds, numeric, categorical, codes)
        for k in range(n_out):
            for r in range(m):
                acc[k, r] = 0.0
                acc[k, r] += baseline[k]
        for t in range(n_trees):
            for w in range(words):
                for r in range(m):
                    mask[w, r] = all_ones
            for s in range(slot_start[t], slot_start[t + 1]):
                c0 = codes[slot_feature[s]]
                for w in range(words):
                    t0 = tables[s, w]
                    for r in range(m):
                        mask[w, r] &= t0[c0[r]]
            k = tree_output[t]
            values = leaf_values[t]
            for r in range(m):
                w = 0
                while mask[w, r] == 0:  # the exit leaf's bit is always set, so this stops
                    w += 1
                acc[k, r] += values[64 * w + trailing_zeros(mask[w, r])]
        for r in range(m):
            for k in range(n_out):
                out[start + r, k] = acc[k, r]


def _allow_wide_vectors(numba: Any) -> None:
    """Let LLVM use 512-bit vectors on a CPU with AVX-512 (it keeps to 256 bits by default there).

    The node ops are one compare and one masked AND per 16 rows instead of 8: about 17% less
    CPU for the whole kernel on this machine (0.39 against 0.47 CPU-s per million rows), the same
    bits (the same operations per row, in the same order). It only takes effect before numba's
    code generator starts in this process, and never overrides ``NUMBA_CPU_FEATURES``;
    ``BATCHSCORE_WIDE_VECTORS=0`` keeps LLVM's choice. numba's cache is keyed by the CPU
    features, so the kernels compiled either way never mix.
    """
    import os

    if numba.config.CPU_FEATURES is not None or os.environ.get("BATCHSCORE_WIDE_VECTORS", "1") == "0":
        return
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if all(features.get(name) for name in ("avx512f", "avx512bw", "avx512vl")):
        numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"


def compiled() -> dict[str, Any]:
    """The numba dispatchers of the two kernels (compiled on first call, or loaded from numba's cache).

    The helpers the kernels call are module globals, compiled first and put in their place,
    since a compiled function can only call compiled functions.
    """
    import numba
    from numba.cpython.unsafe.numbers import trailing_zeros as cttz

    _allow_wide_vectors(numba)

    jit = numba.njit(nogil=True, cache=True, boundscheck=False)
    module = globals()
    module["trailing_zeros"] = cttz
    if not isinstance(module["bin_block"], numba.core.registry.CPUDispatcher):
        module["bin_block"] = jit(module["bin_block"])
    return {"narrow": jit(predict_narrow), "wide": jit(predict_wide)}
