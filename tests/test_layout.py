"""The package's layout stays readable: no import circle between its modules, and no module longer than a sitting.

Modules are the files of `src/lychee_hf` and `modeling/` (installed as `lychee_hf.modeling`). An import anywhere in
a file counts (a function-level import too: it is still a dependency, only a late one). A name imported from a
package is followed to the module that defines it, through the package's `__init__` re-exports, so that
`from ..data import QAExample` is a dependency on `data/examples.py`, not on all of `data/`.
"""

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lychee_hf": ROOT / "src" / "lychee_hf", "lychee_hf.modeling": ROOT / "modeling"}

MAX_LINES = 500
# Files allowed over MAX_LINES, each with its reason: one class, or a data table.
LONG_FILES = {
    "modeling/modeling_lychee.py": "one class, LycheeMemoryForCausalLM: the model's whole public surface",
}


@cache
def modules() -> dict[str, Path]:
    """Every module by dotted name (a package by its own name, for its `__init__.py`)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            found[".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = path
    return found


@cache
def tree(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(encoding="utf-8"))


def imports(module: str, nodes) -> list[tuple[str, str | None]]:
    """(module imported from, name imported from it or None) for every import statement among `nodes`."""
    is_package = modules()[module].name == "__init__.py"
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            found += [(source, alias.name) for alias in node.names]
    return found


def resolve(source: str, name: str | None) -> str | None:
    """The module of ours that `from source import name` (or `import source`) depends on, or None."""
    known = modules()
    if name and f"{source}.{name}" in known:  # a submodule
        return f"{source}.{name}"
    while source and source not in known:
        source = source.rpartition(".")[0]
    if not source:
        return None  # not ours
    if name and known[source].name == "__init__.py":
        return reexports(source).get(name, source)
    return source


@cache
def reexports(package: str) -> dict[str, str]:
    """The names a package's `__init__` imports from its modules, each with the module that defines it."""
    found = {}
    for node in tree(package).body:
        if isinstance(node, ast.ImportFrom):
            for (source, name), alias in zip(imports(package, [node]), node.names):
                target = resolve(source, name)
                if target is not None and target != package:
                    found[alias.asname or name] = target
    return found


def dependencies() -> dict[str, set[str]]:
    graph = {}
    for module in modules():
        targets = {resolve(source, name) for source, name in imports(module, ast.walk(tree(module)))}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_walk_sees_the_dependencies_it_should():
    graph = dependencies()
    assert "lychee_hf.data.examples" in graph["lychee_hf.training.rl_trainer"]  # `from ..data import QAExample`
    assert "lychee_hf.modeling.adapters_lychee" in graph["lychee_hf.training.rl_trainer"]
    assert "lychee_hf.training.trainer_utils" in graph["lychee_hf.commands.arguments"]  # a function-level import
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_between_modules():
    found = circles(dependencies())
    assert not found, "import circles (modules that import each other, directly or not): " + "; ".join(
        " <-> ".join(component) for component in found
    )


def test_no_module_is_longer_than_a_sitting():
    lengths = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules().values()
    }
    too_long = {path: n for path, n in lengths.items() if n > MAX_LINES and path not in LONG_FILES}
    assert not too_long, f"over {MAX_LINES} lines: split by job, or allow in LONG_FILES with a reason: {too_long}"
    stale = [path for path in LONG_FILES if lengths.get(path, 0) <= MAX_LINES]
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): drop from LONG_FILES: {stale}"
    assert all(reason.strip() for reason in LONG_FILES.values())


def test_the_library_imports_only_the_public_modeling_surface():
    # modeling/*_lychee.py ship in every checkpoint as remote code: what lychee_hf uses of them is declared in
    # modeling/__init__.py (its __all__), so a private helper never becomes an API by accident.
    public = set(reexports("lychee_hf.modeling"))
    private = []
    for module, path in modules().items():
        if module.startswith("lychee_hf.modeling"):
            continue
        for source, name in imports(module, ast.walk(tree(module))):
            if source.startswith("lychee_hf.modeling.") or (source == "lychee_hf.modeling" and name not in public):
                private.append(f"{path.relative_to(ROOT)}: from {source} import {name}")
    assert not private, "\n".join(private)
