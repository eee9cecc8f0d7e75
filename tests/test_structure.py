"""The project's structure, checked on the source with ``ast`` (no project module is imported).

ARCHITECTURE.md, *Layers*: cli > node > storage > protocol, no import cycles, ``protocol/`` pure (no IO,
no clock, no OS randomness), modules and classes small. Each rule is one test; a failure lists every
offender with the file and line to look at.

How imports are read: every ``import`` counts, also inside functions and under ``TYPE_CHECKING`` (a lazy
import that dodges a cycle at run time is still a cycle in the design). ``import a.b.c`` imports the
module ``a.b.c``; ``from a.b import c`` imports the module ``a.b.c`` when ``c`` is a submodule, else
``a.b`` itself (its ``__init__``); relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "protocol": "tidings.protocol",
    "storage": "tidings.storage",
    "node": "tidings.node",
    "cli": "tidings.cli",
}

#: Libraries ``protocol/`` may use besides the stdlib: formats and cryptography, no IO and no clock.
PURE_LIBRARIES = {"msgpack", "cryptography", "noise", "nacl", "coincurve"}

#: Modules that do IO, read a clock or draw OS randomness: never in ``protocol/`` (callers pass ``now``,
#: rngs and bytes in; STYLE.md 1).
IO_MODULES = {
    "trio", "anyio", "asyncio", "socket", "socketserver", "ssl", "select", "selectors", "sqlite3",
    "time", "datetime", "random", "secrets", "uuid", "os", "pathlib", "shutil", "tempfile", "io",
    "threading", "multiprocessing", "concurrent", "subprocess", "signal", "mmap", "fcntl", "http",
    "urllib", "ftplib", "smtplib", "logging", "requests", "httpx", "hypercorn", "trio_websocket",
}  # fmt: skip

MAX_FILE_LINES = 500
MAX_CLASS_LINES = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    """One imported name as written: the dotted module it names, where, and in what context."""

    source: str  # the importing module
    target: str  # the imported module (a project module when it is one)
    path: str
    line: int
    where: str  # "top level", "in a function" or "under TYPE_CHECKING"

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target} ({self.where})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Module:
    name: str
    path: Path
    top: str  # protocol, storage, node or cli
    tree: ast.Module

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for top, dotted in PACKAGES.items():
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([dotted, *parts])
            found[name] = Module(
                name=name, path=path, top=top, tree=ast.parse(path.read_text(encoding="utf-8"))
            )
    return found


MODULES = _modules()


def _contexts(tree: ast.Module) -> dict[int, str]:
    """``id(node) -> where`` for every import node: inside a function, under TYPE_CHECKING, or top level."""
    where: dict[int, str] = {}

    def visit(node: ast.AST, context: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = context
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = "in a function"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = "under TYPE_CHECKING" if context == "top level" else context
            if isinstance(child, ast.Import | ast.ImportFrom):
                where[id(child)] = inner
            visit(child, inner)

    visit(tree, "top level")
    return where


def _imports(module: Module) -> list[Import]:
    """Every import of ``module``, each imported name resolved to the module it loads."""
    is_package = module.path.name == "__init__.py"
    where = _contexts(module.tree)
    out: list[Import] = []
    for node in ast.walk(module.tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.name.split(".") if is_package else module.name.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULES else base)
        for target in dict.fromkeys(targets):
            out.append(
                Import(
                    source=module.name,
                    target=target,
                    path=module.rel,
                    line=node.lineno,
                    where=where[id(node)],
                )
            )
    return out


IMPORTS = [imp for module in MODULES.values() for imp in _imports(module)]


def _fail(title: str, offenders: list[str]) -> None:
    """Fail with one readable list of ``offenders`` (no traceback of the checker itself)."""
    if offenders:
        pytest.fail(f"{title} ({len(offenders)}):\n  " + "\n  ".join(offenders), pytrace=False)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(MODULES):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def test_no_import_cycles():
    offenders = []
    for component in _cycles():
        members = set(component)
        edges = [f"    {imp}" for imp in IMPORTS if imp.source in members and imp.target in members]
        names = " <-> ".join(name.removeprefix("tidings.") for name in component)
        offenders.append(f"cycle {names}:\n" + "\n".join(sorted(set(edges))))
    _fail("import cycles (imports inside functions and under TYPE_CHECKING count)", offenders)


def _layer_breaches(top: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        str(imp)
        for imp in IMPORTS
        if MODULES[imp.source].top == top and any(imp.target.startswith(f"tidings.{f}") for f in forbidden)
    ]


def test_node_does_not_import_cli():
    _fail("node/ imports cli/ (layers: cli > node > storage > protocol)", _layer_breaches("node", ("cli",)))


def test_storage_does_not_import_node_or_cli():
    _fail(
        "storage/ imports node/ or cli/ (layers: cli > node > storage > protocol)",
        _layer_breaches("storage", ("node", "cli")),
    )


def test_protocol_imports_only_itself_the_stdlib_and_pure_libraries():
    allowed = set(sys.stdlib_module_names) | PURE_LIBRARIES | {"__future__"}
    offenders = [
        str(imp)
        for imp in IMPORTS
        if MODULES[imp.source].top == "protocol"
        and not imp.target.startswith("tidings.protocol")
        and (imp.target.startswith("tidings.") or imp.target.split(".")[0] not in allowed)
    ]
    _fail(f"protocol/ imports beyond itself, the stdlib and {sorted(PURE_LIBRARIES)}", offenders)


def test_protocol_does_no_io_and_reads_no_clock():
    offenders = [
        str(imp)
        for imp in IMPORTS
        if MODULES[imp.source].top == "protocol" and imp.target.split(".")[0] in IO_MODULES
    ]
    _fail("IO, clock or OS-random imports in protocol/ (pass now, rngs and bytes in)", offenders)


def test_no_file_over_500_lines():
    offenders = []
    for module in MODULES.values():
        lines = len(module.path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES:
            offenders.append(f"{module.rel}: {lines} lines")
    _fail(f"files over {MAX_FILE_LINES} lines", sorted(offenders))


def test_no_class_over_300_lines():
    offenders = []
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    offenders.append(f"{module.rel}:{node.lineno} class {node.name}: {lines} lines")
    _fail(f"classes over {MAX_CLASS_LINES} lines", sorted(offenders))


def test_the_checker_reads_imports_as_documented():
    """The rules above are only as good as the import reading: check it on known modules."""
    assert len(MODULES) > 50 and "tidings.node.web" in MODULES and "tidings.protocol" in MODULES
    by_source: dict[str, list[Import]] = defaultdict(list)
    for imp in IMPORTS:
        by_source[imp.source].append(imp)
    app = {imp.target for imp in by_source["tidings.node.web.app"]}
    # ``from tidings.node.web.auth import X`` loads the auth module, not the package's __init__
    assert "tidings.node.web.auth" in app and "tidings.node.web" not in app
    # ``from tidings.node import actions`` (a submodule) loads node/actions.py
    assert "tidings.node.actions" in {imp.target for imp in by_source["tidings.node.web.api"]}
    # relative imports in a package __init__ resolve against the package itself
    protocol_init = {imp.target for imp in by_source["tidings.protocol"]}
    assert {"tidings.protocol.errors", "tidings.protocol.content"} <= protocol_init
    # TYPE_CHECKING and function-level imports are seen, and said so
    wheres = {imp.where for imp in IMPORTS}
    assert wheres == {"top level", "in a function", "under TYPE_CHECKING"}
