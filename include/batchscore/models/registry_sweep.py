"""Files of a model registry that no version uses: left by writers that died, found and removed.

A register writes the artifact first and the manifest second (:mod:`batchscore.models.registry`),
so a writer killed between the two leaves an artifact no manifest names, and a killed local
write leaves its ``.<name>.<uuid>.tmp`` file. Neither is ever read, but both take space for good.

An orphan is only removed once it is older than a grace period (24 h by default): a writer that
is still working on it (an artifact stored, its manifest not yet created) is never that slow. A
writer that finds its artifact already stored refreshes it, and checks it is still there after
its manifest exists (:meth:`~batchscore.models.registry.ModelRegistry.register`), so a sweep that
races it cannot leave a version without its artifact. With ``BATCHSCORE_REGISTRY_LOCK_URL`` set
the sweep also holds the writers' lock of each model while it deletes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from batchscore.models import registry_layout as layout
from batchscore.models import storage
from batchscore.models.manifest import ModelManifest
from batchscore.models.registry import ModelRegistry
from batchscore.models.registry_lock import writer_lock

DEFAULT_GRACE = timedelta(hours=24)
_TEMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # storage._write_temp's names


@dataclass(frozen=True)
class Orphan:
    """One unused file: its URL, why it is unused, its size and when it was last written."""

    url: str
    reason: str
    size: int
    modified: datetime


def _listing(url: str) -> list[dict[str, Any]]:
    fs, path = storage.filesystem(url)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    return list(fs.ls(path, detail=True))


def _modified(fs: Any, path: str) -> datetime:
    """When ``path`` was last written, as the store says (aware, UTC)."""
    stamp: datetime = fs.modified(path)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _used_artifacts(registry: ModelRegistry, name: str) -> set[str]:
    """The artifact file names the versions' manifests of ``name`` name (read fresh)."""
    urls = storage.glob(storage.join(registry.root, name, layout.VERSIONS), f"*/{layout.MANIFEST}")
    fs, _ = storage.filesystem(registry.root)
    manifests = [ModelManifest.from_json(fs.cat_file(url).decode()) for url in urls]
    return {m.artifact.rsplit("/", 1)[-1] for m in manifests if layout.is_artifact_path(m.artifact)}


def find_orphans(
    registry: ModelRegistry, name: str, *, grace: timedelta = DEFAULT_GRACE, now: datetime | None = None
) -> list[Orphan]:
    """The unused files of model ``name`` older than ``grace``: unnamed artifacts and writers' temp files.

    The artifacts are listed before the manifests are read, so an artifact whose manifest is
    created meanwhile is seen as used.
    """
    cutoff = (now or datetime.now(UTC)) - grace
    fs, _ = storage.filesystem(registry.root)
    artifacts_url = storage.join(registry.root, name, layout.ARTIFACTS)
    artifact_entries = _listing(artifacts_url)
    used = _used_artifacts(registry, name)
    candidates: list[tuple[dict[str, Any], str]] = []
    for entry in artifact_entries:
        base = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if _TEMP.match(base):
            candidates.append((entry, "a writer's unfinished temp file"))
        elif layout.is_artifact_path(f"{layout.ARTIFACTS}/{base}") and base not in used:
            candidates.append((entry, "an artifact no version's manifest names (its writer died before the manifest)"))
    for folder in _listing(storage.join(registry.root, name, layout.VERSIONS)):
        if folder.get("type") != "directory":
            continue
        for entry in _listing(str(folder["name"])):
            if _TEMP.match(str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]):
                candidates.append((entry, "a writer's unfinished temp file"))
    found = []
    for entry, reason in candidates:
        path = str(entry["name"])
        modified = _modified(fs, path)
        if modified < cutoff:
            url = path if "://" in registry.root and "://" in path else _as_url(registry.root, path)
            found.append(Orphan(url, reason, int(entry.get("size") or 0), modified))
    return sorted(found, key=lambda o: o.url)


def _as_url(root: str, path: str) -> str:
    """A store path back as a URL of the root's protocol (a local path stays a path)."""
    if "://" not in root:
        return path
    protocol = root.split("://", 1)[0]
    return f"{protocol}://{path}"


def remove_orphans(
    registry: ModelRegistry, name: str, *, grace: timedelta = DEFAULT_GRACE, now: datetime | None = None
) -> list[Orphan]:
    """Delete :func:`find_orphans`' files of ``name`` (each looked at again just before); return those deleted."""
    removed = []
    with writer_lock(registry.root, name):
        for orphan in find_orphans(registry, name, grace=grace, now=now):
            fs, path = storage.filesystem(orphan.url)
            if orphan.reason.startswith("an artifact") and path.rsplit("/", 1)[-1] in _used_artifacts(registry, name):
                continue  # a manifest naming it appeared since the listing
            if _modified(fs, path) != orphan.modified:
                continue  # refreshed by a writer re-using it
            fs.rm_file(path)
            removed.append(orphan)
    return removed
