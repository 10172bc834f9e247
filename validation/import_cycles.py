"""Import cycles and oversized modules in ``sflnet/`` and ``cli/``, found from the source alone.

Run from the repository root::

    python validation/import_cycles.py            # prints the cycles and the modules over 600 lines

The import graph is built with :mod:`ast`, without importing anything: every ``import`` and
``from ... import`` statement counts, also those inside functions (a lazy import that closes a
cycle is still a cycle, only a later one). ``cli/`` is the package ``sflnet_cli``. An edge goes
from a module to each sflnet module it names: ``from sflnet.training import run`` names
``sflnet.training.run`` when that is a module, else the package ``sflnet.training``. Importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so those packages are edges too.
Cycles are the strongly connected components of more than one module (or a module importing
itself), found with Tarjan's algorithm. Exit status 1 if there is a cycle or an oversized module.
"""

import argparse
import ast
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"sflnet": REPO / "sflnet", "sflnet_cli": REPO / "cli"}
MAX_LINES = 600


def find_modules():
    """{module name: path} of every .py file under the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve_relative(module, is_package, level, name):
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def imported_names(module, path):
    """Every module name an import statement of ``path`` names (absolute, sub-names included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules):
    """{module: set of modules it imports}, restricted to ``modules``."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(module, path):
            parts = name.split(".")
            # the named module (or, for "from pkg import obj", the package) and its parent packages
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                if prefix in modules:
                    edges.add(prefix)
        edges.discard(module)
        # a package's own __init__ running is not a cycle of a module inside it
        graph[module] = {target for target in edges if not module.startswith(target + ".")}
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def oversized(modules, limit=MAX_LINES):
    """[(path relative to the repository, lines)] of the modules longer than ``limit`` lines, longest first."""
    sizes = [(str(path.relative_to(REPO)), len(path.read_text(encoding="utf-8").splitlines()))
             for path in modules.values()]
    return sorted(((p, n) for p, n in sizes if n > limit), key=lambda item: -item[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    modules = find_modules()
    found = cycles(import_graph(modules))
    big = oversized(modules)
    print(f"{len(modules)} modules, {len(found)} import cycle(s), {len(big)} module(s) over {MAX_LINES} lines")
    for component in found:
        print("cycle: " + " <-> ".join(component))
    for path, lines in big:
        print(f"too long: {path} ({lines} lines)")
    return 1 if found or big else 0


if __name__ == "__main__":
    sys.exit(main())
