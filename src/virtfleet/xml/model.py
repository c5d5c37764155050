"""Declarative, typed views over libvirt XML, built on lxml.

A model wraps one lxml element and its descriptors read and write that element directly. So a
model describes only what virtfleet uses, and everything else in the document (elements and
attributes it has never heard of, comments, order) survives a parse, change, serialise round
trip untouched. One class both parses and builds: `Domain.parse(text)` or `Domain()`.

Paths are child steps separated by '/', each a tag ("os", "{ns}site") optionally with
attribute predicates ("timer[@name='rtc']"), so a setter can create what it needs, predicate
attributes included. New elements land where libvirt writes them: each model names, per parent
tag, the order of its children (`ORDERS`, as virtinst's `_XML_PROP_ORDER` does), and a new child
goes after the last sibling that comes before it in that order.

Reading never changes the document: a getter whose element is absent returns None (or False, or
an empty list), and a nested model (`Child`) is only made in the document when it is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Generic, Self, TypeVar, overload

from lxml import etree

from virtfleet.errors import InvalidInput
from virtfleet.xml.parse import parse_xml

T = TypeVar("T")
M = TypeVar("M", bound="XMLModel")

_STEP_RE = re.compile(r"^(\{[^}]+\}[A-Za-z_][\w.-]*|[A-Za-z_][\w.-]*)((?:\[@[\w.-]+='[^']*'\])*)$")
_SPLIT_RE = re.compile(r"(?:\{[^}]*\}|[^/{])+")
_PRED_RE = re.compile(r"\[@([\w.-]+)='([^']*)'\]")


@dataclass(frozen=True)
class _Step:
    tag: str
    attrs: tuple[tuple[str, str], ...]
    text: str  # the step as written, which lxml's find() understands as is


@lru_cache(maxsize=1024)
def _steps(path: str) -> tuple[_Step, ...]:
    if path in ("", "."):
        return ()
    out = []
    for part in _SPLIT_RE.findall(path):  # '/' inside a {namespace} does not split
        m = _STEP_RE.match(part)
        if m is None:  # a programming error in a model, not user input
            raise ValueError(f"bad model path step {part!r} in {path!r}")
        out.append(_Step(m.group(1), tuple(_PRED_RE.findall(m.group(2))), part))
    return tuple(out)


def _local(tag: object) -> str | None:
    """An element's tag for ordering; None for comments and processing instructions."""
    return tag if isinstance(tag, str) else None


def place(parent: etree._Element, child: etree._Element,
          orders: Mapping[str, Sequence[str]]) -> etree._Element:
    """Insert `child` into `parent` where libvirt writes it: after the last sibling whose tag
    comes no later in the parent's order. A tag the order does not know goes last."""
    order = orders.get(str(parent.tag), ())
    rank = {tag: i for i, tag in enumerate(order)}
    mine = rank.get(str(child.tag))
    position = len(parent)
    if mine is not None:
        position = 0
        for i, sibling in enumerate(parent):
            tag = _local(sibling.tag)
            theirs = rank.get(tag) if tag is not None else None
            if theirs is not None and theirs <= mine:
                position = i + 1
            elif theirs is None and position == i:
                position = i + 1  # keep unknown leading children (comments) in front
    _insert_indented(parent, position, child)
    return child


def _pretty(parent: etree._Element) -> bool:
    """Whether `parent` came from a pretty-printed document (whitespace before its children)."""
    return len(parent) > 0 and bool(parent.text) and not (parent.text or "").strip()


def _insert_indented(parent: etree._Element, position: int, child: etree._Element) -> None:
    """parent.insert(), keeping a parsed, pretty-printed document's indentation."""
    pretty = _pretty(parent)
    parent.insert(position, child)
    if not pretty:
        return
    inner = parent.text
    if position == len(parent) - 1:  # now last: take the closing indent, hand ours on
        prev = parent[position - 1]
        child.tail, prev.tail = prev.tail, inner
    else:
        child.tail = inner
    if len(child) and not (child.text or "").strip():  # built here: indent it like the rest
        etree.indent(child, space="  ", level=sum(1 for _ in child.iterancestors()))


def unlink(el: etree._Element) -> None:
    """Remove `el` from its parent, leaving the siblings' indentation as it was."""
    parent = el.getparent()
    if parent is None:
        return
    prev = el.getprevious()
    if el.getnext() is None:  # the last child carried the closing indent
        if prev is not None:
            prev.tail = el.tail
        elif el.tail is not None and not el.tail.strip():
            parent.text = None  # no children left: <parent/>
    parent.remove(el)


