"""Port leases: from model_starting_port upward, skipping the hub's and busy ports."""

from __future__ import annotations

import socket

import pytest

from mlx_openai_server_hub.errors import HubError
from mlx_openai_server_hub.ports import Lessee, PortLeases, port_is_free
from tests.conftest import free_port

A, B, C = Lessee("a"), Lessee("b"), Lessee("c")


def test_leases_count_upward_and_skip_the_hub_port():
    start = free_port()
    leases = PortLeases(start, hub_port=start + 1)
    assert leases.lease(A, "127.0.0.1") == start
    assert leases.lease(B, "127.0.0.1") == start + 2
    assert leases.lease(A, "127.0.0.1") == start  # a lease is kept
    leases.release(A)
    assert leases.port_of(A) is None
    assert leases.lease(C, "127.0.0.1") == start


def test_busy_ports_are_skipped():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        leases = PortLeases(port, hub_port=1)
        assert leases.lease(A, "127.0.0.1") > port


def test_explicit_port_conflicts_and_busy_ports_are_refused():
    port = free_port()
    leases = PortLeases(40000, hub_port=port)
    with pytest.raises(HubError, match="conflicts with another model or the controller"):
        leases.lease(A, "127.0.0.1", explicit=port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        with pytest.raises(HubError, match=f"port {taken} is already in use on host '127.0.0.1'"):
            leases.lease(A, "127.0.0.1", explicit=taken)


def test_renew_moves_an_auto_port_that_something_else_took():
    start = free_port()
    leases = PortLeases(start, hub_port=1)
    assert leases.lease(A, "127.0.0.1") == start
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", start))
        thief.listen()
        moved = leases.renew(A, "127.0.0.1", None)
        assert moved != start and leases.port_of(A) == moved


def test_two_lessees_of_one_name_hold_ports_of_their_own():
    start = free_port()
    leases = PortLeases(start, hub_port=1)
    retiring, successor = Lessee("a"), Lessee("a")
    assert leases.lease(retiring, "127.0.0.1") == start
    port = leases.lease(successor, "127.0.0.1")
    assert port != start
    leases.release(retiring)  # the retiring copy stops: its successor keeps its port
    assert leases.port_of(successor) == port
    with pytest.raises(HubError, match="conflicts with another model"):
        leases.lease(B, "127.0.0.1", explicit=port)
