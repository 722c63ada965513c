"""Port leases for workers: one port per started model, kept until it stops."""

from __future__ import annotations

import socket

import attrs

from .errors import HubError

MAX_PORT = 65535


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP socket can bind `host:port` right now."""
    bind_host = "0.0.0.0" if host in ("", "::") else host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError:
            return False
    return True


@attrs.frozen(eq=False)
class Lessee:
    """Who holds a lease: one per model controller, equal only to itself.

    Not the model's name: a model a reload is retiring and the one added back
    under its name run side by side, each on a port of its own.
    """

    name: str  # for messages


class PortLeases:
    """Hands out worker ports from `starting_port` upward, never the hub's own."""

    def __init__(self, starting_port: int, hub_port: int) -> None:
        self.starting_port = starting_port
        self.hub_port = hub_port
        self._leases: dict[Lessee, int] = {}

    def port_of(self, lessee: Lessee) -> int | None:
        """The port leased to `lessee`, if any."""
        return self._leases.get(lessee)

    def lease(self, lessee: Lessee, host: str, explicit: int | None = None) -> int:
        """Lease a port to `lessee` (keeping an existing lease) and return it."""
        current = self._leases.get(lessee)
        if current is not None and (explicit is None or explicit == current):
            return current
        port = self._take_explicit(lessee, host, explicit) if explicit else self._scan(lessee, host)
        self._leases[lessee] = port
        return port

    def release(self, lessee: Lessee) -> None:
        """Give `lessee`'s port back."""
        self._leases.pop(lessee, None)

    def renew(self, lessee: Lessee, host: str, explicit: int | None) -> int:
        """Re-check `lessee`'s port before a worker binds it; move an auto port if taken."""
        port = self.lease(lessee, host, explicit)
        if port_is_free(host, port):
            return port
        if explicit:
            raise HubError(
                f"Model '{lessee.name}' port {port} is already in use on host '{host}'",
                status=503,
            )
        self.release(lessee)
        return self.lease(lessee, host)

    def _taken(self, port: int, lessee: Lessee) -> bool:
        return port == self.hub_port or any(
            p == port for other, p in self._leases.items() if other is not lessee
        )

    def _take_explicit(self, lessee: Lessee, host: str, port: int) -> int:
        name = lessee.name
        if self._taken(port, lessee):
            raise HubError(
                f"Model '{name}' port {port} conflicts with another model or the controller",
                status=409,
            )
        if not port_is_free(host, port):
            raise HubError(
                f"Model '{name}' port {port} is already in use on host '{host}'", status=503
            )
        return port

    def _scan(self, lessee: Lessee, host: str) -> int:
        start = max(self.starting_port, 1024)
        for port in range(start, MAX_PORT + 1):
            if not self._taken(port, lessee) and port_is_free(host, port):
                return port
        raise HubError(
            f"Unable to find an available port for model '{lessee.name}' starting at {start}",
            status=503,
        )
