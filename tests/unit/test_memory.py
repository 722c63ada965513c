"""Sizes, on-disk estimates, sampling a real process group, and learned sizes on disk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_openai_server_hub import memory
from mlx_openai_server_hub.memory_estimate import RUNTIME_BASELINE_BYTES, estimate_memory
from mlx_openai_server_hub.sizes import SizeSpec, format_size, parse_size, parse_size_or_share

GiB, MiB = 2**30, 2**20

# --- sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12GB", 12 * GiB),
        ("12 gb", 12 * GiB),
        ("800MB", 800 * MiB),
        ("1.5GiB", int(1.5 * GiB)),
        ("2g", 2 * GiB),
        ("1TB", 2**40),
        ("512KB", 512 * 1024),
        ("4096", 4096),
        (4096, 4096),
        (8.0, 8),
        (".5GB", GiB // 2),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text, "memory") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("12XB", "unknown unit 'XB'"),
        ("twelve", "must be a size"),
        (True, "must be a size"),
        (-5, "more than zero"),
        ("0", "more than zero"),
        (1.5, "must be a size"),
        ("9999TB", "at most"),
        ([1], "must be a size"),
    ],
)
def test_parse_size_errors_name_the_key(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value, "models[0].memory")
    assert str(info.value).startswith("models[0].memory")
    assert fragment in str(info.value)


def test_zero_allowed_when_asked() -> None:
    assert parse_size("0", "memory_safety_margin", allow_zero=True) == 0


def test_share_of_physical_memory() -> None:
    spec = parse_size_or_share("75%", "memory_budget")
    assert spec == SizeSpec(share=0.75)
    assert spec.resolve(32 * GiB) == 24 * GiB
    assert str(spec) == "75%"
    absolute = parse_size_or_share("48GB", "memory_budget")
    assert absolute.resolve(1) == 48 * GiB and str(absolute) == "48.0 GB"
    for bad in ("0%", "101%", "-3%"):
        with pytest.raises(ValueError, match=r"^memory_budget"):
            parse_size_or_share(bad, "memory_budget")
    with pytest.raises(ValueError, match='share of physical memory such as "75%"'):
        parse_size_or_share("lots", "memory_budget")


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(int(4.2 * GiB)) == "4.2 GB"
    assert format_size(800 * MiB) == "800.0 MB"
    assert format_size(None) == "unknown"


# --- estimate from weights on disk -------------------------------------------------


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        stream.truncate(size)  # sparse: the size is what counts
    return path


def test_estimate_from_local_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    _write(model / "model-00001-of-00002.safetensors", 3 * MiB)
    _write(model / "model-00002-of-00002.safetensors", 2 * MiB)
    _write(model / "pytorch_model.bin", 50 * MiB)  # same weights, other format: not counted
    (model / "config.json").write_text("{}")
    found = estimate_memory(str(model))
    assert found is not None
    assert found.weights_bytes == 5 * MiB and found.files == 2
    assert found.bytes == 5 * MiB + RUNTIME_BASELINE_BYTES
    assert str(model) in found.label


def test_estimate_subfolders_and_other_formats(tmp_path: Path) -> None:
    diffusers = tmp_path / "sd"
    _write(diffusers / "unet" / "diffusion_pytorch_model.safetensors", 7 * MiB)
    _write(diffusers / "vae" / "diffusion_pytorch_model.safetensors", 1 * MiB)
    _write(diffusers / ".cache" / "junk.safetensors", 99 * MiB)  # hidden: ignored
    assert estimate_memory(str(diffusers)).weights_bytes == 8 * MiB  # type: ignore[union-attr]
    whisper = tmp_path / "whisper"
    _write(whisper / "weights.npz", 4 * MiB)
    assert estimate_memory(str(whisper)).weights_bytes == 4 * MiB  # type: ignore[union-attr]
    single = _write(tmp_path / "one.gguf", 6 * MiB)
    assert estimate_memory(str(single)).weights_bytes == 6 * MiB  # type: ignore[union-attr]


def test_estimate_unknown_cases(tmp_path: Path) -> None:
    assert estimate_memory(str(tmp_path / "missing")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert estimate_memory(str(empty)) is None
    partial = tmp_path / "partial"
    _write(partial / "model-00001-of-00002.safetensors", MiB)
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (partial / "model.safetensors.index.json").write_text(json.dumps(index))
    assert estimate_memory(str(partial)) is None  # a shard the index lists is missing


def _fake_hf_cache(
    root: Path, repo: str, files: dict[str, int], dangling: str | None = None
) -> str:
    """The layout huggingface_hub writes: blobs, refs/main, snapshots/<commit>/ symlinks."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for index, (name, size) in enumerate(files.items()):
        blob = _write(repo_dir / "blobs" / f"blob{index}", size)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    if dangling:
        (snap / dangling).symlink_to("../../blobs/never-arrived")
    return commit


