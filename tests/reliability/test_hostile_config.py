"""Random and hostile hub.yaml files, on reload of a running hub and at start.

The loader itself is fuzzed in tests/unit/test_config.py. Here a real hub with three
models (one loaded, one JIT, one stopped) is told to reload each bad file: it must
answer 400 with a message naming the file, and keep every model exactly as it was.
`serve` with a bad file must exit at once with a clear message, no traceback, and
start nothing.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlx_openai_server_hub.config import MODEL_KEYS, TOP_LEVEL_KEYS, ConfigError, load_config_text
from tests.conftest import Hub, fake_model

from . import figure, module_hub, new_hub

MODELS = [
    fake_model("loaded", default=True),
    fake_model("jit", default=True, jit_enabled=True, group="g"),
    fake_model("stopped"),
]
GROUPS = [{"name": "g", "max_loaded": 1}]
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
STATS = {"reload": 0, "start": 0}
GOOD: dict[str, str] = {}  # the module hub's own hub.yaml


def _bomb(depth: int = 9) -> str:
    """A YAML "billion laughs": 9**depth strings from a few lines of aliases."""
    levels = ["k0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "{" + ", ".join(levels) + "}"


HANDCRAFTED: dict[str, bytes] = {
    "empty": b"",
    "only a comment": b"# nothing\n",
    "broken YAML": b"models: [\n",
    "tabs": b"models:\n\t- name: a\n",
    "not a mapping": b"- just\n- a list\n",
    "invalid UTF-8": b"models: [{name: \xff\xfe, model_path: m}]\n",
    "NUL bytes": b"models:\x00\x00\n",
    "python object tag": b"models: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
    "billion laughs in models": f"models: {_bomb()}\n".encode(),
    "billion laughs in a key": (
        f"models: [{{name: a, model_path: m, extra_args: {_bomb()}}}]\n".encode()
    ),
    "deep nesting": b"models: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "huge integer": b"port: " + b"9" * 5000 + b"\nmodels: [{name: a, model_path: m}]\n",
    "NaN timeout": b"models: [{name: a, model_path: m, request_timeout: .nan}]\n",
    "duplicate names": b"models: [{name: a, model_path: m}, {name: a, model_path: n}]\n",
    "traversal name": b"models: [{name: ../../etc, model_path: m}]\n",
    "5 MB of spaces": b"models: [{name: a, model_path: m}]\n" + b" " * (5 * 2**20),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Three models: `loaded` (loaded), `jit` (started, not loaded), `stopped`."""
    with module_hub(tmp_path_factory.mktemp("hostile-config"), MODELS, groups=GROUPS) as hub:
        asyncio.run(hub.wait_for("loaded", lambda m: m["memory_state"] == "loaded"))
        asyncio.run(hub.wait_for("jit", lambda m: m["process_state"] == "running"))
        GOOD["text"] = hub.config_path.read_text()
        yield hub
        # The good file reloads as "nothing changed" after all of that.
        hub.config_path.write_text(GOOD["text"])
        status, diff = asyncio.run(hub.post("/hub/reload"))
        assert status == 200 and diff["restarted"] == diff["started"] == diff["stopped"] == []


def snapshot(hub: Hub) -> dict[str, Any]:
    status = asyncio.run(hub.status())
    keep = ("process_state", "memory_state", "pid", "port", "model_path", "group")
    return {m["id"]: {k: m["metadata"][k] for k in keep} for m in status["models"]}


def is_valid(text: bytes, path: Path) -> bool:
    try:
        load_config_text(text.decode("utf-8-sig"), path)
    except (ConfigError, UnicodeDecodeError):
        return False
    return len(text) <= 2**20


def assert_reload_refused(hub: Hub, content: bytes) -> str:
    """Write `content` as hub.yaml, reload: 400 naming the file, and nothing changed."""
    before = snapshot(hub)
    hub.config_path.write_bytes(content)
    status, body = asyncio.run(hub.post("/hub/reload"))
    assert status == 400, (content[:200], body)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["code"] == "400"
    message = error["message"]
    assert str(hub.config_path) in message, message
    assert "Traceback" not in message and len(message) < 4000, message[:500]
    assert snapshot(hub) == before
    STATS["reload"] += 1
    return message


@pytest.mark.parametrize("case", list(HANDCRAFTED))
def test_handcrafted_hostile_files_are_refused_on_reload(hub: Hub, case: str) -> None:
    assert_reload_refused(hub, HANDCRAFTED[case])


