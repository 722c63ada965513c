"""The package's import graph has no cycles (README, Layout).

A cycle means two modules can only be understood together, and it is where a
refactor starts to need lazy imports to work at all. Imports inside functions
count too: they are still dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mlx_openai_server_hub"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (absolute or relative, anywhere in it)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules and name != here}
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycles():
    edges = graph()
    # Packages import their own modules; that is containment, not a dependency cycle.
    for name in edges:
        edges[name] = {m for m in edges[name] if not m.startswith(name + ".")}
    assert find_cycle(edges) is None, " → ".join(find_cycle(edges) or [])


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_cli_contract_does_not_import_the_server():
    edges = graph()
    bottom = {"mlx_openai_server_hub", "mlx_openai_server_hub.atomic"}
    for light in ("mlx_openai_server_hub.contract", "mlx_openai_server_hub.process_group"):
        assert edges[light] <= bottom, light


def test_the_download_child_starts_without_the_web_server() -> None:
    # Every download pays for the child's imports; aiohttp alone was 0.2 s of 0.6 s.
    probe = "import sys, mlx_openai_server_hub.download_process; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_hub_process_does_not_import_huggingface_hub() -> None:
    # Downloads run in a child: huggingface_hub (and httpx under it) would cost the hub
    # about 10 MB of resident memory and 0.2 s of start-up for nothing.
    probe = "import sys, mlx_openai_server_hub.app; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
