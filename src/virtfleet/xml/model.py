"""Declarative, typed views over libvirt XML, built on lxml.

A model wraps one lxml element and its descriptors read and write that element directly. So a
model describes only what virtfleet uses, and everything else in the document (elements and
attributes it has never heard of, comments, order) survives a parse, change, serialise round
trip untouched. One class both parses and builds: `Domain.parse(text)` or `Domain()`.

Paths are plain child tag paths ("os/type", "{ns}site"), no predicates, so a setter can create
the elements it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar, Generic, Self, TypeVar, overload

from lxml import etree

from virtfleet.errors import InvalidInput
from virtfleet.xml.parse import parse_xml

T = TypeVar("T")
M = TypeVar("M", bound="XMLModel")


class XMLModel:
    """A typed view over one element; the element is the single source of truth."""

    TAG: ClassVar[str]
    NSMAP: ClassVar[dict[str, str] | None] = None

    def __init__(self, element: etree._Element | None = None) -> None:
        self.element = element if element is not None else etree.Element(self.TAG,
                                                                          nsmap=self.NSMAP)

    @classmethod
    def parse(cls, text: str | bytes, field: str | None = None) -> Self:
        return cls(parse_xml(text, field or cls.TAG, expect=cls.TAG))

    def to_xml(self) -> str:
        return etree.tostring(self.element, pretty_print=True, encoding="unicode")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and etree.tostring(
            self.element) == etree.tostring(other.element)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return id(self.element)


def _find(root: etree._Element, path: str) -> etree._Element | None:
    return root if path in ("", ".") else root.find(path)


def _ensure(root: etree._Element, path: str) -> etree._Element:
    """The element at `path`, creating it (and any missing parents) if needed."""
    el = root
    if path in ("", "."):
        return el
    for tag in path.split("/"):
        child = el.find(tag)
        if child is None:
            child = etree.SubElement(el, tag)
        el = child
    return el


def _prune(root: etree._Element, path: str) -> None:
    """Remove the element at `path`, then parents the removal left empty (never `root`)."""
    parts = path.split("/")
    for depth in range(len(parts), 0, -1):
        el = root.find("/".join(parts[:depth]))
        if el is None:
            continue
        if depth < len(parts) and (len(el) or el.attrib or (el.text or "").strip()):
            return
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)


class Text(Generic[T]):
    """The text of the element at `path`, converted; None when the element is absent."""

    def __init__(self, path: str, conv: Callable[[str], T], fmt: Callable[[T], str] = str
                 ) -> None:
        self.path, self.conv, self.fmt = path, conv, fmt

    @overload
    def __get__(self, obj: None, owner: type) -> Text[T]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> T | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Text[T] | T | None:
        if obj is None:
            return self
        el = _find(obj.element, self.path)
        if el is None or el.text is None:
            return None
        return self.conv(el.text.strip())

    def __set__(self, obj: XMLModel, value: T | None) -> None:
        if value is None:
            _prune(obj.element, self.path)
        else:
            _ensure(obj.element, self.path).text = self.fmt(value)


class Attr(Generic[T]):
    """Attribute `name` of the element at `path` ("" = the model's own element)."""

    def __init__(self, path: str, name: str, conv: Callable[[str], T],
                 fmt: Callable[[T], str] = str) -> None:
        self.path, self.name, self.conv, self.fmt = path, name, conv, fmt

    @overload
    def __get__(self, obj: None, owner: type) -> Attr[T]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> T | None: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Attr[T] | T | None:
        if obj is None:
            return self
        el = _find(obj.element, self.path)
        raw = None if el is None else el.get(self.name)
        return None if raw is None else self.conv(raw)

    def __set__(self, obj: XMLModel, value: T | None) -> None:
        if value is None:
            el = _find(obj.element, self.path)
            if el is not None and self.name in el.attrib:
                del el.attrib[self.name]
                if self.path not in ("", ".") and not (len(el) or el.attrib or el.text):
                    _prune(obj.element, self.path)
        else:
            _ensure(obj.element, self.path).set(self.name, self.fmt(value))


class Flag:
    """Whether an (empty) element such as <readonly/> or <acpi/> is present."""

    def __init__(self, path: str) -> None:
        self.path = path

    @overload
    def __get__(self, obj: None, owner: type) -> Flag: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> bool: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Flag | bool:
        if obj is None:
            return self
        return _find(obj.element, self.path) is not None

    def __set__(self, obj: XMLModel, value: bool) -> None:
        if value:
            _ensure(obj.element, self.path)
        else:
            _prune(obj.element, self.path)


class Child(Generic[M]):
    """The single child model at `path`, created on first access (like a nested section)."""

    def __init__(self, path: str, cls: type[M]) -> None:
        self.path, self.cls = path, cls

    @overload
    def __get__(self, obj: None, owner: type) -> Child[M]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> M: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Child[M] | M:
        if obj is None:
            return self
        return self.cls(_ensure(obj.element, self.path))


class Children(Generic[M]):
    """All child models with the model's tag under `path` ("" = directly under the element)."""

    def __init__(self, path: str, cls: type[M]) -> None:
        self.path, self.cls = path, cls

    @overload
    def __get__(self, obj: None, owner: type) -> Children[M]: ...
    @overload
    def __get__(self, obj: XMLModel, owner: type) -> ChildList[M]: ...

    def __get__(self, obj: XMLModel | None, owner: type) -> Children[M] | ChildList[M]:
        if obj is None:
            return self
        return ChildList(obj.element, self.path, self.cls)


class ChildList(Generic[M]):
    """A live list of child models: iterate, index, append, remove."""

    def __init__(self, root: etree._Element, path: str, cls: type[M]) -> None:
        self._root, self._path, self._cls = root, path, cls

    def _parent(self, create: bool) -> etree._Element | None:
        return _ensure(self._root, self._path) if create else _find(self._root, self._path)

    def _elements(self) -> list[etree._Element]:
        parent = self._parent(False)
        return [] if parent is None else parent.findall(self._cls.TAG)

    def __iter__(self) -> Iterator[M]:
        return (self._cls(el) for el in self._elements())

    def __len__(self) -> int:
        return len(self._elements())

    def __getitem__(self, index: int) -> M:
        return self._cls(self._elements()[index])

    def append(self, model: M) -> M:
        """Add after the last sibling of the same kind, so related devices stay together."""
        parent = self._parent(True)
        assert parent is not None
        same = parent.findall(self._cls.TAG)
        if same:
            same[-1].addnext(model.element)
        else:
            parent.append(model.element)
        return model

    def remove(self, model: M) -> None:
        parent = model.element.getparent()
        if parent is not None:
            parent.remove(model.element)


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

