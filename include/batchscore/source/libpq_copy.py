"""Binary COPY out read straight from libpq by compiled code: no Python call per row.

psycopg2's ``copy_expert`` hands every row to Python (a bytes object and a ``write`` call
each): 0.8-1.0 CPU-s per million rows of the bench table on this machine, more than the
decoding. Here :func:`fetch_rows` (compiled by numba, the GIL released) calls libpq's
``PQgetCopyData`` in a loop and copies each row into the decoder's buffer, about 0.25 CPU-s
per million rows. It uses the very libpq that psycopg2 loaded (found in this process's
memory map) on psycopg2's own connection, so connecting, authentication, TLS and
``cancel()`` stay psycopg2's.

:func:`bindings` returns None when that libpq cannot be found for sure (not Linux, or several
libpq libraries loaded): the caller then keeps psycopg2's ``copy_expert``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

PGRES_COMMAND_OK, PGRES_COPY_OUT = 1, 3
PG_DIAG_SQLSTATE = ord("C")
# fetch_rows statuses
CHUNK, NEED_ROOM, DONE, FAILED = range(4)


@dataclass(frozen=True)
class Libpq:
    """The libpq functions the COPY needs, from the library psycopg2 uses, and the compiled row loop."""

    path: str
    get_copy_data: Any
    freemem: Any
    memcpy: Any
    exec: Any
    result_status: Any
    result_error_message: Any
    result_error_field: Any
    error_message: Any
    clear: Any
    get_result: Any
    server_version: Any
    fetch: Any


def fetch_rows(  # noqa: PLR0917
    get_copy_data: Any, freemem: Any, memcpy: Any, conn: Any, buf: Any, fill: Any, limit: Any, slot: Any
) -> Any:
    """Copy the COPY's rows into ``buf[fill:]`` until ``fill`` passes ``limit``: (new fill, status).

    ``slot`` (two uint64) holds a row libpq returned that did not fit (its pointer, its length):
    NEED_ROOM asks the caller for a larger buffer, and the next call copies it first. DONE:
    the COPY ended (its result says whether it succeeded); FAILED: libpq lost the connection.
    Plain Python here; numba compiles it (:func:`bindings`).
    """
    cap = buf.shape[0]
    addr = buf.ctypes.data
    while True:
        if slot[1] > 0:
            n = slot[1]
            if fill + n > cap:
                return fill, NEED_ROOM
            memcpy(np.uint64(addr + fill), slot[0], n)
            freemem(slot[0])
            slot[1] = 0
            fill += n
            if fill >= limit:
                return fill, CHUNK
        n = get_copy_data(conn, np.uint64(slot.ctypes.data), 0)
        if n > 0:
            slot[1] = n
            continue
        return fill, DONE if n == -1 else FAILED


_bindings: list[Libpq | None] = []
_LOCK = threading.Lock()


def _loaded_libpq() -> str | None:
    """The libpq shared library psycopg2 uses, from this process's memory map once psycopg2 is loaded.

    psycopg2-binary's own copy (in ``psycopg2_binary.libs`` beside the package) when mapped; else
    the only libpq mapped; else None (psycopg (3)'s binary wheel brings a second libpq of its own).
    """
    import psycopg2
    import psycopg2._psycopg  # loads psycopg2's libpq

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/libpq" in line and ".so" in line}
    except OSError:
        return None
    wheel_libs = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(psycopg2.__file__))), "psycopg2_binary.libs"
    )
    own = [p for p in paths if os.path.dirname(p) == wheel_libs]
    if len(own) == 1:
        return own[0]
    return paths.pop() if len(paths) == 1 else None


def bindings() -> Libpq | None:
    """libpq's COPY functions and the compiled loop (built once per process), or None to use psycopg2's."""
    with _LOCK:
        if not _bindings:
            _bindings.append(_bind())
        return _bindings[0]


def _bind() -> Libpq | None:
    path = _loaded_libpq()
    if path is None or not os.path.exists(path):
        return None
    lib = ctypes.CDLL(path)  # the handle of the library already loaded: the same functions psycopg2 calls
    libc = ctypes.CDLL(None)
    u64, i32, text = ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p

    def function(owner: Any, name: str, restype: Any, *argtypes: Any) -> Any:
        f = getattr(owner, name)
        f.restype, f.argtypes = restype, list(argtypes)
        return f

    from batchscore import numba_cache

    numba_cache.numba_cache_dir(__file__)
    import numba

    return Libpq(
        path=path,
        get_copy_data=function(lib, "PQgetCopyData", i32, u64, u64, i32),
        freemem=function(lib, "PQfreemem", None, u64),
        memcpy=function(libc, "memcpy", u64, u64, u64, u64),
        exec=function(lib, "PQexec", u64, u64, text),
        result_status=function(lib, "PQresultStatus", i32, u64),
        result_error_message=function(lib, "PQresultErrorMessage", text, u64),
        result_error_field=function(lib, "PQresultErrorField", text, u64, i32),
        error_message=function(lib, "PQerrorMessage", text, u64),
        clear=function(lib, "PQclear", None, u64),
        get_result=function(lib, "PQgetResult", u64, u64),
        server_version=function(lib, "PQserverVersion", i32, u64),
        fetch=numba.njit(nogil=True, cache=True)(fetch_rows),
    )


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", errors="replace").strip()


def start_copy(lib: Libpq, conn_ptr: int, statement: bytes) -> tuple[str, str | None] | None:
    """Send the COPY (blocking, the GIL released): None once rows are coming, else (message, SQLSTATE)."""
    result = lib.exec(conn_ptr, statement)
    if not result:
        return _text(lib.error_message(conn_ptr)) or "the COPY could not be sent", None
    try:
        if lib.result_status(result) == PGRES_COPY_OUT:
            return None
        return _text(lib.result_error_message(result)), _text(lib.result_error_field(result, PG_DIAG_SQLSTATE)) or None
    finally:
        lib.clear(result)


def finish_copy(lib: Libpq, conn_ptr: int) -> tuple[str, str | None] | None:
    """After DONE: None when the COPY succeeded, else the server's (message, SQLSTATE); drains the results."""
    failure: tuple[str, str | None] | None = None
    while result := lib.get_result(conn_ptr):
        try:
            if lib.result_status(result) != PGRES_COMMAND_OK and failure is None:
                message = _text(lib.result_error_message(result))
                failure = message, _text(lib.result_error_field(result, PG_DIAG_SQLSTATE)) or None
        finally:
            lib.clear(result)
    return failure


def connection_lost(lib: Libpq, conn_ptr: int) -> tuple[str, str | None]:
    return _text(lib.error_message(conn_ptr)) or "the connection to the source was lost", None


def load_fetch() -> None:
    """Bind libpq and compile (or load from the cache) :func:`fetch_rows` now: a warm process's preload."""
    lib = bindings()
    if lib is not None:  # libpq answers a NULL connection with -2 at once: FAILED, nothing read
        slot = np.zeros(2, dtype=np.uint64)
        lib.fetch(lib.get_copy_data, lib.freemem, lib.memcpy, 0, np.zeros(16, dtype=np.uint8), 0, 16, slot)
