"""Port leases: from model_starting_port upward, skipping the hub's and busy ports."""

from __future__ import annotations

import socket

import pytest

from mlx_openai_server_hub.errors import HubError
from mlx_openai_server_hub.ports import PortLeases, port_is_free
from tests.conftest import free_port


def test_leases_count_upward_and_skip_the_hub_port():
    start = free_port()
    leases = PortLeases(start, hub_port=start + 1)
    assert leases.lease("a", "127.0.0.1") == start
    assert leases.lease("b", "127.0.0.1") == start + 2
    assert leases.lease("a", "127.0.0.1") == start  # a lease is kept
    leases.release("a")
    assert leases.port_of("a") is None
    assert leases.lease("c", "127.0.0.1") == start


def test_busy_ports_are_skipped():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        leases = PortLeases(port, hub_port=1)
        assert leases.lease("a", "127.0.0.1") > port


def test_explicit_port_conflicts_and_busy_ports_are_refused():
    port = free_port()
    leases = PortLeases(40000, hub_port=port)
    with pytest.raises(HubError, match="conflicts with another model or the controller"):
        leases.lease("a", "127.0.0.1", explicit=port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        with pytest.raises(HubError, match=f"port {taken} is already in use on host '127.0.0.1'"):
            leases.lease("a", "127.0.0.1", explicit=taken)


def test_renew_moves_an_auto_port_that_something_else_took():
    start = free_port()
    leases = PortLeases(start, hub_port=1)
    assert leases.lease("a", "127.0.0.1") == start
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", start))
        thief.listen()
        moved = leases.renew("a", "127.0.0.1", None)
        assert moved != start and leases.port_of("a") == moved
