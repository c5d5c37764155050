"""libvirt storage pool and volume XML: enough to find where a pool keeps its files and to
make a volume."""

from __future__ import annotations

from virtfleet.xml.model import Attr, Text, XMLModel, to_int


class Pool(XMLModel):
    TAG = "pool"
    type = Attr("", "type", str)  # dir, fs, netfs, logical, iscsi, disk
    name = Text("name", str)
    uuid = Text("uuid", str)
    target_path = Text("target/path", str)
    source_host = Attr("source/host", "name", str)
    source_dir = Attr("source/dir", "path", str)


class Volume(XMLModel):
    TAG = "volume"
    type = Attr("", "type", str)
    name = Text("name", str)
    key = Text("key", str)
    capacity_bytes = Text("capacity", to_int("capacity"))
    capacity_unit = Attr("capacity", "unit", str)
    allocation_bytes = Text("allocation", to_int("allocation"))
    path = Text("target/path", str)
    format = Attr("target/format", "type", str)
    mode = Text("target/permissions/mode", str)  # octal, as libvirt writes it: 0444
    backing_path = Text("backingStore/path", str)
    backing_format = Attr("backingStore/format", "type", str)
