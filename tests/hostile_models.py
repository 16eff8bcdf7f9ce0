"""Hand-made hostile skops files, as an attacker would write them: a real model with one node swapped.

skops writes a JSON schema of nodes; an attacker edits it. Each file here is a fitted
LogisticRegression whose ``C`` attribute is replaced by a node that, if skops built it, would
call something with arguments from the file: a standard-library callable that scikit-learn
re-exports, a class outside the allowlist, or a scikit-learn function. Every payload creates
``marker`` (a file or folder), so a test proves nothing ran by the marker staying absent.
"""

from __future__ import annotations

import io
import json
import zipfile
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

_IDS = count(10**12)


def _fitted_base() -> tuple[dict[str, Any], bytes]:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    data = sio.dumps(LogisticRegression().fit(x, [0, 0, 1, 1]))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("schema.json")), data


def _value(value: object) -> dict[str, Any]:
    """A skops node for a plain value (str, number, or a list/tuple of them)."""
    if isinstance(value, list | tuple):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {
            "__class__": kind,
            "__module__": "builtins",
            "__loader__": "TupleNode" if kind == "tuple" else "ListNode",
            "content": [_value(v) for v in value],
            "__id__": next(_IDS),
        }
    return {
        "__class__": type(value).__name__,
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
        "__id__": next(_IDS),
    }


def _with_node(node: dict[str, Any]) -> bytes:
    schema, data = _fitted_base()
    schema["content"]["content"]["C"] = node
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as base, zipfile.ZipFile(out, "w") as archive:
        for item in base.namelist():  # the arrays the model's other attributes need
            archive.writestr(item, json.dumps(schema) if item == "schema.json" else base.read(item))
    return out.getvalue()


def calling(module: str, name: str, *args: object) -> bytes:
    """A file whose node calls ``module.name(*args)`` when built (skops' ConstructorFromReduceNode)."""
    return _with_node(
        {
            "__class__": name,
            "__module__": module,
            "__loader__": "ConstructorFromReduceNode",
            "content": _value(tuple(args)),
            "__id__": next(_IDS),
        }
    )


def holding_function(module: str, name: str) -> bytes:
    """A file holding the function ``module.name`` (skops' FunctionNode: looked up, to be called later)."""
    return _with_node({"__class__": name, "__module__": module, "__loader__": "FunctionNode", "__id__": next(_IDS)})


def hostile_files(marker: Path) -> dict[str, bytes]:
    """Each way in, by name: every one would create ``marker`` if anything ran."""
    return {
        # standard-library callables re-exported by scikit-learn subpackages
        "utils._testing.check_output": calling("sklearn.utils._testing", "check_output", ["touch", str(marker)]),
        "datasets._base.makedirs": calling("sklearn.datasets._base", "makedirs", str(marker)),
        "datasets._base.NamedTemporaryFile": calling(
            "sklearn.datasets._base",
            "NamedTemporaryFile",
            "w+b",
            -1,
            None,
            None,
            "",
            str(marker.name),
            str(marker.parent),
            False,
        ),
        # a NumPy class outside the allowlist whose constructor writes a file
        "numpy.memmap": calling("numpy", "memmap", str(marker), "uint8", "w+", 0, [1]),
        # a scikit-learn function that writes a file
        "datasets.dump_svmlight_file": calling("sklearn.datasets", "dump_svmlight_file", [[1.0]], [1.0], str(marker)),
        # an allowlisted class, but called with the file's arguments instead of rebuilt from its state
        "TreePredictor called": calling(
            "sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor", str(marker), [], []
        ),
    }
