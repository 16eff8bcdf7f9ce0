"""Paths that may be local folders or object-store URLs (``s3://``, ``gs://``, ``file://``).

The model registry must be reachable from every Airflow worker;
on one machine that is a folder, on several an object store. fsspec hides the
difference, so the engine never assumes two tasks share a disk.

Two writes are offered, and a shared store needs both: :func:`write_bytes` replaces a file
(readers see the old bytes or the new, never a mix) and :func:`create_exclusive` creates one
only if it is absent, all at once, so of two writers racing for one name exactly one wins.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from batchscore.errors import PermanentError

# Stores whose conditional put (fsspec's ``pipe_file(mode="create")``) is atomic on the server:
# S3 (If-None-Match: *), Google Cloud Storage (ifGenerationMatch=0), Azure Blob (no overwrite),
# and fsspec's in-memory store. A local folder uses hard links (below). Any other store needs a lock.
ATOMIC_CREATE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "memory"})


class StoreError(PermanentError, RuntimeError):
    """The store cannot do what a consistent write needs (no atomic create-if-absent)."""

    remedy = (
        "keep the registry on a local or network folder, S3, GCS or Azure Blob, or set "
        "BATCHSCORE_REGISTRY_LOCK_URL to a PostgreSQL URL that every writer shares"
    )


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path inside it."""
    fs, path = url_to_fs(url)
    return fs, str(path).rstrip("/")


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with ``/`` (object stores have no other separator)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as handle:
        return bytes(handle.read())


def read_many(urls: list[str]) -> list[bytes]:
    """The bytes of each URL (all on one store), in order; fetched concurrently on object stores."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0])
    paths = [filesystem(url)[1] for url in urls]
    found = fs.cat(paths, on_error="raise")
    return [bytes(found[path]) for path in paths]


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _is_local(fs: Any) -> bool:
    """A folder of this machine's (or a network mount): ``os`` calls reach it directly."""
    return isinstance(fs, LocalFileSystem) and "file" in _protocols(fs)


def has_atomic_create(url: str) -> bool:
    """Whether the store at ``url`` can create a file only-if-absent atomically (see :func:`create_exclusive`)."""
    fs, _ = filesystem(url)
    return _is_local(fs) or bool(_protocols(fs) & ATOMIC_CREATE_PROTOCOLS)


def write_bytes(url: str, data: bytes) -> None:
    """Replace ``url`` in one step: readers see the old bytes or the new, never part of a write.

    On a local folder through a temp file named for this writer (so two writers never share
    one) and a rename; on an object store one PUT is already all-or-nothing.
    """
    fs, path = filesystem(url)
    if _is_local(fs):
        tmp = _write_temp(path, data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def create_exclusive(url: str, data: bytes, *, locked: bool = False) -> None:
    """Create ``url`` with ``data`` only if nothing is there; raise :class:`FileExistsError` if something is.

    Readers see no file or the whole file. A local folder writes a temp file named for this
    writer and hard-links it to the name (``link`` fails when the name exists, also over NFS);
    an object store uses its conditional put. A store with neither works only when the caller
    holds a lock every writer takes (``locked=True``): then checking and writing is enough.
    """
    fs, path = filesystem(url)
    if _is_local(fs):
        _create_local(path, data)
    elif has_atomic_create(url):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, data, mode="create")
    elif locked:
        fs.invalidate_cache(path)
        if fs.exists(path):
            raise FileExistsError(url)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, data)
    else:
        raise StoreError(f"{url}: this store ({type(fs).__name__}) cannot create a file only if it is absent")


def refresh(url: str, data: bytes) -> None:
    """Mark ``url`` (holding ``data``) as written now: a local file's mtime, an object put again with its bytes."""
    fs, path = filesystem(url)
    if _is_local(fs):
        os.utime(path)
    else:
        fs.pipe_file(path, data)


def _write_temp(path: str, data: bytes) -> str:
    """``data`` in a new file beside ``path``, named for this writer, flushed to disk; returns its path."""
    folder, name = path.rsplit("/", 1)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def _create_local(path: str, data: bytes) -> None:
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)  # atomic, and refuses an existing name
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive still, though a reader may meet a partial file
        with open(path, "xb") as handle:
            handle.write(data)
    finally:
        os.unlink(tmp)


def names_in(url: str) -> list[str]:
    """The names of the entries directly under folder ``url`` (none when it is absent), freshly listed."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]


def glob(url: str, pattern: str) -> list[str]:
    """Paths (inside the store) under folder ``url`` matching ``pattern`` (``*/manifest.json``), freshly listed."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    return [str(p) for p in fs.glob(f"{path}/{pattern}")]


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def remove_tree(url: str) -> None:
    """Delete a folder and everything under it; a no-op when it is absent."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
