"""The two HTML engines behind ``extract``: the same walk over either tree.

``lxml`` (the default) parses with libxml2 and hands over its own elements;
the walk visits only the elements that can refer to something: those of the
tag names extraction handles, plus those carrying a style or lazy-image
attribute, which one XPath query finds. ``beautifulsoup`` builds a
BeautifulSoup tree (with lxml underneath, Python's own parser for what lxml
rejects) and visits every tag: about twenty times slower, kept for those who
want BeautifulSoup's tree. Both see the same libxml2 parse, so they find the
same URLs; ``tests/test_engines.py`` holds them to that. ``bs4`` is imported
only when its engine is chosen. A page libxml2 builds no tree of (nested past
2,048 levels, or a tag of thousands of attributes) gets the lxml engine a tree
built from libxml2's parse events (``crawler.parse.eventtree``). For a page
read as XML (XHTML), the elements named with a prefix bound to XHTML's or SVG's
namespace are renamed to their local names after the parse (``parse``'s ``xml``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Protocol

from lxml import etree

from crawler.parse.eventtree import NOT_CAPTION_TEXT, EventTree
from crawler.parse.memowalk import Known, first_descendant, nearest_ancestor

__all__ = ["PARSERS", "Tree", "parse"]

PARSERS: tuple[str, ...] = ("lxml", "beautifulsoup")

# The namespaces whose elements extraction knows by their local names: XHTML's and
# SVG's (MathML's show no images).
_READ_NAMESPACES = frozenset({"http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg"})

# Attribute names an XPath step can spell as "@name"; others go through name().
_MANY_ATTRIBUTES = 4096
_XPATH_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class Getter(Protocol):
    def __call__(self, key: str, /) -> str | None: ...


class Tree(Protocol):
    """A parsed page, walked in document order."""

    def elements(self, tags: Collection[str], attributes: Collection[str],
                 ) -> Iterator[tuple[str, Getter, Any, bool]]:
        """(tag name, attribute getter, node, has one of ``attributes``) for each
        element named in ``tags`` or carrying one of ``attributes`` (lower case);
        an engine may yield more elements than that."""
        ...

    def parent(self, node: Any) -> Any | None: ...

    def name(self, node: Any) -> str: ...

    def text(self, node: Any) -> str:
        """The text inside ``node`` (a ``<style>`` block's style sheet)."""
        ...

    def enclosing(self, node: Any, tag: str) -> Any | None:
        """The nearest ancestor of ``node`` named ``tag``."""
        ...

    def child(self, node: Any, tag: str, deep: bool = False) -> Any | None:
        """The first child (or descendant, if ``deep``) of ``node`` named ``tag``."""
        ...

    def attribute(self, node: Any, key: str) -> str | None: ...

    def caption_text(self, node: Any) -> str:
        """The text of ``node`` and its descendants, without comments, nor the text of
        the elements named in ``NOT_CAPTION_TEXT`` nested in it: a <figure> (whose
        caption is its own: a page of figures nested in captions that never close made
        each caption the rest of the page, and its parse took time of the square of the
        page, 600 KB: 200 s), a <script> or a <style> (no reader's text)."""
        ...

    def prefixed(self) -> Iterable[Any]:
        """The elements whose names hold a colon (``svg:image``), in document order
        (an engine may give none for a page that declares no prefix)."""
        ...

    def rename(self, node: Any, name: str) -> None: ...


def parse(text: str, parser: str = "lxml", utf8: bytes | None = None,
          xml: bool = False) -> Tree | None:
    """Parse a page with the named engine; None when nothing could be parsed.

    ``utf8``: the text's own UTF-8 bytes, when the caller has them (a page that
    came as clean UTF-8): lxml reads them as they are, not encoded a second time.
    ``xml``: the page is XHTML that browsers read as XML (served as
    application/xhtml+xml): its prefixed elements are read as the elements they are.
    """
    has_nul = b"\x00" in utf8 if utf8 is not None else "\x00" in text
    if has_nul:
        text = text.replace("\x00", "\ufffd")  # as the HTML tokenizer does
        utf8 = None
    tree: Tree | None
    if parser == "lxml":
        tree = _LxmlTree.parse(text, utf8)
    elif parser == "beautifulsoup":
        tree = _SoupTree.parse(text)
    else:
        raise ValueError(f"unknown parser {parser!r}; known: {', '.join(PARSERS)}")
    if xml and tree is not None:
        # (Not for text/html: there "svg:image" is an unknown element of that name.)
        _unprefix(tree)
    return tree


def _unprefix(tree: Tree) -> None:
    """Name the elements written with a prefix bound to XHTML's or SVG's namespace
    (``<svg:image>``) by their local names (``image``), as an XML parser does.

    libxml2's HTML parser keeps the prefix in the name and the namespace
    declarations (``xmlns:svg="..."``) as attributes: the prefix's namespace is
    that of the nearest declaration on the element or above it. Each node's
    nearest one is remembered (``crawler.parse.memowalk``), so that elements
    nested thousands deep are not each walked to the root.
    """
    known: dict[str, Known] = {}
    for node in tree.prefixed():
        prefix, _, local = tree.name(node).partition(":")
        if not prefix or not local or ":" in local:
            continue  # no qualified name: an XML parser rejects it
        key = "xmlns:" + prefix
        namespace = tree.attribute(node, key)
        if namespace is None:

            def declares(element: Any, key: str = key) -> str | None:
                return key if tree.attribute(element, key) is not None else None

            declarer = nearest_ancestor(node, key, known.setdefault(key, {}), tree.parent,
                                        declares)
            namespace = tree.attribute(declarer, key) if declarer is not None else None
        if namespace in _READ_NAMESPACES:
            tree.rename(node, local)


def _many_attributes(text: str | bytes) -> bool:
    """Could some tag have thousands of attributes? (Real pages: under 2 "=" per "<".)"""
    if isinstance(text, bytes):  # UTF-8: the same count of these ASCII characters
        equals, opens = text.count(b"="), text.count(b"<")
    else:
        equals, opens = text.count("="), text.count("<")
    return equals > _MANY_ATTRIBUTES and equals > 16 * opens


def _xml_compatible(name: object) -> bool:
    return isinstance(name, str) and not _CONTROL_RE.search(name)


_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _LxmlTree:
    def __init__(self, root: Any, data: bytes) -> None:
        self.root = root
        # Attribute names are matched in lower case. libxml2 lowers their ASCII
        # letters only, and so does bytes.lower(), in a fifth of str.lower()'s time.
        self.lowered = data.lower()

    @classmethod
    def parse(cls, text: str, utf8: bytes | None = None) -> Tree | None:
        if _many_attributes(utf8 if utf8 is not None else text):
            # libxml2 adds each attribute to an element by walking the ones it
            # has: thousands on one tag take seconds. Its event interface does not.
            return EventTree.parse(utf8 if utf8 is not None else text)
        # The text as UTF-8 bytes, with the parser told so: one form for every page
        # (a str with an XML declaration, as every XHTML page has, had to be fed),
        # and the bytes serve the attribute-name test below.
        data = utf8
        if data is None:
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (a str given by a caller): as text
                data = None
        # A parser per page: lxml parsers must not be shared between threads.
        # lxml-stubs (0.5, the newest) do not know lxml's default_doctype argument.
        parser = etree.HTMLParser(  # type: ignore[call-arg]
            no_network=True, collect_ids=False, default_doctype=False,
            huge_tree=True,  # else libxml2 stops at 256 levels, and deep pages lose their tail
            encoding="utf-8" if data is not None else None)
        try:
            root = etree.fromstring(data if data is not None else text, parser)
        except ValueError:
            # lxml refuses a str with an XML encoding declaration; fed, it reads it.
            try:
                parser.feed(text)
                root = parser.close()
            except (etree.LxmlError, ValueError):
                return None
        except (etree.LxmlError, RecursionError):
            return None
        if root is None:
            return None
        if any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log):
            # Nested deeper than libxml2 builds trees (2,048 levels): its event
            # interface has no such limit.
            return EventTree.parse(data if data is not None else text)
        return cls(root, data if data is not None else text.encode("utf-8", "surrogatepass"))

    def elements(self, tags: Collection[str], attributes: Collection[str],
                 ) -> Iterator[tuple[str, Getter, Any, bool]]:
        carriers = self._carriers(attributes)
        names = set(tags)
        names.update(node.tag for node in carriers)
        # lxml's tag filter takes XML names only; libxml2's HTML parser keeps control
        # characters in a tag name ("<a\x08<a style=...>"): then every element is walked.
        wanted = names if all(map(_xml_compatible, names)) else None
        # What comes after </html> libxml2 puts in an <html> of its own, beside the root.
        for top in (self.root, *self.root.itersiblings(etree.Element)):
            for node in top.iter(*(wanted or ())):
                if wanted is None and node.tag not in names:
                    continue
                yield node.tag, node.get, node, node in carriers

    def _carriers(self, attributes: Collection[str]) -> set[Any]:
        """The elements with a non-empty one of ``attributes``, found by libxml2.

        One query per name: a union of queries costs libxml2 quadratic time
        (it merges node sets by scanning), and a name not in the page at all
        costs nothing.
        """
        carriers: set[Any] = set()
        for name in attributes:
            if name.encode("utf-8", "surrogatepass") not in self.lowered:
                continue
            if _XPATH_NAME_RE.fullmatch(name):
                query = f"//@{name}"
            elif '"' not in name:
                query = f'//@*[name()="{name}"]'
            else:
                continue  # no HTML tokenizer makes such an attribute name
            carriers.update(attr.getparent() for attr in self.root.xpath(query) if attr)
        return carriers

    def parent(self, node: Any) -> Any | None:
        return node.getparent()

    def name(self, node: Any) -> str:
        tag = node.tag
        return tag if isinstance(tag, str) else ""

    def text(self, node: Any) -> str:
        return "".join(node.itertext())

    def enclosing(self, node: Any, tag: str) -> Any | None:
        return next(node.iterancestors(tag), None)

    def child(self, node: Any, tag: str, deep: bool = False) -> Any | None:
        return next(node.iterdescendants(tag) if deep else node.iterchildren(tag), None)

    def attribute(self, node: Any, key: str) -> str | None:
        return node.get(key)  # type: ignore[no-any-return]

    def prefixed(self) -> Iterable[Any]:
        # A prefix is bound by a declaration: pages without one (most) cost no walk.
        if b"xmlns:" not in self.lowered:
            return ()
        return self.root.xpath('//*[contains(name(), ":")]')  # type: ignore[no-any-return]

    def rename(self, node: Any, name: str) -> None:
        node.tag = name

    def caption_text(self, node: Any) -> str:
        parts: list[str] = [node.text] if node.text else []
        todo: list[Any] = []  # elements to enter, and tails (text) to take, last first
        for child in reversed(node):
            todo += [child.tail or "", child]
        while todo:
            item = todo.pop()
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item.tag, str) and item.tag not in NOT_CAPTION_TEXT:  # no comment
                parts.append(item.text or "")
                for child in reversed(item):
                    todo += [child.tail or "", child]
        return "".join(parts)