class XMLModel:
    """A typed view over one element; the element is the single source of truth.

    A nested model may be detached: it knows its parent and path, reads as empty while its
    element does not exist, and makes the element (and its parents) on its first write.
    """

    TAG: ClassVar[str]
    NSMAP: ClassVar[dict[str, str] | None] = None
    # Per parent tag, the order libvirt writes its children in (see `place`).
    ORDERS: ClassVar[Mapping[str, Sequence[str]]] = {}
    # Prefixes for namespaced elements this model creates below its own element.
    PREFIXES: ClassVar[Mapping[str, str]] = {}

    def __init__(self, element: etree._Element | None = None) -> None:
        self._el: etree._Element | None = (
            element if element is not None else etree.Element(self.TAG, nsmap=self.NSMAP))
        self._parent: XMLModel | None = None
        self._path = ""

    @classmethod
    def detached(cls, parent: XMLModel, path: str) -> Self:
        """The model at `path` under `parent`, made in the document only when written."""
        model = cls.__new__(cls)
        model._el, model._parent, model._path = None, parent, path
        return model

    @classmethod
    def parse(cls, text: str | bytes, field: str | None = None) -> Self:
        return cls(parse_xml(text, field or cls.TAG, expect=cls.TAG))

    @property
    def node(self) -> etree._Element | None:
        """The element if it exists; reading through this never changes the document."""
        if self._el is None and self._parent is not None:
            parent = self._parent.node
            if parent is not None:
                self._el = parent.find(self._path)
        return self._el

    @property
    def element(self) -> etree._Element:
        """The element, made (with any missing parents) if it does not exist yet: for writes."""
        el = self.node
        if el is None:
            assert self._parent is not None
            el = self._el = self._parent.ensure(self._path)
        return el

    def find(self, path: str) -> etree._Element | None:
        node = self.node
        if node is None:
            return None
        return node if path in ("", ".") else node.find(path)

    def findall(self, path: str) -> list[etree._Element]:
        node = self.node
        return [] if node is None else list(node.findall(path))

    def ensure(self, path: str) -> etree._Element:
        """The element at `path`, made with any missing parents (and the predicate
        attributes of each step) where libvirt's order puts them."""
        el = self.element
        steps = _steps(path)
        for i, step in enumerate(steps):
            child = el.find(step.text)
            if child is None:  # build the rest detached, then place it whole (indented once)
                top = leaf = self.new_element(step.tag, dict(step.attrs))
                for more in steps[i + 1:]:
                    leaf.append(self.new_element(more.tag, dict(more.attrs)))
                    leaf = leaf[-1]
                place(el, top, self.ORDERS)
                return leaf
            el = child
        return el

    def new_element(self, tag: str, attrs: dict[str, str] | None = None) -> etree._Element:
        """A free element for this model's document, with its namespace prefix if it has one."""
        nsmap = None
        if tag.startswith("{"):
            uri = tag[1:].split("}", 1)[0]
            prefix = self.PREFIXES.get(uri)
            nsmap = {prefix: uri} if prefix else None
        return etree.Element(tag, attrs or {}, nsmap=nsmap)

    def add(self, path: str, tag: str, **attrs: str) -> etree._Element:
        """A new child `tag` of the element at `path`, in libvirt's order."""
        parent = self.ensure(path)
        return place(parent, self.new_element(tag, attrs), self.ORDERS)

    def drop(self, path: str) -> None:
        """Remove every element matching `path` (its last step) from under its parent."""
        for el in self.findall(path):
            unlink(el)

    def prune(self, path: str) -> None:
        """Remove the element at `path`, then the parents that removal left empty (never the
        model's own element)."""
        steps = _steps(path)
        for depth in range(len(steps), 0, -1):
            el = self.find("/".join(s.text for s in steps[:depth]))
            if el is None:
                continue
            if depth < len(steps) and (len(el) or _own_attrs(el, steps[depth - 1])
                                       or (el.text or "").strip()):
                return
            unlink(el)

    def to_xml(self) -> str:
        node = self.node
        if node is None:
            return ""
        return etree.tostring(node, pretty_print=True, encoding="unicode")

    def __eq__(self, other: object) -> bool:
        """Same kind of model over the same document content (canonical XML)."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, XMLModel)
        return _canonical(self.node) == _canonical(other.node)

    # Models are mutable views: a content hash would change under a set's or dict's feet, and an
    # identity hash would break `a == b -> hash(a) == hash(b)`. So, like a list, unhashable.
    __hash__ = None  # type: ignore[assignment]


def _canonical(el: etree._Element | None) -> bytes | None:
    return None if el is None else etree.tostring(el, method="c14n")


def _own_attrs(el: etree._Element, step: _Step) -> bool:
    """Whether `el` has attributes beyond the ones its path predicate gave it."""
    return any(k not in dict(step.attrs) for k in el.attrib)


class Text(Generic[T]):
    """The text of the element at `path`, converted; None when the element is absent."""

    def __init__(self, path: str, conv: Callable[[str], T], fmt: Callable[[T], str] = str
                 ) -> None:
        _steps(path)
        self.path, self.conv, self.fmt = path, conv, fmt

    @overload
    def __get__(self, obj: None, owner: type) -> Text[T]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> T | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Text[T] | T | None:
        if obj is None:
            return self
        el = obj.find(self.path)
        if el is None or el.text is None:
            return None
        return self.conv(el.text.strip())

    def __set__(self, obj: XMLModel, value: T | None) -> None:
        if value is None:
            obj.prune(self.path)
        else:
            obj.ensure(self.path).text = self.fmt(value)


class Attr(Generic[T]):
    """Attribute `name` of the element at `path` ("" = the model's own element)."""

    def __init__(self, path: str, name: str, conv: Callable[[str], T],
                 fmt: Callable[[T], str] = str) -> None:
        _steps(path)
        self.path, self.name, self.conv, self.fmt = path, name, conv, fmt

    @overload
    def __get__(self, obj: None, owner: type) -> Attr[T]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> T | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Attr[T] | T | None:
        if obj is None:
            return self
        el = obj.find(self.path)
        raw = None if el is None else el.get(self.name)
        return None if raw is None else self.conv(raw)

    def __set__(self, obj: XMLModel, value: T | None) -> None:
        if value is not None:
            obj.ensure(self.path).set(self.name, self.fmt(value))
            return
        el = obj.find(self.path)
        if el is None or self.name not in el.attrib:
            return
        del el.attrib[self.name]
        steps = _steps(self.path)
        if steps and not (len(el) or _own_attrs(el, steps[-1]) or (el.text or "").strip()):
            obj.prune(self.path)


class Flag:
    """Whether an (empty) element such as <readonly/> or <acpi/> is present."""

    def __init__(self, path: str) -> None:
        _steps(path)
        self.path = path

    @overload
    def __get__(self, obj: None, owner: type) -> Flag: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> bool: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Flag | bool:
        if obj is None:
            return self
        return obj.find(self.path) is not None

    def __set__(self, obj: XMLModel, value: bool) -> None:
        if value:
            obj.ensure(self.path)
        else:
            obj.prune(self.path)


class Child(Generic[M]):
    """The single child model at `path` (like a nested section); reading it makes nothing."""

    def __init__(self, path: str, cls: type[M]) -> None:
        _steps(path)
        self.path, self.cls = path, cls

    @overload
    def __get__(self, obj: None, owner: type) -> Child[M]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> M: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Child[M] | M:
        if obj is None:
            return self
        return self.cls.detached(obj, self.path)


class Children(Generic[M]):
    """All child models with the model's tag under `path` ("" = directly under the element)."""

    def __init__(self, path: str, cls: type[M]) -> None:
        _steps(path)
        self.path, self.cls = path, cls

    @overload
    def __get__(self, obj: None, owner: type) -> Children[M]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> ChildList[M]: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Children[M] | ChildList[M]:
        if obj is None:
            return self
        return ChildList(obj, self.path, self.cls)


class ChildList(Generic[M]):
    """A live list of child models: iterate, index, append, remove."""

    def __init__(self, owner: XMLModel, path: str, cls: type[M]) -> None:
        self._owner, self._path, self._cls = owner, path, cls

    def _elements(self) -> list[etree._Element]:
        parent = self._owner.find(self._path)
        return [] if parent is None else parent.findall(self._cls.TAG)

    def __iter__(self) -> Iterator[M]:
        return (self._cls(el) for el in self._elements())

    def __len__(self) -> int:
        return len(self._elements())

    def __getitem__(self, index: int) -> M:
        return self._cls(self._elements()[index])

    def append(self, model: M) -> M:
        """Add after the last sibling of the same kind, or where libvirt's order puts it."""
        parent = self._owner.ensure(self._path)
        same = parent.findall(self._cls.TAG)
        if same:
            _insert_indented(parent, parent.index(same[-1]) + 1, model.element)
        else:
            place(parent, model.element, self._owner.ORDERS)
        return model

    def remove(self, model: M) -> None:
        unlink(model.element)


def to_int(field: str) -> Callable[[str], int]:
    """int() that fails as InvalidInput naming the XML field, not as a bare ValueError."""
    def conv(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(field, f"{text!r} is not a whole number") from None
    return conv


def yes_no(text: str) -> bool:
    return text == "yes"


def fmt_yes_no(value: bool) -> str:
    return "yes" if value else "no"


def on_off(text: str) -> bool:
    return text in ("on", "yes")


def fmt_on_off(value: bool) -> str:
    return "on" if value else "off"
