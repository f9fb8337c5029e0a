"""Print the package-level import cycles among the ``mdmserver.*`` packages.

A package imports another when one of its modules imports a module of the other (function-level
imports included: grimp reads every ``import`` statement). Packages that reach each other are printed as
one group (a strongly connected component), followed by the edges inside it, so the imports that close
the cycle can be read off. Exit status 1 when there is a cycle, 0 when there is none.

By default a package is every module in it, its ``models`` and ``schemas`` included; only the imports
*made by* the entry floor (``*.views``, ``*.cli``: the top of the ``floors`` contract, allowed to call any
package below) are left out. That graph must have no cycle. The tables that ``selection`` reads live in
``mdmserver.records`` for that reason. ``--all`` counts the entry floor too: a package's views sit above
the services of other packages that read its own tables, so that graph cannot be acyclic by
construction.

    .venv/bin/python tools/import_cycles.py            # the package graph; exit 1 on a cycle
    .venv/bin/python tools/import_cycles.py --all      # the entry floor's imports counted too
    .venv/bin/python tools/import_cycles.py --quiet    # the groups only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import grimp

ROOT = "mdmserver"
#: the last part of a module name that puts it on the entry floor (the top)
ENTRY = frozenset({"views", "cli"})


def _child(module: str, root: str) -> str:
    return ".".join(module.split(".")[: root.count(".") + 2])


def package_graph(root: str = ROOT, *, every_module: bool = False) -> dict[str, set[str]]:
    """Edges between the direct children of ``root`` (packages and top-level modules); unless
    ``every_module``, the imports made by entry modules (views, CLI) are not counted."""
    graph = grimp.build_graph(root)
    edges: dict[str, set[str]] = {child: set() for child in sorted(graph.find_children(root))}
    for importer in graph.modules:
        if importer == root or (not every_module and importer.rsplit(".", 1)[-1] in ENTRY):
            continue
        source = _child(importer, root)
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported == root or not imported.startswith(root + "."):
                continue
            target = _child(imported, root)
            if target != source:
                edges[source].add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; only components with more than one node (a cycle) are returned."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components, key=lambda component: (-len(component), component))


def _short(name: str) -> str:
    return name.removeprefix(ROOT + ".")


def report(components: Iterable[list[str]], edges: dict[str, set[str]], quiet: bool) -> list[str]:
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"cycle of {len(component)}: " + ", ".join(_short(m) for m in component))
        if not quiet:
            for importer in component:
                inside = sorted(edges[importer] & members)
                if inside:
                    lines.append(f"    {_short(importer)} -> " + ", ".join(_short(m) for m in inside))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print the groups without their edges")
    parser.add_argument("--all", action="store_true", help="count the imports made by views and CLI modules too")
    args = parser.parse_args(argv)
    edges = package_graph(every_module=args.all)
    components = strongly_connected(edges)
    if not components:
        scope = "counting every module" if args.all else "every module but views and CLI, models and schemas included"
        print(f"no import cycle among the {ROOT}.* packages ({scope})")
        return 0
    print("\n".join(report(components, edges, args.quiet)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
