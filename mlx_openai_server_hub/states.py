"""The two state machines of a model, and which moves between states are legal."""

from __future__ import annotations

import enum


class ProcessState(enum.StrEnum):
    """Is the model servable? (Routable and holding its port.)"""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


class MemoryState(enum.StrEnum):
    """Is the model's worker up with the weights in memory?"""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


PROCESS_MOVES: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.STOPPED: frozenset({ProcessState.STARTING, ProcessState.RUNNING}),
    ProcessState.FAILED: frozenset({ProcessState.STARTING, ProcessState.RUNNING}),
    ProcessState.STARTING: frozenset(
        {ProcessState.RUNNING, ProcessState.FAILED, ProcessState.STOPPING}
    ),
    ProcessState.RUNNING: frozenset({ProcessState.STOPPING, ProcessState.FAILED}),
    ProcessState.STOPPING: frozenset({ProcessState.STOPPED}),
}

MEMORY_MOVES: dict[MemoryState, frozenset[MemoryState]] = {
    MemoryState.UNLOADED: frozenset({MemoryState.LOADING}),
    MemoryState.LOADING: frozenset({MemoryState.LOADED, MemoryState.UNLOADED}),
    # LOADED → UNLOADED directly when the worker dies on its own.
    MemoryState.LOADED: frozenset({MemoryState.UNLOADING, MemoryState.UNLOADED}),
    MemoryState.UNLOADING: frozenset({MemoryState.UNLOADED}),
}

SERVABLE = frozenset({ProcessState.STARTING, ProcessState.RUNNING})
# States that hold (or are about to hold) a group slot and memory.
HOLDS_MEMORY = frozenset({MemoryState.LOADING, MemoryState.LOADED, MemoryState.UNLOADING})


class IllegalTransition(RuntimeError):
    """A bug: the supervisor tried a move its state machine does not allow."""
