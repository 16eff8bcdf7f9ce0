"""The COPY stream's error text: the server's message, never the connection's password."""

from __future__ import annotations

from batchscore.source.copy_stream import SourceReadError, _scrubbed


def test_a_password_in_an_error_is_replaced_plain_or_percent_encoded() -> None:
    url = "postgresql+psycopg2://scorer:s3cr%40t@db.internal:5432/warehouse"
    message = 'connection to "db.internal" failed for scorer with s3cr@t (s3cr%40t)'
    assert _scrubbed(message, url) == 'connection to "db.internal" failed for scorer with *** (***)'
    assert _scrubbed("ERROR:  division by zero", "postgresql://u@/db?host=/tmp") == "ERROR:  division by zero"


def test_a_read_error_is_an_oserror_with_its_sqlstate() -> None:
    error = SourceReadError("[libpq] ERROR:  division by zero", "22012")
    assert isinstance(error, OSError)
    assert (str(error), error.sqlstate) == ("[libpq] ERROR:  division by zero", "22012")
