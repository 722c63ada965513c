"""Whether a loopback TCP client runs as the hub's own Unix user.

The status page hands a session to a browser on this machine without the token.
Another local user (who cannot read the 0600 `hub.token`) must not get one, so
the client's socket is looked up:

- on Linux in `/proc/net/tcp` and `/proc/net/tcp6`, which name the owner (uid)
  of every socket in this network namespace;
- elsewhere (macOS) among the sockets of this user's own processes (psutil);
  a socket of another user's process is not visible there, which is the answer.

Both cost a scan of every socket (or of this user's processes), paid once per
page session, off the event loop. Anything that cannot be decided is "no": the
visitor gets the login form.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path

import psutil

Address = tuple[str, int]
_PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED = "01"


def peer_is_own_user(peer: Address, local: Address) -> bool:
    """True when the client socket `peer` → `local` (the hub's side) belongs to our uid."""
    if _PROC_NET_TCP[0].exists():
        uid = _proc_socket_uid(peer, local)
        if uid is not None:
            return uid == os.geteuid()
    return _socket_of_own_process(peer, local)


def _same(address: Address, host: str, port: int) -> bool:
    return address[1] == port and _ip(address[0]) == _ip(host)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    # A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _decode(field: str) -> Address:
    """`0100007F:1F90` → ("127.0.0.1", 8080); IPv6 is four little-endian 32-bit words."""
    hex_ip, _, hex_port = field.partition(":")
    raw = bytes.fromhex(hex_ip)
    host_bytes = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(host_bytes)), int(hex_port, 16)


def _proc_socket_uid(peer: Address, local: Address) -> int | None:
    """The uid owning the client's socket, from /proc/net/tcp{,6}; None if not found."""
    for path in _PROC_NET_TCP:
        with contextlib.suppress(OSError), path.open(encoding="ascii") as table:
            next(table, None)  # the column names
            for line in table:
                fields = line.split()
                if len(fields) < 8 or fields[3] != _ESTABLISHED:
                    continue
                with contextlib.suppress(ValueError):
                    if _same(peer, *_decode(fields[1])) and _same(local, *_decode(fields[2])):
                        return int(fields[7])
    return None


def _socket_of_own_process(peer: Address, local: Address) -> bool:
    """True when one of this user's processes holds the client's socket."""
    me = os.geteuid()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is None or uids.effective != me:
            continue
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections("tcp"):
                if conn.raddr and _same(peer, *conn.laddr) and _same(local, *conn.raddr):
                    return True
    return False
