"""Walks up and down a Python-built page tree, each node passed once per tag name.

A page whose elements never close nests each one a level deeper: asking each
image's way to the root for a <figure> (rows that never close: 10,000 rows,
16 s), or each <source>'s whole <picture> for its <img> (10,000 pictures:
40 s), took time of the square of the page. Each answer is remembered for every
node passed on the way to it, so that the next question stops where an earlier
one passed. The trees give their own accessors: BeautifulSoup's
(``crawler.parse.trees``) and the event tree's (``crawler.parse.eventtree``).

``known`` maps id(node) to (node, its answer); the node is kept with its answer,
so that its id stays its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Known = dict[int, tuple[Any, Any]]


def nearest_ancestor(node: Any, tag: str, known: Known, parent_of: Callable[[Any], Any],
                     name_of: Callable[[Any], str | None]) -> Any:
    """The nearest ancestor of ``node`` named ``tag``, or None."""
    passed = []
    found = None
    current = node
    while True:
        cached = known.get(id(current))
        if cached is not None:
            found = cached[1]
            break
        parent = parent_of(current)
        passed.append(current)
        if parent is None or name_of(parent) == tag:
            found = parent
            break
        current = parent
    for one in passed:  # their nearest such ancestor is the same
        known[id(one)] = (one, found)
    return found


def first_descendant(node: Any, tag: str, known: Known,
                     children_of: Callable[[Any], Iterable[Any]],
                     name_of: Callable[[Any], str | None]) -> Any:
    """The first descendant of ``node`` named ``tag`` in document order, or None
    (``name_of`` is None for what is no element: text, a comment)."""
    path = [node]  # the nodes whose subtrees are being searched, outermost first
    children = [iter(children_of(node))]
    found = None
    while children:
        child = next(children[-1], None)
        if child is None:  # a subtree searched to its end: none in it
            done = path.pop()
            children.pop()
            known[id(done)] = (done, None)
            continue
        name = name_of(child)
        if name is None:
            continue
        if name == tag:
            found = child
            break
        cached = known.get(id(child))
        if cached is not None:
            if cached[1] is None:
                continue
            found = cached[1]
            break
        path.append(child)
        children.append(iter(children_of(child)))
    for one in path:  # the first in each subtree on the way to it
        known[id(one)] = (one, found)
    return found
