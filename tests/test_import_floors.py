"""No import circles: the module graph of every package has no strongly connected component.

``lint-imports`` (contracts in ``pyproject.toml``) checks the floors and circles between
*sibling* modules; this test checks the whole graph, module by module (a package's
``__init__`` included), with grimp, import-linter's own graph library, counting imports
made only for type checking too. A circle is printed with the imports that close it, so
whoever meets this failure sees what to break.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set

import grimp
import pytest

PACKAGES = ("common", "protocol", "shipboard", "shore", "vessel_relay")


def strongly_connected(graph: Mapping[str, Set[str]]) -> Iterator[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for child in edges:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    yield sorted(component)


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    """module -> the modules it imports directly (our packages only)."""
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False)
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def _describe(component: list[str], graph: Mapping[str, Set[str]]) -> str:
    members = set(component)
    edges = [
        f"  {source} -> {target}"
        for source in component
        for target in sorted(graph[source] & members)
    ]
    return f"circle of {len(component)} modules:\n" + "\n".join(edges)


def test_strongly_connected_finds_circles_and_only_circles() -> None:
    """The circle finder itself: a -> b -> c -> a is one circle; d -> a and e alone are
    not in any."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    found = [c for c in strongly_connected(graph) if len(c) > 1]
    assert found == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str, imports: dict[str, set[str]]) -> None:
    """No module of the package imports itself back through others (a circle), so each
    can be read, tested and changed from the bottom up."""
    circles = [
        component
        for component in strongly_connected(imports)
        if len(component) > 1 and component[0].split(".")[0] == package
    ]
    assert not circles, "\n\n".join(_describe(c, imports) for c in circles)
