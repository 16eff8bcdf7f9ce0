"""Bounds checks on the node arrays of a loaded tree model, before anything predicts with it.

scikit-learn's tree predictors (and :mod:`batchscore.scoring.compiled_trees`) index their node arrays
with the child and feature indices stored in the file, without bounds checks. A crafted file
whose types all pass the allowlist could still point a child outside its tree and make the
first prediction read or crash outside the array (skops leaves ``TreePredictor`` out of its own
defaults for this reason). So every tree is checked once, when the file is read:

- node records have exactly scikit-learn's dtype;
- every split's children lie inside the tree, after their parent (trees are stored parent
  first, so the walk always ends at a leaf), and each node has at most one parent;
- every split's feature is one of the model's inputs, and a categorical split's bitset exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# How deep to follow attributes looking for trees: Pipeline -> ColumnTransformer -> Pipeline ->
# estimator -> list of lists of predictors is 6 levels; the margin covers nested meta-estimators.
MAX_DEPTH = 12


class CorruptTreeModel(ValueError):
    """A tree's node arrays point outside the tree or the model's inputs."""


def check_trees(what: str, model: Any) -> int:
    """Check every tree reachable from ``model``; returns how many were checked."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    checked = 0
    seen: set[int] = set()
    stack: list[tuple[Any, int, int | None]] = [(model, 0, None)]
    while stack:
        obj, depth, n_features = stack.pop()
        if id(obj) in seen or depth > MAX_DEPTH or isinstance(obj, str | bytes | np.ndarray | int | float):
            continue
        seen.add(id(obj))
        if isinstance(obj, TreePredictor):
            _check_hist_predictor(what, obj, n_features)
            checked += 1
            continue
        if isinstance(obj, Tree):
            _check_tree(what, obj)
            checked += 1
            continue
        if isinstance(obj, dict):
            children: list[Any] = list(obj.values())
        elif isinstance(obj, list | tuple):
            children = list(obj)
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".", 1)[0] == "sklearn":
            children = list(vars(obj).values())
            n_features = getattr(obj, "n_features_in_", n_features) if hasattr(obj, "_predictors") else n_features
        else:
            continue
        stack.extend((child, depth + 1, n_features) for child in children)
    return checked


def _check_hist_predictor(what: str, predictor: Any, n_features: int | None) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = predictor.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not len(nodes):
        raise CorruptTreeModel(f"{what}: a tree's nodes are not scikit-learn's node records")
    for name in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        bitsets = getattr(predictor, name)
        if (
            not isinstance(bitsets, np.ndarray)
            or bitsets.dtype != np.uint32
            or bitsets.ndim != 2
            or bitsets.shape[1] != 8
        ):
            raise CorruptTreeModel(f"{what}: a tree's {name} is not an (n, 8) uint32 array")
    splits = np.flatnonzero(nodes["is_leaf"] == 0)
    _check_children(what, len(nodes), splits, nodes["left"][splits].astype(np.int64), nodes["right"][splits])
    features = nodes["feature_idx"][splits]
    if len(splits) and (features.min() < 0 or (n_features is not None and features.max() >= n_features)):
        raise CorruptTreeModel(
            f"{what}: a split uses feature {int(features.max())} of a model with {n_features} inputs"
        )
    categorical = splits[nodes["is_categorical"][splits] != 0]
    if len(categorical) and int(nodes["bitset_idx"][categorical].max()) >= len(predictor.raw_left_cat_bitsets):
        raise CorruptTreeModel(f"{what}: a categorical split points past the tree's bitsets")


def _check_tree(what: str, tree: Any) -> None:
    left, right = np.asarray(tree.children_left, np.int64), np.asarray(tree.children_right, np.int64)
    count = int(tree.node_count)
    if len(left) != count or len(right) != count or not count:
        raise CorruptTreeModel(f"{what}: a decision tree's child arrays do not match its {count} nodes")
    splits = np.flatnonzero(left != -1)
    if np.any(right[left == -1] != -1):
        raise CorruptTreeModel(f"{what}: a decision tree node has one child")
    _check_children(what, count, splits, left[splits], right[splits])
    features = np.asarray(tree.feature, np.int64)[splits]
    if len(splits) and (features.min() < 0 or features.max() >= int(tree.n_features)):
        raise CorruptTreeModel(f"{what}: a split uses feature {int(features.max())} of a tree with {tree.n_features}")


def _check_children(what: str, count: int, splits: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    right = right.astype(np.int64)
    children = np.concatenate([left, right])
    parents = np.concatenate([splits, splits])
    if len(children) and (children.max() >= count or np.any(children <= parents)):
        raise CorruptTreeModel(f"{what}: a tree's child index points outside the tree or back to an ancestor")
    if len(np.unique(children)) != len(children):
        raise CorruptTreeModel(f"{what}: a tree node has two parents")
