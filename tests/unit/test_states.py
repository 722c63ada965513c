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
    rt = supervisor.models["a"]
    supervisor._move(rt, process=ProcessState.STARTING, memory=MemoryState.LOADING)
    assert rt.started_at is not None and rt.memory_changed_at is not None
    supervisor._move(rt, memory=MemoryState.LOADED)
    supervisor._move(rt, process=ProcessState.RUNNING)
    status = supervisor.status()
    assert status["counts"] == {"registered": 2, "started": 1, "loaded": 1}
    supervisor._move(rt, process=ProcessState.STOPPING, memory=MemoryState.UNLOADING)
    supervisor._move(rt, memory=MemoryState.UNLOADED)
    supervisor._move(rt, process=ProcessState.STOPPED)
    assert rt.stopped_at is not None


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
        supervisor._move(supervisor.models["a"], process=process, memory=memory)


async def test_lookup_errors_name_the_model(supervisor: Supervisor):
    with pytest.raises(HubError, match=r"Model .zz. not found\. Registered models: a, b"):
        supervisor.get("zz")
    with pytest.raises(HubError, match="cannot be empty"):
        supervisor.get("  ")
    assert supervisor.resolve("/m/b").name == "b"


async def test_requests_to_a_stopped_model_get_503(supervisor: Supervisor):
    with pytest.raises(HubError) as info:
        async with supervisor.use("a"):
            pass
    assert info.value.status == 503 and "start-model a" in info.value.message
