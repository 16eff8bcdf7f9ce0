"""A lock for the registry's writers, for stores that cannot create a file only if it is absent.

On a local or network folder, S3, GCS and Azure Blob the registry needs no lock: its commits
are exclusive creates (:func:`batchscore.models.storage.create_exclusive`). Another store (FTP,
WebDAV, an S3-compatible server that ignores ``If-None-Match``) cannot refuse a second writer,
so every writer of one model name takes a PostgreSQL advisory lock first, in the database named
by ``BATCHSCORE_REGISTRY_LOCK_URL`` (the scores database every worker already reaches). The lock
belongs to a session: a writer that dies releases it with its connection, so no stale lock
is left to time out. When the URL is set, writers take it on every store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from batchscore import db, settings
from batchscore.models import storage

WAIT_SECONDS = 60  # a registry write takes well under a second: a minute's wait means something is stuck


@contextmanager
def writer_lock(root: str, name: str) -> Iterator[bool]:
    """Hold the lock for writing model ``name`` in the registry at ``root``; yields whether a lock is held.

    Raises :class:`~batchscore.models.storage.StoreError` (one line, with its remedy) for a store that
    needs a lock when no lock database is configured, before anything is written.
    """
    url = settings.registry_lock_url()
    if url is None:
        if not storage.has_atomic_create(root):
            fs, _ = storage.filesystem(root)
            raise storage.StoreError(
                f"model registry at {root}: this store ({type(fs).__name__}) cannot create a file only if it is "
                "absent, so two writers could take one version"
            )
        yield False
        return
    with db.pg_connect(url, autocommit=True) as conn:
        key = (f"batchscore:registry:{root}:{name}",)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{WAIT_SECONDS}s",))
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", key)
        try:
            yield True
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)
