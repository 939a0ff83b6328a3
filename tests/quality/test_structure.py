"""The shape of the code, computed from the source: no import cycles (lazy and TYPE_CHECKING imports
count), no reaching into another module's private names, the layers import only downwards, and the
core stays in small modules."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "providers", "storage")
#: The largest a module in bot/core may grow.
CORE_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, ast.ImportFrom | ast.Import]]:
    """Every project module `name` imports, anywhere in the file (functions and TYPE_CHECKING blocks too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node  # type: ignore[misc]


GRAPH = {name: {t for t, _ in _imports(name, path)} for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_cycle_counting_lazy_and_typing_imports() -> None:
    assert len(MODULES) > 100, "the walk found the project's modules"
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    GRAPH["bot.core.models"].add("bot.core.service")  # the service imports models: a cycle now
    try:
        assert any("bot.core.service" in c and "bot.core.models" in c for c in _cycles())
    finally:
        GRAPH["bot.core.models"].discard("bot.core.service")


def test_no_module_imports_another_modules_private_names() -> None:
    offences = []
    for name, path in MODULES.items():
        for target, node in _imports(name, path):
            if isinstance(node, ast.ImportFrom):
                offences += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name} from {target}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert offences == []


def test_no_part_reaches_into_a_core_objects_privates() -> None:
    """`service._check_where(...)` from another module: what the one-door work removed. Only `self`,
    `cls` and a few third-party objects (aiohttp's site, argparse, namedtuples) are reached into."""
    allowed = {"_SubParsersAction", "_replace", "_server", "_async_client"}
    offences = []
    for name, path in MODULES.items():
        if not name.startswith(("bot.core", "bot.adapters", "bot.web", "bot.cli")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls") or node.attr in allowed:
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                    continue
                if name == "bot.core.events" and node.attr == "_pump":  # the bus and its subscriptions, one module
                    continue
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert offences == []


def test_layers_import_downwards_only() -> None:
    def imports(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
        return [f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith(prefix) for t in targets if t.startswith(forbidden)]

    assert imports("providers", ("bot.",)) == [], "providers know nothing of the bot"
    assert imports("bot.adapters", ("providers",)) == [], "adapters get errors and pipelines through the core"
    assert imports("bot.core", ("bot.adapters", "bot.web", "bot.cli", "bot.app")) == [], "the core knows no door"
    assert imports("bot.config", ("bot.core.service", "bot.core.runner", "bot.core.admission")) == []


def test_core_modules_are_small() -> None:
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items() if n.startswith("bot.core.")}
    assert {n: lines for n, lines in big.items() if lines > CORE_MODULE_LINES} == {}
