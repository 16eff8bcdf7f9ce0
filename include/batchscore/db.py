"""Database URLs: one form for SQLAlchemy, libpq, psycopg and ADBC alike.

Users give SQLAlchemy-style URLs (``postgresql+psycopg2://...``); libpq and ADBC want
the plain ``postgresql://`` form. PostgreSQL URLs take the fast path (binary COPY);
anything else goes through SQLAlchemy.
"""

from __future__ import annotations

import re

_PG_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?://", re.IGNORECASE)


def is_postgres(url: str) -> bool:
    return bool(_PG_SCHEME.match(url))


def libpq_url(url: str) -> str:
    """``postgresql+psycopg2://u@h/db`` -> ``postgresql://u@h/db`` (libpq/ADBC form)."""
    if not is_postgres(url):
        raise ValueError(f"not a PostgreSQL URL: {redact(url)}")
    return _PG_SCHEME.sub("postgresql://", url, count=1)


def sqlalchemy_url(url: str) -> str:
    """A URL SQLAlchemy accepts; PostgreSQL URLs use psycopg (v3)."""
    if is_postgres(url):
        return _PG_SCHEME.sub("postgresql+psycopg://", url, count=1)
    return url


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
