"""Where a model registry keeps what, and how its alias changes add up: the one description of its files.

Under the registry root, per model name::

    <name>/artifacts/<sha256>.skops       the artifact, named by its sha256 and written once
    <name>/versions/<n>/manifest.json     the version: created exclusively, after its artifact
    <name>/alias_changes/<seq>.json       one alias change each ({"alias", "from", "to", "at", "by"}),
                                          created exclusively: seq n+1 exists once, so changes
                                          are compare-and-swap and none is lost
    <name>/aliases.json                   (older registries) aliases before the first change above
    <name>/alias_history.json             (older registries) changes before the first change above
    <name>/versions/<n>/model.skops       (older registries) the artifact of version n

A version is its manifest: a numbered folder without one (a writer that died before writing
it) is not a version. Plain standard library, so DAG parsing can read a local registry
without importing fsspec (:func:`batchscore.airflow.dag_factory.model_suggestions`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

VERSIONS = "versions"
MANIFEST = "manifest.json"
ARTIFACTS = "artifacts"
ALIAS_CHANGES = "alias_changes"
LEGACY_ALIASES = "aliases.json"
LEGACY_HISTORY = "alias_history.json"
LEGACY_ARTIFACT = "model.skops"

_CHANGE_NAME = re.compile(r"^(\d{12})\.json$")
_ARTIFACT = re.compile(r"^artifacts/[0-9a-f]{64}\.skops$")


def artifact_path(sha256: str) -> str:
    """Where the artifact with this sha256 lives, relative to the model's folder."""
    return f"{ARTIFACTS}/{sha256}.skops"


def is_artifact_path(path: str) -> bool:
    """Whether a manifest's ``artifact`` names a content-addressed artifact (nothing outside the model's folder)."""
    return bool(_ARTIFACT.match(path))


def change_name(seq: int) -> str:
    """The file name of alias change number ``seq`` (zero-padded, so names sort as numbers)."""
    return f"{seq:012d}.json"


def change_seq(file_name: str) -> int | None:
    """The number of an alias change file, or None for anything else (a writer's temp file)."""
    match = _CHANGE_NAME.match(file_name)
    return int(match.group(1)) if match else None


def fold_aliases(seed: Mapping[str, Any], changes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The aliases after ``changes`` (in order) applied to ``seed`` (an older registry's aliases.json)."""
    aliases = {str(k): int(v) for k, v in seed.items()}
    for change in changes:
        aliases[str(change["alias"])] = int(change["to"])
    return aliases


def version_number(folder_name: str) -> int | None:
    return int(folder_name) if folder_name.isdigit() else None


def local_versions(model: Path) -> list[int]:
    """Complete versions (with a manifest) of the model in local folder ``model``, oldest first."""
    folder = model / VERSIONS
    if not folder.is_dir():
        return []
    found = (version_number(p.name) for p in folder.iterdir() if (p / MANIFEST).is_file())
    return sorted(v for v in found if v is not None)


def local_aliases(model: Path) -> dict[str, int]:
    """The aliases of the model in local folder ``model`` (raises OSError/ValueError on unreadable files)."""
    seed_file = model / LEGACY_ALIASES
    seed = json.loads(seed_file.read_text()) if seed_file.is_file() else {}
    if not isinstance(seed, dict):
        raise ValueError(f"{seed_file} is not a mapping of aliases")
    folder = model / ALIAS_CHANGES
    files = sorted(p for p in folder.iterdir() if change_seq(p.name) is not None) if folder.is_dir() else []
    return fold_aliases(seed, (json.loads(p.read_text()) for p in files))
