"""The fleet file: the estate's inventory as code (YAML), and its typed models.

Shape (see docs/fleet-file.md):

    groups:                      # optional: host groups with a description
      - name: web
    sites:
      - name: oregon
        pods:
          - name: or-pod1
            storage: {type: netfs, source: "filer1:/vol/vms", target: /var/lib/virtfleet/pod}
            hypervisors:
              - name: hv1.or.example.com
                uri: qemu+ssh://virtfleet@hv1.or.example.com/system
                groups: [web]

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from virtfleet.errors import InvalidInput
from virtfleet.inventory.uri import parse_uri
from virtfleet.validate import check_name

MAX_FLEET_FILE = 64 * 1024 * 1024
T = TypeVar("T")


def _rule(check: Callable[[], T]) -> T:
    """Run a shared check; re-raise its rule as ValueError so pydantic adds the field path."""
    try:
        return check()
    except InvalidInput as exc:
        raise ValueError(exc.rule) from None


def _name(value: str) -> str:
    _rule(lambda: check_name("name", value))
    return value


Name = Annotated[str, AfterValidator(_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostGroup(_Model):
    name: Name
    description: str = ""


class PodStorage(_Model):
    """The pod's shared storage: a filer export every hypervisor of the pod mounts."""

    type: Literal["netfs", "dir"] = "netfs"
    source: str = Field(default="", max_length=1024)  # "filer:/export" for netfs
    target: str = Field(default="/var/lib/virtfleet/pod", max_length=1024)
    pool: Name | None = None  # libvirt pool name; defaults to "<pod>-shared"

    @field_validator("target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "/../" in value + "/" or "\x00" in value:
            raise ValueError("must be an absolute path without '..'")
        return value

    @model_validator(mode="after")
    def _netfs_needs_source(self) -> PodStorage:
        if self.type == "netfs" and ":" not in self.source:
            raise ValueError("netfs storage needs source as 'filer-host:/export/path'")
        return self


class Hypervisor(_Model):
    name: Name
    uri: str
    groups: tuple[Name, ...] = ()
    maintenance: bool = False

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _rule(lambda: parse_uri(value)).render()


class Pod(_Model):
    name: Name
    storage: PodStorage | None = None
    hypervisors: tuple[Hypervisor, ...] = ()


class Site(_Model):
    name: Name
    description: str = ""
    pods: tuple[Pod, ...] = ()


class Fleet(_Model):
    groups: tuple[HostGroup, ...] = ()
    sites: tuple[Site, ...] = ()

    def hypervisors(self) -> Iterator[tuple[Site, Pod, Hypervisor]]:
        for site in self.sites:
            for pod in site.pods:
                for hv in pod.hypervisors:
                    yield site, pod, hv

    def group_names(self) -> list[str]:
        """Declared groups plus every group a hypervisor names, in first-seen order."""
        names = [g.name for g in self.groups]
        for _, _, hv in self.hypervisors():
            names.extend(g for g in hv.groups if g not in names)
        return names


def _check_unique(fleet: Fleet) -> None:
    """Names are unique fleet-wide (and URIs per hypervisor); the error points at the repeat."""
    seen: dict[str, dict[str, str]] = {k: {} for k in ("group", "site", "pod", "hypervisor",
                                                      "uri")}

    def once(kind: str, value: str, where: str) -> None:
        first = seen[kind].get(value)
        if first is not None:
            what = "uri" if kind == "uri" else "name"
            raise InvalidInput(where, f"duplicate {kind} {what} {value!r} (first at {first})")
        seen[kind][value] = where

    for i, g in enumerate(fleet.groups):
        once("group", g.name, f"groups[{i}].name")
    for si, site in enumerate(fleet.sites):
        once("site", site.name, f"sites[{si}].name")
        for pi, pod in enumerate(site.pods):
            once("pod", pod.name, f"sites[{si}].pods[{pi}].name")
            for hi, hv in enumerate(pod.hypervisors):
                where = f"sites[{si}].pods[{pi}].hypervisors[{hi}]"
                once("hypervisor", hv.name, f"{where}.name")
                once("uri", hv.uri, f"{where}.uri")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "fleet"


def _first_error(exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/fleet-file.md)"
    return InvalidInput(_loc(loc), msg)


def parse_fleet(data: Any, source: str = "fleet file") -> Fleet:
    """Validate already-loaded YAML data as a fleet."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(source, "must be a YAML mapping with a 'sites' list")
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    _check_unique(fleet)
    return fleet


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; any problem is one InvalidInput naming the field."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FLEET_FILE:
            raise InvalidInput(str(p), f"is larger than {MAX_FLEET_FILE // 2**20} MiB")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("file", f"{str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput("file", f"{str(p)!r} is a directory") from None
    except UnicodeDecodeError:
        raise InvalidInput("file", f"{str(p)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput("file", f"{str(p)!r} cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InvalidInput("file", f"{str(p)!r} is not valid YAML{where}: {problem}") from None
    return parse_fleet(data, source=str(p))


def dump_fleet(fleet: Fleet) -> str:
    """YAML text for a fleet, leaving out defaults so it reads like a hand-written file."""
    data = fleet.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
