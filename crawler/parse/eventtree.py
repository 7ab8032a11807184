"""A page's tree built from libxml2's parse events, for the pages its own tree cannot take.

libxml2 builds trees no deeper than 2,048 levels; its event interface has no such
limit. BeautifulSoup's tree, built from those events, was the way past it, but
bs4 links each string it adds below an element that has children already by
walking up to the first ancestor with a next sibling: on a page whose elements
never close (each nested in the one before) that is the whole way to the root,
for every such string. 20,000 figures whose captions never close, a comment in
each, took 250 s, cut at the parser's CPU limit with every image lost. This tree
keeps what extraction asks of a tree (``crawler.parse.trees.Tree``), each
answer in time of the page's length: the elements in document order, each
one's parent, children and text, and its nearest ancestor or first descendant
of a tag name, remembered as it is found.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from lxml import etree

from crawler.parse.memowalk import Known, first_descendant, nearest_ancestor


class Node:
    """An element: its tag, attributes, parent, and children (elements and text)."""

    __slots__ = ("attrib", "children", "parent", "tag")

    def __init__(self, tag: str, attrib: dict[str, str], parent: Node | None) -> None:
        self.tag = tag
        self.attrib = attrib
        self.parent = parent
        self.children: list[Node | str] = []


# Elements whose text is no part of a caption's (``crawler.parse.trees.Tree.caption_text``).
NOT_CAPTION_TEXT = frozenset({"figure", "script", "style"})

_NO_ATTRIBUTES: dict[str, str] = {}  # shared by the elements without any (never written)


class _Builder:
    """lxml's parser target: the tree from start, end and data events. Comments and
    processing instructions are left out: no text extraction takes theirs."""

    def __init__(self) -> None:
        self.root = Node("", {}, None)  # above <html>: the document
        self.order: list[Node] = []
        self._open = [self.root]

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        parent = self._open[-1]
        node = Node(tag, dict(attrib) if attrib else _NO_ATTRIBUTES, parent)
        parent.children.append(node)
        self._open.append(node)
        self.order.append(node)

    def end(self, tag: str) -> None:
        # (libxml2 ends every element it started, those it closes unasked too: this
        # only guards the root, and an end out of turn closes down to its element.)
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def data(self, text: str) -> None:
        self._open[-1].children.append(text)

    def close(self) -> _Builder:
        return self


class EventTree:
    """A parsed page (``crawler.parse.trees.Tree``), from libxml2's events."""

    def __init__(self, root: Node, order: list[Node]) -> None:
        self._root = root
        self._order = order
        # Per tag name, what each node's walk found (crawler.parse.memowalk): the nearest
        # ancestor of that name (``enclosing``), the first descendant (``child`` deep).
        self._nearest: dict[str, Known] = {}
        self._first: dict[str, Known] = {}

    @classmethod
    def parse(cls, data: bytes | str) -> EventTree | None:
        """The tree of ``data`` (UTF-8 bytes, or text); None when nothing was parsed."""
        builder = _Builder()
        # (lxml-stubs know neither default_doctype nor a target that takes str only,
        # as the HTML parser hands it.)
        parser = etree.HTMLParser(target=builder,  # type: ignore[call-arg, arg-type]
                                  no_network=True, default_doctype=False, huge_tree=True,
                                  encoding="utf-8" if isinstance(data, bytes) else None)
        try:
            parser.feed(data)
            parser.close()
        except (etree.LxmlError, ValueError):
            return None
        if not builder.order:
            return None
        return cls(builder.root, builder.order)

    def elements(self, tags: Collection[str], attributes: Collection[str],
                 ) -> Iterator[tuple[str, Any, Node, bool]]:
        for node in self._order:
            yield node.tag, node.attrib.get, node, bool(node.attrib)

    def parent(self, node: Node) -> Node | None:
        parent = node.parent
        return parent if parent is not self._root else None

    def name(self, node: Node) -> str:
        return node.tag

    def text(self, node: Node) -> str:
        return _text_within(node, skip=frozenset())

    def enclosing(self, node: Node, tag: str) -> Node | None:
        found: Node | None = nearest_ancestor(node, tag, self._nearest.setdefault(tag, {}),
                                              self.parent, _name)
        return found

    def child(self, node: Node, tag: str, deep: bool = False) -> Node | None:
        if not deep:
            return next((child for child in node.children
                         if isinstance(child, Node) and child.tag == tag), None)
        found: Node | None = first_descendant(node, tag, self._first.setdefault(tag, {}),
                                              _children, _name)
        return found

    def attribute(self, node: Node, key: str) -> str | None:
        return node.attrib.get(key)

    def caption_text(self, node: Node) -> str:
        return _text_within(node, skip=NOT_CAPTION_TEXT)

    def prefixed(self) -> list[Node]:
        return [node for node in self._order if ":" in node.tag]

    def rename(self, node: Node, name: str) -> None:
        node.tag = name


def _name(item: Node | str) -> str | None:
    return item.tag if isinstance(item, Node) else None


def _children(node: Node) -> list[Node | str]:
    return node.children


def _text_within(node: Node, skip: frozenset[str]) -> str:
    """The text of ``node``'s descendants, in document order, but for that of the
    elements named ``skip`` below it (iterative: a page may nest past any stack)."""
    parts: list[str] = []
    todo: list[Node | str] = list(reversed(node.children))
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            parts.append(item)
        elif item.tag not in skip:
            todo += reversed(item.children)
    return "".join(parts)
