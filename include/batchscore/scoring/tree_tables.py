"""A histogram gradient boosting model as QuickScorer tables over its own bin codes.

Every split of a ``HistGradientBoosting*`` model compares a feature with one of that
feature's bin thresholds (``_BinMapper.bin_thresholds_``), or tests a category against a
bitset. So a row can be reduced once to one uint8 code per feature, and every split
decision becomes a function of (node, code). The code of a numeric value ``x`` is the
number of the feature's thresholds below it (NaN gets code 255); because the thresholds
are strictly increasing, ``x <= threshold[i]`` holds exactly when ``code <= i``, and a
split on NaN (threshold +inf) sends every non-NaN code left, as ``predict`` does. The code
of a categorical value is its ordinal ``int(x)`` (255 for NaN, negatives and values past
255), and the decision per code is computed here from the predictor's own
``raw_left_cat_bitsets`` and the bin mapper's known categories, in the same order of tests
as scikit-learn's ``_predict_one_from_raw_data``: NaN or negative goes the missing way,
in the left bitset goes left, a known category goes right, an unknown one goes the missing way.

QuickScorer (Lucchese et al., SIGIR 2015) then finds each tree's leaf without walking:
the leaves are numbered left to right, a node that sends the row right removes the leaves
of its left subtree from a bit mask, and the exit leaf is the lowest bit left. Per tree and
per feature it uses, the AND of those masks over the tree's nodes on that feature is tabulated
for all 256 codes, so a tree costs one table load and one AND per feature it uses, without
branches. The exit leaf is never removed (it is in the left subtree only of nodes on its path
that sent the row left), and every leaf left of it is (their lowest common ancestor sent the
row right), so the lowest set bit is the leaf ``predict`` reaches.

For trees of up to 64 leaves the numeric nodes are also listed as **node ops** (vQS, the
vectorised QuickScorer of Lucchese et al., 2016): per node its feature, its threshold, where
missing values go, and the mask it applies when the row goes right. The kernel compares each
node's threshold with a block of raw values (``x <= threshold`` goes left, NaN the missing
way: ``predict``'s own comparison on the raw value, so no binning is needed), which the compiler
turns into SIMD compares and masked ANDs over many rows at once. Categorical features keep
their tables over codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING_CODE = 255
CODES = 256


@dataclass(frozen=True)
class TreeTables:
    """What the kernels read; arrays are contiguous and never written after construction.

    ``thresholds[f]``: feature f's bin thresholds padded with +inf to 256 (numeric features);
    ``numeric`` / ``categorical``: the features some split reads, of each kind;
    ``slot_start[t]:slot_start[t+1]``: tree t's slots, ``slot_feature[s]`` the feature of
    slot s and ``tables[s, w, code]`` word w of its mask; ``leaf_values[t, j]``: the value of
    tree t's j-th leaf from the left; ``tree_output[t]``: which raw output tree t adds to
    (``t % trees_per_iteration``); ``baseline[k]``: the model's baseline per output.
    ``op_start[t]:op_start[t+1]``: tree t's numeric node ops (one mask word only; empty for wider
    trees): ``op_feature``, ``op_threshold`` (the node's raw threshold), ``op_missing_right`` and
    ``op_mask`` (AND-ed in when the row goes right); ``cat_slots[cat_slot_start[t]:cat_slot_start[t+1]]``:
    tree t's slots on categorical features (the tables the node-op kernel still reads).
    """

    thresholds: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray
    slot_start: np.ndarray
    slot_feature: np.ndarray
    tables: np.ndarray
    leaf_values: np.ndarray
    tree_output: np.ndarray
    baseline: np.ndarray
    op_start: np.ndarray
    op_feature: np.ndarray
    op_threshold: np.ndarray
    op_missing_right: np.ndarray
    op_mask: np.ndarray
    cat_slot_start: np.ndarray
    cat_slots: np.ndarray

    @property
    def words(self) -> int:
        """Mask words per table entry: 1 (uint32 or uint64) up to 64 leaves, more uint64 words past that."""
        return int(self.tables.shape[1])

    @property
    def n_trees(self) -> int:
        return int(self.tree_output.shape[0])


class Unsupported(ValueError):
    """The model has something the tables cannot represent exactly; it is scored by scikit-learn."""


def _in_bitset(bitset: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Bit ``code`` of a scikit-learn bitset (8 uint32 words, bit c in word c >> 5)."""
    return ((bitset[codes >> 5] >> (codes & 31)) & 1).astype(bool)


def _leaf_order(nodes: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(leaf node ids left to right, per node the mask bits of the leaves under it as a Python int)."""
    order: list[int] = []
    under = [0] * len(nodes)
    stack = [(0, False)]
    while stack:  # post-order: children's masks are known when a node is finished
        node, done = stack.pop()
        if nodes[node]["is_leaf"]:
            under[node] = 1 << len(order)
            order.append(node)
        elif done:
            under[node] = under[int(nodes[node]["left"])] | under[int(nodes[node]["right"])]
        else:
            stack += [(node, True), (int(nodes[node]["right"]), False), (int(nodes[node]["left"]), False)]
    return order, np.array(under, dtype=object)


def _numeric_right(node: Any, thresholds: np.ndarray) -> np.ndarray:
    """Per code, whether a numeric split sends it right (code <= i goes left, i the threshold's index)."""
    threshold = float(node["num_threshold"])
    if threshold == np.inf:
        index = len(thresholds)  # a split on NaN: every non-NaN value goes left
    else:
        index = int(np.searchsorted(thresholds, threshold))
        if index >= len(thresholds) or thresholds[index] != threshold:
            raise Unsupported(f"a split threshold {threshold!r} is not one of its feature's bin thresholds")
    right = np.arange(CODES) > index
    right[MISSING_CODE] = not node["missing_go_to_left"]
    return right


def _categorical_right(node: Any, raw_left: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per code, whether a categorical split sends it right, in ``_predict_one_from_raw_data``'s order."""
    codes = np.arange(CODES)
    missing_right = not node["missing_go_to_left"]
    left = _in_bitset(raw_left, codes)
    right = np.where(left, False, np.where(_in_bitset(known, codes), True, missing_right))
    right[MISSING_CODE] = missing_right
    return right


def _thresholds(bin_mapper: Any, categorical: np.ndarray) -> np.ndarray:
    thresholds = np.full((len(bin_mapper.bin_thresholds_), CODES), np.inf)
    for f, given in enumerate(bin_mapper.bin_thresholds_):
        values = np.asarray(given, dtype=np.float64)
        if categorical[f]:
            continue
        if len(values) >= MISSING_CODE or np.any(np.diff(values) <= 0) or np.isnan(values).any():
            raise Unsupported(f"feature {f}'s bin thresholds are not {MISSING_CODE - 1} or fewer increasing numbers")
        thresholds[f, : len(values)] = values
    return thresholds


def build_tables(trees: Any) -> TreeTables:
    """The tables of a fitted ``HistGradientBoosting*`` model; raises :class:`Unsupported` when not exact."""
    bin_mapper = trees._bin_mapper
    categorical = np.asarray(bin_mapper.is_categorical_, dtype=np.uint8)
    thresholds = _thresholds(bin_mapper, categorical)
    known, f_idx_map = bin_mapper.make_known_categories_bitsets()
    predictors = [p for iteration in trees._predictors for p in iteration]
    n_leaves = max(int(p.nodes["is_leaf"].sum()) for p in predictors)
    words = 1 if n_leaves <= 64 else -(-n_leaves // 64)
    dtype = np.uint32 if n_leaves <= 32 else np.uint64
    word_bits = 32 if dtype is np.uint32 else 64
    full = (1 << word_bits) - 1
    slot_start: list[int] = [0]
    slot_feature: list[int] = []
    tables: list[np.ndarray] = []
    leaf_values = np.zeros((len(predictors), words * word_bits), dtype=np.float64)
    used = np.zeros(len(categorical), dtype=bool)
    ops: list[tuple[int, float, bool, int]] = []
    op_start, cat_slot_start = [0], [0]
    cat_slots: list[int] = []
    for t, predictor in enumerate(predictors):
        nodes = predictor.nodes
        order, under = _leaf_order(nodes)
        leaf_values[t, : len(order)] = nodes["value"][order]
        per_feature: dict[int, np.ndarray] = {}
        for i in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
            node = nodes[i]
            f = int(node["feature_idx"])
            if not 0 <= f < len(categorical):  # the kernels index without bounds checks
                raise Unsupported(f"a split reads feature {f}, past the model's {len(categorical)} features")
            if bool(node["is_categorical"]) != bool(categorical[f]):
                raise Unsupported(f"a split on feature {f} disagrees with the bin mapper on whether it is categorical")
            if categorical[f]:
                right = _categorical_right(
                    node, predictor.raw_left_cat_bitsets[node["bitset_idx"]], known[f_idx_map[f]]
                )
            else:
                right = _numeric_right(node, bin_mapper.bin_thresholds_[f])
            keep = ~under[int(node["left"])]  # a node sending the row right removes its left subtree's leaves
            if not categorical[f]:
                ops.append((f, float(node["num_threshold"]), not bool(node["missing_go_to_left"]), keep & full))
            table = per_feature.setdefault(f, np.full((words, CODES), full, dtype=dtype))
            for w in range(words):
                table[w, right] &= dtype((keep >> (w * word_bits)) & full)
        for f in sorted(per_feature):
            if categorical[f]:
                cat_slots.append(len(slot_feature))
            slot_feature.append(f)
            tables.append(per_feature[f])
            used[f] = True
        slot_start.append(len(slot_feature))
        op_start.append(len(ops))
        cat_slot_start.append(len(cat_slots))
    if not tables:  # every tree is a single leaf: one all-ones slot keeps the kernel's shapes
        slot_feature.append(0)
        tables.append(np.full((words, CODES), full, dtype=dtype))
        slot_start = [0] + [1] * len(predictors)
    per_iteration = len(trees._predictors[0])
    if words > 1:  # the wide kernel reads every feature's tables; node ops fit one mask word
        ops, op_start = [], [0] * (len(predictors) + 1)
    return TreeTables(
        thresholds=np.ascontiguousarray(thresholds),
        numeric=np.flatnonzero(used & (categorical == 0)).astype(np.int64),
        categorical=np.flatnonzero(used & (categorical == 1)).astype(np.int64),
        slot_start=np.asarray(slot_start, dtype=np.int64),
        slot_feature=np.asarray(slot_feature, dtype=np.int64),
        tables=np.ascontiguousarray(np.stack(tables)),
        leaf_values=leaf_values,
        tree_output=np.arange(len(predictors), dtype=np.int64) % per_iteration,
        baseline=np.ascontiguousarray(trees._baseline_prediction, dtype=np.float64).reshape(-1),
        op_start=np.asarray(op_start, dtype=np.int64),
        op_feature=np.asarray([op[0] for op in ops], dtype=np.int64),
        op_threshold=np.asarray([op[1] for op in ops], dtype=np.float64),
        op_missing_right=np.asarray([op[2] for op in ops], dtype=np.bool_),
        op_mask=np.asarray([op[3] for op in ops], dtype=dtype),
        cat_slot_start=np.asarray(cat_slot_start, dtype=np.int64),
        cat_slots=np.asarray(cat_slots, dtype=np.int64),
    )
