"""The sd_notify protocol (sd_notify(3)) without libsystemd: one datagram to $NOTIFY_SOCKET.

With no NOTIFY_SOCKET (not under systemd, or `Type=simple`) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """WATCHDOG_USEC as seconds, if systemd asked for keep-alives from this very process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): inherited sockets start at fd 3


def listen_fds() -> list[socket.socket]:
    """Sockets systemd passed for socket activation (`abuse-gateway.socket`), or none.

    Only when LISTEN_PID names this process: the variables are inherited by children that did not get the
    descriptors. They are unset afterwards so a child we start never takes them for its own.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if not count or pid != str(os.getpid()):
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
