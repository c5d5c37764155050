"""A typed stand-in for lxml.builder.E (which has no type stubs): el("name", "text", a="1")."""

from __future__ import annotations

from lxml import etree


def el(tag: str, *children: etree._Element | str | int, **attrib: str | int) -> etree._Element:
    """An element with attributes, text (str/int children) and child elements, in order."""
    node = etree.Element(tag, {k: str(v) for k, v in attrib.items()})
    for child in children:
        if isinstance(child, etree._Element):
            node.append(child)
        elif len(node):
            last = node[-1]
            last.tail = (last.tail or "") + str(child)
        else:
            node.text = (node.text or "") + str(child)
    return node


def to_bytes(node: etree._Element) -> bytes:
    return bytes(etree.tostring(node, pretty_print=True, xml_declaration=False))