def test_files_that_are_not_regular_files_are_refused_on_reload(hub: Hub) -> None:
    """A FIFO would block the read forever, /dev/zero would never end: both refused."""
    good = hub.config_path.read_bytes()
    before = snapshot(hub)
    hub.config_path.unlink()
    for target in ("fifo", "/dev/zero", "directory"):
        if target == "fifo":
            os.mkfifo(hub.config_path)
        elif target == "directory":
            hub.config_path.mkdir()
        else:
            hub.config_path.symlink_to(target)
        status, body = asyncio.run(hub.post("/hub/reload"))
        assert status == 400 and "not a regular file" in body["error"]["message"], body
        if target == "directory":
            hub.config_path.rmdir()
        else:
            hub.config_path.unlink()
        STATS["reload"] += 1
    hub.config_path.write_bytes(good)
    assert snapshot(hub) == before


# ------------------------------------------------------------- random files


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["", "..", "/dev/null", "~", "-1", "1e9", "nan", "0x10", "true", "null"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(MODEL_KEYS), st.text(max_size=8)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def _good_document() -> dict[str, Any]:
    return dict(yaml.safe_load(GOOD["text"]))


@st.composite
def mutated_documents(draw: st.DrawFn, good: dict[str, Any]) -> bytes:
    """The hub's own config with one to three keys set to random values (or removed)."""
    document = copy.deepcopy(good)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            target = document
            key = draw(st.sampled_from([*TOP_LEVEL_KEYS, "models", "groups", "bogus_key"]))
        else:
            models = document.get("models")
            if not isinstance(models, list) or not models or not isinstance(models[0], dict):
                continue
            target = draw(st.sampled_from(models))
            if not isinstance(target, dict):
                continue
            key = draw(st.sampled_from([*MODEL_KEYS, "bogus_key"]))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(values)
    return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")


random_texts = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    values.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode("utf-8", "surrogatepass")),
)


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_random_and_mutated_files_are_refused_on_reload(hub: Hub, data: st.DataObject) -> None:
    """Property: any hub.yaml that does not load is refused, and no model moves."""
    good = _good_document()
    content = data.draw(st.one_of(random_texts, mutated_documents(good)))
    assume(not is_valid(content, hub.config_path))
    assert_reload_refused(hub, content)


def test_zz_reload_figures(hub: Hub) -> None:
    figure(
        "Bad input",
        "hostile and random hub.yaml on reload (handcrafted: billion laughs, FIFO, "
        "/dev/zero, 5 MB, NUL, tags...; Hypothesis: random and mutated files)",
        f"{STATS['reload']} reloads: all 400 naming the file; no model changed",
    )


# ------------------------------------------------------------------ at start


def serve_once(folder: Path, content: bytes) -> subprocess.CompletedProcess[str]:
    """`serve` with `content` as hub.yaml; it must end by itself."""
    hub = new_hub(folder, [fake_model("a", default=True)])
    hub.config_path.write_bytes(content)
    argv = [
        sys.executable,
        "-m",
        "mlx_openai_server_hub",
        "--config",
        str(hub.config_path),
        "serve",
    ]
    try:
        done = subprocess.run(argv, env=hub.env, capture_output=True, text=True, timeout=30)
    finally:
        hub.kill_everything()
    assert hub.leftovers() == []
    return done


START_CASES = [
    "broken YAML",
    "invalid UTF-8",
    "billion laughs in models",
    "duplicate names",
    "5 MB of spaces",
]


@pytest.mark.parametrize("case", START_CASES)
def test_serve_with_a_hostile_file_exits_clearly(tmp_path: Path, case: str) -> None:
    """Exit code 1 or 2, the file named, no traceback, nothing started (no log folder)."""
    done = serve_once(tmp_path / "hub", HANDCRAFTED[case])
    output = done.stdout + done.stderr
    assert done.returncode in (1, 2), output
    assert "hub.yaml" in output and "Traceback" not in output, output[-2000:]
    assert not (tmp_path / "hub" / "logs").exists()  # it never got as far as starting
    STATS["start"] += 1


@settings(SETTINGS, max_examples=12)
@given(content=random_texts)
def test_serve_with_random_files_exits_clearly(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    folder = tmp_path_factory.mktemp("serve")
    assume(not is_valid(content, folder / "hub" / "hub.yaml"))
    done = serve_once(folder / "hub", content)
    output = done.stdout + done.stderr
    assert done.returncode in (1, 2) and "Traceback" not in output, output[-2000:]
    STATS["start"] += 1


def test_zz_start_figures() -> None:
    figure(
        "Bad input",
        "hostile and random hub.yaml at `serve`",
        f"{STATS['start']} starts: all exited 1/2 with the file named, no traceback, "
        "nothing started",
    )
