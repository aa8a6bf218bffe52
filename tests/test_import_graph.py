"""The layering DESIGN.md and STYLE.md promise, read from the source: `parsers` imports nothing of ours,
`storage` only `parsers`' data types, and no two modules of `gateway` import each other, directly or round
a cycle, lazily inside a function or not (issue 18: service ↔ intake_process ↔ listeners and
preparer ↔ intake did). Every parts-building call of gateway/ lives in the composition root."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("gateway", "parsers", "storage")
# What storage/ takes from parsers/ today: the frozen data types a PreparedMessage carries.
STORAGE_MAY_IMPORT_FROM_PARSERS = {"parsers.types"}
COMPOSITION_ROOT = "gateway.assembly"
# Constructing one of these is wiring: it belongs in the composition root, so that every process and
# command gets the same parts built the same way.
PARTS = {
    "CaseStore",
    "CaseWork",
    "Inbox",
    "Spool",
    "Threader",
    "GatewayHandler",
    "IntakeWorker",
    "ConfirmWorker",
    "make_engine",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(package: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield _module_name(path), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _known_modules() -> set[str]:
    return {name for package in OURS for name, _tree in _sources(package)}


def _imports(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every module of ours `module` imports, at any depth of the tree. `from pkg import name` counts as
    importing `pkg.name` when that is a module, else `pkg` itself."""
    found: set[str] = set()
    is_package = (ROOT / module.replace(".", "/") / "__init__.py").exists()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {name for name in found if name.split(".")[0] in OURS}


def _graph(package: str) -> dict[str, set[str]]:
    known = _known_modules()
    return {name: _imports(name, tree, known) - {name} for name, tree in _sources(package)}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path (first node repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and target in graph:
                found = visit(target)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_gateway_modules_import_no_cycle() -> None:
    """Subpackages count module by module: `gateway.cli` (its __init__) importing the command modules
    while they import it back for shared helpers would be a cycle (they import gateway.cli.common)."""
    gateway = _graph("gateway")
    assert COMPOSITION_ROOT in gateway
    assert {"gateway.cli", "gateway.cli.common"} <= set(gateway), "gateway/**/*.py is walked, packages too"
    within = {name: {t for t in targets if t.startswith("gateway")} for name, targets in gateway.items()}
    cycle = _cycle(within)
    assert cycle is None, "gateway import cycle: " + " → ".join(cycle or [])


def test_nothing_the_composition_root_uses_imports_it_back() -> None:
    """Only the process modules and the CLI may take parts from the root; a part that did would make the
    root (and so every process) depend on itself."""
    users = {name for name, targets in _graph("gateway").items() if COMPOSITION_ROOT in targets}
    cli = {name for name in users if name == "gateway.cli" or name.startswith("gateway.cli.")}
    assert users - cli <= {"gateway.service", "gateway.intake_process", "gateway.listeners"}


def test_parsers_import_nothing_from_gateway_or_storage() -> None:
    offenders = {
        (name, target)
        for name, targets in _graph("parsers").items()
        for target in targets
        if target.split(".")[0] in ("gateway", "storage")
    }
    assert offenders == set()


def test_storage_imports_only_parsers_data_types() -> None:
    offenders = {
        (name, target)
        for name, targets in _graph("storage").items()
        for target in targets
        if target.split(".")[0] == "gateway"
        or (target.split(".")[0] == "parsers" and target not in STORAGE_MAY_IMPORT_FROM_PARSERS)
    }
    assert offenders == set()


def test_only_the_composition_root_builds_the_parts() -> None:
    builders = set()
    for name, tree in _sources("gateway"):
        if name == COMPOSITION_ROOT:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if called in PARTS:
                    builders.add((name, called))
    assert builders == set()
