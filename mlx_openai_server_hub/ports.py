"""Port leases for workers: one port per started model, kept until it stops."""

from __future__ import annotations

import socket

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


class PortLeases:
    """Hands out worker ports from `starting_port` upward, never the hub's own."""

    def __init__(self, starting_port: int, hub_port: int) -> None:
        self.starting_port = starting_port
        self.hub_port = hub_port
        self._leases: dict[str, int] = {}

    def port_of(self, name: str) -> int | None:
        """The port leased to `name`, if any."""
        return self._leases.get(name)

    def lease(self, name: str, host: str, explicit: int | None = None) -> int:
        """Lease a port to `name` (keeping an existing lease) and return it."""
        current = self._leases.get(name)
        if current is not None and (explicit is None or explicit == current):
            return current
        port = self._take_explicit(name, host, explicit) if explicit else self._scan(name, host)
        self._leases[name] = port
        return port

    def release(self, name: str) -> None:
        """Give `name`'s port back."""
        self._leases.pop(name, None)

    def renew(self, name: str, host: str, explicit: int | None) -> int:
        """Re-check `name`'s port before a worker binds it; move an auto port if taken."""
        port = self.lease(name, host, explicit)
        if port_is_free(host, port):
            return port
        if explicit:
            raise HubError(
                f"Model '{name}' port {port} is already in use on host '{host}'", status=503
            )
        self.release(name)
        return self.lease(name, host)

    def _taken(self, port: int, name: str) -> bool:
        return port == self.hub_port or any(p == port for n, p in self._leases.items() if n != name)

    def _take_explicit(self, name: str, host: str, port: int) -> int:
        if self._taken(port, name):
            raise HubError(
                f"Model '{name}' port {port} conflicts with another model or the controller",
                status=409,
            )
        if not port_is_free(host, port):
            raise HubError(
                f"Model '{name}' port {port} is already in use on host '{host}'", status=503
            )
        return port

    def _scan(self, name: str, host: str) -> int:
        start = max(self.starting_port, 1024)
        for port in range(start, MAX_PORT + 1):
            if not self._taken(port, name) and port_is_free(host, port):
                return port
        raise HubError(
            f"Unable to find an available port for model '{name}' starting at {start}",
            status=503,
        )
