"""Safe XML parsing shared by every model: no network, no entities, bounded size."""

from __future__ import annotations

from lxml import etree

from virtfleet.errors import InvalidInput

MAX_XML = 16 * 1024 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_comments=False, huge_tree=False,
    load_dtd=False,
)


def parse_xml(text: str | bytes, field: str, expect: str | None = None) -> etree._Element:
    """Parse `text`; InvalidInput naming `field` if it is not well-formed or not <expect>."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > MAX_XML:
        raise InvalidInput(field, f"XML is larger than {MAX_XML // 2**20} MiB")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(field, f"not well-formed XML ({exc.msg})") from None
    if expect is not None and root.tag != expect:
        raise InvalidInput(field, f"root element is <{root.tag}>, expected <{expect}>")
    return root
