"""The supervisor's state machines: legal moves happen, illegal ones are bugs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_openai_server_hub.config import load_config_text
from mlx_openai_server_hub.errors import HubError
from mlx_openai_server_hub.logs import LogFiles
from mlx_openai_server_hub.states import (
    MEMORY_MOVES,
    PROCESS_MOVES,
    IllegalTransition,
    MemoryState,
    ProcessState,
)
from mlx_openai_server_hub.supervisor import Supervisor

CONFIG = """
models:
  - {name: a, model_path: /m/a}
  - {name: b, model_path: /m/b, jit_enabled: true, group: g}
groups:
  - {name: g, max_loaded: 1}
"""


@pytest.fixture
async def supervisor(tmp_path: Path):
    log_files = LogFiles()
    sup = Supervisor(load_config_text(CONFIG, tmp_path / "hub.yaml"), log_files)
    yield sup
    log_files.close()


def test_every_state_has_a_way_out_except_none():
    for state in ProcessState:
        assert PROCESS_MOVES.get(state), state
    for memory in MemoryState:
        assert MEMORY_MOVES.get(memory), memory


async def test_legal_moves_stamp_times(supervisor: Supervisor):
    model = supervisor.get("a")
    model._move(process=ProcessState.STARTING, memory=MemoryState.LOADING)
    snap = model.snapshot()
    assert snap.started_at is not None and snap.memory_changed_at is not None
    # As in the reference, `started` counts running models, not those still starting.
    assert supervisor.status()["counts"] == {"registered": 2, "started": 0, "loaded": 0}
    model._move(memory=MemoryState.LOADED)
    model._move(process=ProcessState.RUNNING)
    assert model.snapshot().loaded_at is not None
    status = supervisor.status()
    assert status["counts"] == {"registered": 2, "started": 1, "loaded": 1}
    model._move(process=ProcessState.STOPPING, memory=MemoryState.UNLOADING)
    model._move(memory=MemoryState.UNLOADED)
    model._move(process=ProcessState.STOPPED)
    snap = model.snapshot()
    assert snap.stopped_at is not None and snap.unloaded_at is not None


@pytest.mark.parametrize(
    ("process", "memory"),
    [
        (ProcessState.STOPPING, None),  # stopped → stopping
        (None, MemoryState.LOADED),  # unloaded → loaded without loading
        (None, MemoryState.UNLOADING),
    ],
)
async def test_illegal_moves_raise(supervisor: Supervisor, process, memory):
    with pytest.raises(IllegalTransition):
        supervisor.get("a")._move(process=process, memory=memory)


async def test_lookup_errors_name_the_model(supervisor: Supervisor):
    with pytest.raises(HubError, match=r"Model .zz. not found\. Registered models: a, b"):
        supervisor.get("zz")
    with pytest.raises(HubError, match="cannot be empty"):
        supervisor.get("  ")
    assert supervisor.resolve("/m/b").name == "b"


async def test_requests_to_a_stopped_model_get_503(supervisor: Supervisor):
    with pytest.raises(HubError) as info:
        async with supervisor.lease("a"):
            pass
    assert info.value.status == 503 and "start-model a" in info.value.message
