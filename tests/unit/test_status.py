"""status.py: what /hub/status derives from a model's snapshot."""

from __future__ import annotations

import time

import attrs
import pytest

from mlx_openai_server_hub.states import MemoryState
from mlx_openai_server_hub.status import load_progress, wait_note


@pytest.fixture
def loading(hub_app):
    _app, supervisor = hub_app
    model = supervisor.get("a")
    model._move(process=model.process.STARTING, memory=MemoryState.LOADING)
    return model.snapshot()


def test_load_progress_is_the_resident_share_of_the_need_held_below_one(loading):
    fields = {"memory_need_bytes": 1000, "memory_bytes": 250}
    shown = load_progress(loading, fields)
    assert shown["load_progress"] == 0.25 and shown["load_elapsed_s"] >= 0
    assert (
        load_progress(loading, {"memory_need_bytes": 1000, "memory_bytes": 5000})["load_progress"]
        == 0.99
    )  # resident beyond the need, but not ready yet


def test_load_progress_is_null_without_a_size_and_outside_a_load(loading):
    assert (
        load_progress(loading, {"memory_need_bytes": 0, "memory_bytes": 100})["load_progress"]
        is None
    )
    older = attrs.evolve(loading, memory_changed_at=time.time() - 30)
    assert load_progress(older, {})["load_elapsed_s"] >= 30
    loaded = attrs.evolve(loading, memory=MemoryState.LOADED)
    assert load_progress(loaded, {"memory_need_bytes": 1, "memory_bytes": 1}) == {
        "load_progress": None,
        "load_elapsed_s": None,
    }


def test_wait_notes_say_what_a_stream_waits_for_with_progress():
    downloading = {"download": {"state": "downloading", "bytes_done": 43, "bytes_total": 100}}
    assert wait_note(downloading, "qwen") == "downloading qwen 43%"
    assert wait_note({"download": {"state": "queued"}}, "qwen") == "downloading qwen"
    assert wait_note({"load_progress": 0.7}, "qwen") == "loading qwen 70%"
    done = {"download": {"state": "done"}, "load_progress": None}
    assert wait_note(done, "qwen") == "loading qwen"