def test_estimate_from_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _fake_hf_cache(
        cache, "mlx-community/Tiny-4bit", {"model.safetensors": 9 * MiB, "config.json": 10}
    )
    found = estimate_memory("mlx-community/Tiny-4bit")
    assert found is not None and found.weights_bytes == 9 * MiB
    assert estimate_memory("mlx-community/Not-Downloaded") is None
    # HF_HUB_CACHE wins over HF_HOME.
    other = tmp_path / "elsewhere"
    _fake_hf_cache(other, "mlx-community/Tiny-4bit", {"model.safetensors": 2 * MiB})
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert estimate_memory("mlx-community/Tiny-4bit").weights_bytes == 2 * MiB  # type: ignore[union-attr]


def test_estimate_hf_cache_incomplete_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _fake_hf_cache(
        tmp_path, "org/half", {"model-1.safetensors": MiB}, dangling="model-2.safetensors"
    )
    assert estimate_memory("org/half") is None


# --- sampling a real process group -------------------------------------------------

_HOLDER = """
import subprocess, sys, time
block = bytearray(int(sys.argv[1]) * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page so it is resident, not just reserved
if sys.argv[2] == "parent":
    subprocess.Popen([sys.executable, __file__, sys.argv[3], "child", "0"])
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def group_holding_memory(tmp_path: Path):
    """A new process group: a parent holding 80 MB and its child holding 60 MB."""
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), "80", "parent", "60"],
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_group_footprint_counts_every_process(group_holding_memory: subprocess.Popen) -> None:
    pgid = group_holding_memory.pid
    deadline = time.monotonic() + 30
    total = 0
    while time.monotonic() < deadline:
        members = memory.group_processes(pgid)
        total = memory.group_footprint(pgid) or 0
        if len(members) == 2 and total >= 140 * MiB:
            break
        time.sleep(0.2)
    assert members[0].pid == pgid  # the leader first
    assert len(members) == 2
    # 80 + 60 MB touched, plus two interpreters; well under 1 GB.
    assert 140 * MiB <= total < 600 * MiB
    parent_only = memory.process_footprint(members[0])
    assert 80 * MiB <= parent_only < total


def test_group_footprint_of_a_gone_group() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(10)
    assert memory.group_footprint(proc.pid) is None


async def test_ledger_samples_and_learns(
    group_holding_memory: subprocess.Popen, tmp_path: Path
) -> None:
    ledger = memory.MemoryLedger(tmp_path)
    ledger.configure([memory.MemorySubject("m", "/models/m")])
    ledger.begin_load("m")
    task = asyncio.create_task(ledger.run_sampler("m", group_holding_memory.pid, interval=0.1))
    try:
        for _ in range(300):
            entry = ledger.get("m")
            if (entry.peak_bytes or 0) >= 140 * MiB:
                break
            await asyncio.sleep(0.1)
        assert entry.now_bytes and entry.now_bytes >= 140 * MiB
        assert ledger.used_bytes() == entry.now_bytes
        assert entry.need() == (entry.learned_bytes, "learned")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert entry.now_bytes is None  # the sampler stopped: nothing held as far as it knows
    assert entry.peak_bytes >= 140 * MiB  # type: ignore[operator]
    saved = json.loads((tmp_path / memory.LEARNED_FILE).read_text())
    assert saved["models"]["m"]["bytes"] == entry.learned_bytes


async def test_sampler_ends_when_the_group_exits(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(0.5)", start_new_session=True
    )
    ledger = memory.MemoryLedger(tmp_path)
    ledger.configure([memory.MemorySubject("m", "/models/m")])
    await asyncio.wait_for(ledger.run_sampler("m", proc.pid, interval=0.05), 20)
    await proc.wait()
    assert ledger.get("m").now_bytes is None and ledger.get("m").peak_bytes


# --- learned sizes across restarts ----------------------------------------------------


async def test_learned_survives_a_restart_and_respects_the_fingerprint(tmp_path: Path) -> None:
    subjects = [memory.MemorySubject("a", "/models/a"), memory.MemorySubject("b", "/models/b")]
    first = memory.MemoryLedger(tmp_path, sampler=lambda _pgid: 5 * GiB)
    first.configure(subjects)
    first.record("a", 3 * GiB)
    first.record("a", 2 * GiB)  # a lower sample never lowers what was learned
    await first.flush(force=True)
    second = memory.MemoryLedger(tmp_path)
    second.configure(subjects)
    await second.open()
    assert second.get("a").learned_bytes == 3 * GiB
    assert second.get("a").need() == (3 * GiB, "learned")
    assert second.get("b").need() == (0, "unknown")
    # A changed model_path is another model: what was learned no longer applies.
    second.configure([memory.MemorySubject("a", "/models/other"), subjects[1]])
    assert second.get("a").learned_bytes is None
    # `memory` from hub.yaml wins over everything.
    second.configure([memory.MemorySubject("a", "/models/a", configured_bytes=GiB)])
    assert second.get("a").need() == (GiB, "config")
    assert "b" not in second.models


def test_learned_store_tolerates_damage(tmp_path: Path) -> None:
    path = tmp_path / memory.LEARNED_FILE
    path.write_text("{not json")
    store = memory.LearnedStore(path)
    store.load()
    assert store.entries == {}
    store.put("x", "fp", 10)
    store.save()
    assert json.loads(path.read_text())["models"]["x"]["bytes"] == 10
    assert [p.name for p in tmp_path.iterdir()] == [memory.LEARNED_FILE]  # no temp file left


async def test_ledger_estimates_from_disk(tmp_path: Path) -> None:
    _write(tmp_path / "w" / "model.safetensors", 4 * MiB)
    ledger = memory.MemoryLedger(tmp_path / "logs")
    ledger.configure([memory.MemorySubject("w", str(tmp_path / "w"))])
    await ledger.open()
    need, source = ledger.get("w").need()
    assert (need, source) == (4 * MiB + RUNTIME_BASELINE_BYTES, "estimate")
    status = ledger.get("w").status()
    assert status["memory_estimate_bytes"] == need and status["memory_need_source"] == "estimate"


# --- hub.yaml keys ---------------------------------------------------------------------


def _config(text: str):
    from mlx_openai_server_hub.config import load_config_text

    return load_config_text(text, Path("/tmp/h6/hub.yaml"))


def test_config_keys() -> None:
    config = _config(
        "memory_budget: 75%\nmemory_safety_margin: 0\n"
        "models:\n  - {name: a, model_path: /x, memory: 12GB}\n  - {name: b, model_path: /y}\n"
    )
    assert config.memory_budget == SizeSpec(share=0.75)
    assert config.memory_safety_margin == SizeSpec(bytes=0)
    assert config.models[0].memory == 12 * GiB and config.models[1].memory is None
    # Changing only `memory` does not restart a worker.
    assert "memory" not in config.models[0].worker_identity()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("memory_budget: lots\n", "memory_budget: memory_budget must be a size"),
        ("memory_budget: 0%\n", "memory_budget: memory_budget as a share"),
        ("memory_safety_margin: -1\n", "memory_safety_margin: memory_safety_margin must be"),
    ],
)
def test_config_key_errors(text: str, message: str) -> None:
    from mlx_openai_server_hub.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(text + "models:\n  - {name: a, model_path: /x}\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.memory: memory must be a size"):
        _config("models:\n  - {name: a, model_path: /x, memory: 12 bananas}\n")
