"""What a skops model file may build: an explicit list of exact types, checked before anything is constructed.

skops builds each node of a file by importing ``module.name`` and, for several node kinds,
calling it with arguments taken from the file. scikit-learn's modules import standard-library
callables into their own namespaces (``sklearn.utils._testing.check_output``,
``sklearn.datasets._base.makedirs``...), so a rule on a name's prefix lets a file run a shell
command. The rule here names exact things instead:

- a node skops trusts by its own defaults (scikit-learn's public estimators, their losses and
  links, NumPy and SciPy ufuncs, builtins) is left to skops;
- every other node must be one of :data:`ALLOWED_NODES`, an explicit list of ``(node kind,
  type)`` pairs: the types the estimators this project supports actually hold, regenerated and
  compared by ``tests/unit/test_trusted_types.py``. The kind matters: a class trusted to be
  rebuilt from its attributes (``ObjectNode``) is not trusted to be *called* with the file's
  arguments (``ConstructorFromReduceNode``);
- each listed name must still resolve, in the installed libraries, to a class (or, for the one
  listed function, a function) defined in scikit-learn, NumPy or SciPy under that very name;
- a ``functools.partial`` node is accepted only around a listed function.

Anything else is refused in one line naming the type, before skops constructs a single object.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import zipfile
from collections.abc import Iterator
from functools import cache
from typing import Any

# (skops node kind, module.qualname) pairs outside skops' defaults that supported models hold.
# Regenerated from fitted estimators by tests/unit/test_trusted_types.py; add a pair only with a
# model kind that needs it and a test that fits that model.
ALLOWED_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("DTypeNode", "numpy.dtype"),  # a column dtype held by encoders and KMeans
        ("ObjectNode", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"),
        ("ObjectNode", "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"),
        ("ObjectNode", "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"),
        ("TreeNode", "sklearn.tree._tree.Tree"),  # decision trees, random forests, GradientBoosting
    }
)
# Functions a fitted model references (looked up, not called, when the file is read). The one
# entry: HistGradientBoosting with categorical_features="from_dtype" keeps
# FunctionTransformer(partial(check_array, dtype=..., ensure_all_finite=False)); check_array only
# validates the array it is given at predict time.
ALLOWED_FUNCTIONS: frozenset[tuple[str, str]] = frozenset({("FunctionNode", "sklearn.utils.validation.check_array")})
ALLOWED_NODES: frozenset[tuple[str, str]] = ALLOWED_CLASSES | ALLOWED_FUNCTIONS
PARTIAL = ("PartialNode", "functools.partial")
TRUSTED_ROOTS = ("sklearn", "numpy", "scipy")


class UntrustedModelFile(ValueError):
    """A skops file names a type outside the allowlist, or is not a readable skops file."""


def trusted_names(what: str, data: bytes, skops_untrusted: list[str]) -> list[str]:
    """The type names to pass to ``skops.io.loads(trusted=...)``, after checking every node of ``data``.

    ``skops_untrusted`` is ``skops.io.get_untrusted_types(data=data)``: the names skops would
    not build by its own defaults. Each node carrying one of them must be an allowed
    ``(kind, type)`` pair, resolving to what its name says; a partial must wrap an allowed
    function. Raises :class:`UntrustedModelFile` naming every refused type otherwise.
    """
    untrusted = set(skops_untrusted)
    nodes = list(_nodes(what, data))
    seen = {_name(node) for node in nodes}
    refused = {f"{name} (a name no node of the file carries)" for name in untrusted - seen}
    for node in nodes:
        name = _name(node)
        if name not in untrusted:
            continue
        pair = (str(node.get("__loader__")), name)
        if pair == PARTIAL:
            func = node.get("content", {}).get("func", {}) if isinstance(node.get("content"), dict) else {}
            wrapped = _name(func) if isinstance(func, dict) else repr(func)
            if not isinstance(func, dict) or (func.get("__loader__"), wrapped) not in ALLOWED_FUNCTIONS:
                refused.add(f"{name} (around {wrapped})")
            continue
        if pair not in ALLOWED_NODES:
            refused.add(name if pair[0] in ("ObjectNode", "FunctionNode") else f"{name} (as {pair[0]})")
        elif not _resolves_as_listed(*pair):
            refused.add(f"{name} (does not resolve to a {_kind(pair)} defined in {', '.join(TRUSTED_ROOTS)})")
    if refused:
        raise UntrustedModelFile(
            f"{what} holds types outside the allowlist: {', '.join(sorted(refused))}; "
            "nothing was built from it (see batchscore.models.trusted_types)"
        )
    return sorted(untrusted)


def _nodes(what: str, data: bytes) -> Iterator[dict[str, Any]]:
    """Every node of the file's schema (a dict carrying ``__loader__``), depth first."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError) as exc:
        raise UntrustedModelFile(f"{what}: not a readable skops file: {exc}") from exc
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _name(node: dict[str, Any]) -> str:
    return f"{node.get('__module__', '')}.{node.get('__class__', '')}"


def _kind(pair: tuple[str, str]) -> str:
    return "function" if pair in ALLOWED_FUNCTIONS else "class"


@cache
def _resolves_as_listed(loader: str, name: str) -> bool:
    """True when ``name`` imports as a class (or the listed function) defined in that very module, under that name."""
    module_name, _, attr = name.rpartition(".")
    if module_name.split(".", 1)[0] not in TRUSTED_ROOTS:
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    defined = inspect.isfunction(obj) if (loader, name) in ALLOWED_FUNCTIONS else isinstance(obj, type)
    return defined and getattr(obj, "__module__", None) == module_name and getattr(obj, "__qualname__", None) == attr
