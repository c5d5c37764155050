"""Pool and volume XML: every generated document passes libvirt's own schema
(`virt-xml-validate`), NFS/iSCSI/LVM pools match golden files (no filer can run here), and
bad options are refused naming the option.

Golden files live in tests/unit/golden/storage/; rewrite with VIRTFLEET_UPDATE_GOLDEN=1 after a
deliberate change and read the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.tools import require_tool
from virtfleet.errors import InvalidInput
from virtfleet.fleet.podstorage import pod_pool
from virtfleet.inventory.fleetfile import PodStorage
from virtfleet.xml.storage import Pool, Volume, pool_definition

GOLDEN = Path(__file__).parent / "golden" / "storage"

POOLS = {
    "dir": dict(kind="dir", name="images", target="/var/lib/libvirt/images"),
    "fs": dict(kind="fs", name="xfs1", target="/srv/vms", source_devs=("/dev/sdb1",),
               fmt="xfs"),
    "netfs": dict(kind="netfs", name="or-pod1-nfs", target="/var/lib/virtfleet/pod",
                  source_host="filer1.or.example.com", source_path="/vol/vms"),
    "logical": dict(kind="logical", name="vg0", source_devs=("/dev/sdb", "/dev/sdc")),
    "iscsi": dict(kind="iscsi", name="lun-vms", source_host="filer1.or.example.com",
                  iqn="iqn.2013-06.com.example.filer1:vms"),
    "mpath": dict(kind="mpath", name="mpath"),
    "disk": dict(kind="disk", name="sdd", source_devs=("/dev/sdd",), fmt="gpt"),
}


def make(case: str) -> Pool:
    args = dict(POOLS[case])
    return pool_definition(str(args.pop("kind")), str(args.pop("name")), **args)  # type: ignore[arg-type]


def validate(tmp_path: Path, text: str, schema: str) -> None:
    tool = require_tool("virt-xml-validate", "libvirt-clients")
    f = tmp_path / f"doc-{schema}.xml"
    f.write_text(text)
    proc = subprocess.run([tool, str(f), schema], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n---\n{text}"


@pytest.mark.parametrize("case", sorted(POOLS))
def test_every_pool_type_passes_libvirts_schema(case: str, tmp_path: Path) -> None:
    validate(tmp_path, make(case).to_xml(), "storagepool")


@pytest.mark.parametrize("case", ["netfs", "iscsi", "logical"])
def test_shared_and_lvm_pools_match_golden_files(case: str) -> None:
    text = make(case).to_xml()
    path = GOLDEN / f"{case}-pool.xml"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} differs from its golden file"


def test_pod_storage_becomes_a_netfs_pool_named_after_the_pod(tmp_path: Path) -> None:
    p = pod_pool("or-pod1", PodStorage(type="netfs", source="filer1:/vol/vms",
                                       target="/var/lib/virtfleet/pod"))
    assert (p.name, p.type, p.source_host, p.source_dir, p.source_format, p.target_path) == (
        "or-pod1-shared", "netfs", "filer1", "/vol/vms", "nfs", "/var/lib/virtfleet/pod")
    validate(tmp_path, p.to_xml(), "storagepool")
    d = pod_pool("lab-pod1", PodStorage(type="dir", target="/srv/pod", pool="labshare"))
    assert (d.name, d.type, d.target_path) == ("labshare", "dir", "/srv/pod")


def test_volumes_made_like_the_storage_code_makes_them_pass_the_schema(tmp_path: Path) -> None:
    v = Volume()
    v.name, v.capacity_bytes, v.capacity_unit, v.format = "web01.qcow2", 2**30, "bytes", "qcow2"
    v.backing_path, v.backing_format = "/var/lib/libvirt/images/base.raw", "raw"
    v.mode = "0600"
    validate(tmp_path, v.to_xml(), "storagevol")


def test_parsed_pools_keep_what_virtfleet_does_not_model() -> None:
    text = ("<pool type='netfs'><name>n</name><source><host name='f'/><dir path='/e'/>"
            "<format type='nfs'/><protocol ver='4'/></source><target><path>/mnt</path>"
            "<permissions><mode>0755</mode></permissions></target></pool>")
    p = Pool.parse(text)
    assert p.source_text() == "f:/e"
    p.target_path = "/mnt2"
    out = p.to_xml()
    assert "<protocol ver=\"4\"/>" in out and "<mode>0755</mode>" in out and "/mnt2" in out


@pytest.mark.parametrize(("args", "field", "rule"), [
    (dict(kind="zfs", name="p", target="/x"), "type", "is not one of"),
    (dict(kind="dir", name="p", target="images"), "target", "absolute"),
    (dict(kind="dir", name="p", target="/srv/../etc"), "target", "'..'"),
    (dict(kind="dir", name="p"), "target", "required"),
    (dict(kind="dir", name="a/b", target="/x"), "name", "not a valid name"),
    (dict(kind="netfs", name="p", target="/x", source_host="f"), "source_path", "required"),
    (dict(kind="netfs", name="p", target="/x", source_host="f;rm", source_path="/e"),
     "source_host", "not a host name"),
    (dict(kind="iscsi", name="p", source_host="f", iqn="not an iqn"), "iqn", "qualified"),
    (dict(kind="fs", name="p", target="/x", source_devs=("/dev/sdb",), fmt="ntfs"),
     "format", "is not one of"),
    (dict(kind="logical", name="vg", fmt="xfs"), "format", "does not apply"),
    (dict(kind="fs", name="p", target="/x", source_devs=("sdb",)), "source_devs", "absolute"),
])
def test_bad_pool_fields_are_refused_naming_the_field(args: dict[str, object], field: str,
                                                      rule: str) -> None:
    a = dict(args)
    with pytest.raises(InvalidInput) as exc:
        pool_definition(str(a.pop("kind")), str(a.pop("name")), **a)  # type: ignore[arg-type]
    assert exc.value.field == field and rule in exc.value.rule
