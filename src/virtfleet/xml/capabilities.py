"""The parts of `virsh capabilities` that fleet checks need."""

from __future__ import annotations

from dataclasses import dataclass

from virtfleet.xml.parse import parse_xml


@dataclass(frozen=True)
class Capabilities:
    arch: str
    cpu_model: str
    cpu_features: frozenset[str]
    iommu: bool | None  # None: the host does not say
    numa_cells: int
    virt_types: tuple[str, ...]  # domain types any guest arch offers: kvm, qemu, test...

    @property
    def hw_virt(self) -> str | None:
        """'vmx' (Intel VT-x) or 'svm' (AMD-V) when the host CPU reports it."""
        for flag in ("vmx", "svm"):
            if flag in self.cpu_features:
                return flag
        return None


def parse_capabilities(text: str) -> Capabilities:
    root = parse_xml(text, "capabilities", expect="capabilities")
    cpu = root.find("host/cpu")
    features: set[str] = set()
    arch = model = ""
    if cpu is not None:
        arch = cpu.findtext("arch", "")
        model = cpu.findtext("model", "")
        features.update(str(f.get("name")) for f in cpu.findall("feature") if f.get("name"))
        features.update(str(f.tag) for f in cpu.findall("features/*"))
    iommu_el = root.find("host/iommu")
    iommu = None if iommu_el is None else iommu_el.get("support") == "yes"
    cells = root.find("host/topology/cells")
    types: list[str] = []
    for dom in root.findall("guest/arch/domain"):
        t = dom.get("type")
        if t and t not in types:
            types.append(t)
    return Capabilities(
        arch=arch,
        cpu_model=model,
        cpu_features=frozenset(features),
        iommu=iommu,
        numa_cells=int(cells.get("num", "0")) if cells is not None else 0,
        virt_types=tuple(types),
    )
