"""What the local stack's processes listen on, read from the kernel (psutil over /proc/net).

A stack is its services' process trees (api-server, scheduler and the task processes it runs,
dag-processor, triggerer, log server, Celery workers) plus the PostgreSQL server of its data
directory. A listener is a TCP socket in LISTEN state; Unix sockets are not network listeners.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from batchscore.local.services import SERVICES
from batchscore.local.stack import LocalStack


@dataclass(frozen=True, order=True)
class Listener:
    """One listening TCP socket: which part of the stack holds it, and its address."""

    part: str
    ip: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.ip).is_loopback


def process_tree(pid: int) -> set[int]:
    """``pid`` and every process below it (a child that started a session of its own included)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def postmaster_pid(datadir: Path) -> int:
    """The PostgreSQL server's pid: the first line of ``postmaster.pid``."""
    return int((datadir / "postmaster.pid").read_text().split()[0])


def stack_parts(stack: LocalStack) -> dict[int, str]:
    """pid -> part, for every process of ``stack``: its services and workers, and its PostgreSQL server."""
    parts: dict[int, str] = {}
    pidfiles = [stack.home / f"{service}.pid" for service in SERVICES] + sorted(stack.home.glob("worker-*.pid"))
    for pidfile in pidfiles:
        assert pidfile.exists(), f"{pidfile.stem} is not running"
        for pid in process_tree(int(pidfile.read_text())):
            parts[pid] = pidfile.stem
    for pid in process_tree(postmaster_pid(stack.pg.datadir)):
        parts[pid] = "postgres"
    return parts


def listeners(parts: dict[int, str]) -> set[Listener]:
    """The listening TCP sockets (IPv4 and IPv6) held by the processes in ``parts``."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in parts:
            found.add(Listener(parts[conn.pid], conn.laddr.ip, conn.laddr.port))
    return found


def outside_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback: where a remote client would connect."""
    return [
        addr.address
        for addrs in psutil.net_if_addrs().values()
        for addr in addrs
        if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback
    ]


def answering_from_outside(port: int) -> list[str]:
    """The outside addresses on which ``port`` accepts a TCP connection (none, when it is closed to the network)."""
    answering = []
    for address in outside_addresses():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            if sock.connect_ex((address, port)) == 0:
                answering.append(address)
    return answering