class _SoupTree:
    def __init__(self, soup: Any) -> None:
        self.soup = soup
        # Per tag name, what each node's walk found (crawler.parse.memowalk): bs4's
        # find_parent and find() asked the whole way each time, in time of the square of
        # a page whose elements never close.
        self._nearest: dict[str, Known] = {}
        self._first: dict[str, Known] = {}

    @classmethod
    def parse(cls, text: str) -> _SoupTree | None:
        import warnings

        from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
        from bs4.exceptions import ParserRejectedMarkup

        with warnings.catch_warnings():
            # About the page's markup (a bare URL, an XML page): pages are what
            # the web serves, so these would only be noise.
            warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
            warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
            for parser in ("lxml", "html.parser"):
                try:
                    return cls(BeautifulSoup(text, parser, multi_valued_attributes=None))
                except (ParserRejectedMarkup, etree.LxmlError, ValueError, RecursionError):
                    continue
        return None

    def elements(self, tags: Collection[str], attributes: Collection[str],
                 ) -> Iterator[tuple[str, Getter, Any, bool]]:
        for tag in self.soup.find_all(True):
            attrs = tag.attrs
            yield tag.name, attrs.get, tag, bool(attrs)

    def parent(self, node: Any) -> Any | None:
        return node.parent

    def name(self, node: Any) -> str:
        return node.name  # type: ignore[no-any-return]

    def text(self, node: Any) -> str:
        return node.get_text()  # type: ignore[no-any-return]

    def enclosing(self, node: Any, tag: str) -> Any | None:
        return nearest_ancestor(node, tag, self._nearest.setdefault(tag, {}),
                                _soup_parent, _soup_name)

    def child(self, node: Any, tag: str, deep: bool = False) -> Any | None:
        if not deep:
            return node.find(tag, recursive=False)
        # (bs4's find() walks to the subtree's last node before it looks.)
        return first_descendant(node, tag, self._first.setdefault(tag, {}), _soup_children,
                                _soup_name)

    def attribute(self, node: Any, key: str) -> str | None:
        return node.attrs.get(key)  # type: ignore[no-any-return]

    def prefixed(self) -> Iterable[Any]:
        return [tag for tag in self.soup.find_all(True) if ":" in tag.name]

    def rename(self, node: Any, name: str) -> None:
        node.name = name

    def caption_text(self, node: Any) -> str:
        from bs4.element import CData, PreformattedString, Tag

        # Every string but a comment, a processing instruction or a declaration, as the
        # lxml engine reads them: get_text() took only those of the caption's own type,
        # and left out a <template>'s and an <rt>'s (their strings have types of their own).
        parts: list[str] = []
        todo = list(reversed(node.contents))
        while todo:
            item = todo.pop()
            if isinstance(item, Tag):
                if item.name not in NOT_CAPTION_TEXT:
                    todo += reversed(item.contents)
            elif not isinstance(item, PreformattedString) or isinstance(item, CData):
                parts.append(item)
        return "".join(parts)


def _soup_parent(node: Any) -> Any:
    return node.parent


def _soup_name(node: Any) -> str | None:
    return node.name  # type: ignore[no-any-return]  # (None for a string)


def _soup_children(node: Any) -> Any:
    return node.contents
