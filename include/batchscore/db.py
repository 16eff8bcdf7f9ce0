"""Database URLs and connections: one form for SQLAlchemy, libpq, psycopg and ADBC alike.

Users give SQLAlchemy-style URLs (``postgresql+psycopg2://...``); libpq and ADBC want
the plain ``postgresql://`` form. PostgreSQL URLs take the fast path (binary COPY);
anything else goes through SQLAlchemy. Every connection the engine opens goes through
:func:`pg_connect`, :func:`psycopg2_connect` or :func:`adbc_connect`, the one place to change a driver setting.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

_PG_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?://", re.IGNORECASE)
APPLICATION_NAME = "batchscore"


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


def pg_connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A psycopg connection for DDL, small queries and run records (tagged in ``pg_stat_activity``)."""
    import psycopg

    return psycopg.connect(libpq_url(url), autocommit=autocommit, application_name=APPLICATION_NAME)


def psycopg2_connect(url: str) -> Any:
    """A psycopg2 connection for the source's binary COPY out (autocommit, UTF-8 text, tagged)."""
    import psycopg2

    conn = psycopg2.connect(libpq_url(url), application_name=APPLICATION_NAME, client_encoding="UTF8")
    conn.autocommit = True
    return conn


def adbc_connect(url: str) -> Any:
    """An ADBC connection: binary COPY in both directions, Arrow record batches out."""
    import adbc_driver_postgresql.dbapi as adbc

    return adbc.connect(libpq_url(url))


def render(statement: Any) -> str:
    """A composed ``psycopg.sql`` statement as text, for drivers that take no parameters (COPY, ADBC).

    Only :class:`psycopg.sql.Literal` and :class:`~psycopg.sql.Identifier` values are
    rendered, with psycopg's own quoting, so no text is ever pasted into SQL unescaped.
    """
    return str(statement.as_string(None))
