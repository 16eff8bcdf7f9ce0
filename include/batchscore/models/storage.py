"""Paths that may be local folders or object-store URLs (``s3://``, ``gs://``, ``file://``).

The model registry must be reachable from every Airflow worker;
on one machine that is a folder, on several an object store. fsspec hides the
difference, so the engine never assumes two tasks share a disk.
"""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec.core import url_to_fs


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


def write_bytes(url: str, data: bytes) -> None:
    """Write atomically where the filesystem allows it (temp file, then rename)."""
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp"
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def remove_tree(url: str) -> None:
    """Delete a folder and everything under it; a no-op when it is absent."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
