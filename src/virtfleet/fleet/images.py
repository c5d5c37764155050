"""Local disk images through qemu-img: what a file is (`info`), and converting it between raw
(fastest) and qcow2 (snapshots, thin) with a progress callback and a byte-for-byte check after.

qemu-img reads other hypervisors' formats too (vmdk, vdi, vhd/vpc, vhdx, qed, qcow, cloop,
...), so an image brought from VMware, VirtualBox or Hyper-V can be inspected and converted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import Conflict, HypervisorError, InvalidInput, NotFound

TARGET_FORMATS = ("raw", "qcow2")
# What `qemu-img info`/`convert -f` may be told a source is (qemu-img --help, 7.x).
SOURCE_FORMATS = ("raw", "qcow2", "qcow", "qed", "vmdk", "vdi", "vpc", "vhdx", "cloop", "dmg",
                  "parallels", "bochs")
_PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
QEMU_IMG = "qemu-img"


@dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int | None
    backing_file: str | None
    backing_format: str | None
    dirty: bool
    raw: dict[str, object]  # everything qemu-img said, for --json

    def as_json(self) -> dict[str, object]:
        return dict(self.raw)


def _existing_file(field: str, path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise NotFound(f"`{field}`: {path!r} does not exist")
    if not p.is_file() and not p.is_block_device():
        raise InvalidInput(field, f"{path!r} is not a file or block device")
    return p.resolve()


def _qemu_img(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run([QEMU_IMG, *argv], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise HypervisorError("qemu-img is not installed (package qemu-utils)") from None
    if proc.returncode != 0 and what:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise HypervisorError(f"qemu-img {what}: {last}")
    return proc


def info(path: str, fmt: str | None = None, *, field: str = "path",
         format_field: str = "format") -> ImageInfo:
    """`qemu-img info --output=json`; `fmt` pins the format instead of letting qemu probe.
    Errors name `path` and `fmt` as the caller's request does (`field`, `format_field`)."""
    p = _existing_file(field, path)
    argv = ["info", "--output=json"]
    if fmt is not None:
        if fmt not in SOURCE_FORMATS:
            raise InvalidInput(format_field, f"{fmt!r} is not one of "
                               f"{', '.join(SOURCE_FORMATS)}")
        argv += ["-f", fmt]
    data = json.loads(_qemu_img([*argv, str(p)], "info").stdout)
    return ImageInfo(path=str(p), format=str(data.get("format", "")),
                     virtual_size=int(data.get("virtual-size", 0)),
                     actual_size=data.get("actual-size"),
                     backing_file=data.get("backing-filename"),
                     backing_format=data.get("backing-filename-format"),
                     dirty=bool(data.get("dirty-flag", False)), raw=data)


def convert(src: str, dst: str, to: str, *, src_format: str | None = None,
            compress: bool = False, force: bool = False,
            progress: Callable[[float], None] | None = None) -> ImageInfo:
    """Convert `src` to a new file `dst` in format `to`, then prove the guest-visible content
    is identical (`qemu-img compare`). Nothing is left at `dst` if either step fails. Errors
    name the parameters as fields (`src_format` for the source's format)."""
    if to not in TARGET_FORMATS:
        raise InvalidInput("to", f"{to!r} is not one of {', '.join(TARGET_FORMATS)}")
    if compress and to != "qcow2":
        raise InvalidInput("compress", "only a qcow2 target can be compressed")
    source = info(src, src_format, field="src", format_field="src_format")
    out = Path(os.path.abspath(dst))  # never an argument qemu-img could read as an option
    if out.resolve() == Path(source.path):
        raise InvalidInput("dst", "must differ from `src`")
    if out.exists() and not force:
        raise Conflict(f"`dst`: {dst!r} exists (use `force` to replace it)")
    if not out.parent.is_dir():
        raise InvalidInput("dst", f"directory {str(out.parent)!r} does not exist")
    argv = [QEMU_IMG, "convert", "-p", "-f", source.format, "-O", to]
    if compress:
        argv.append("-c")
    argv += [source.path, str(out)]
    made = False
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        made = True
        assert proc.stdout is not None and proc.stderr is not None
        _follow(proc.stdout.fileno(), progress)
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise HypervisorError(f"qemu-img convert: {err or 'failed'}")
        cmp = _qemu_img(["compare", "-f", source.format, "-F", to, source.path, str(out)], "")
        if cmp.returncode != 0:
            raise HypervisorError("qemu-img compare: the converted image differs from the "
                                  f"source ({(cmp.stdout + cmp.stderr).strip()})")
        return info(str(out), to)
    except BaseException:
        if made:
            out.unlink(missing_ok=True)
        raise


def _follow(fd: int, progress: Callable[[float], None] | None) -> None:
    """Read qemu-img -p output, '    (12.34/100%)\\r' repeated, and report each percentage."""
    buf = b""
    while chunk := os.read(fd, 4096):
        buf += chunk
        *done, buf = re.split(rb"[\r\n]", buf)
        for line in done:
            m = _PROGRESS_RE.search(line.decode(errors="replace"))
            if m and progress is not None:
                progress(float(m.group(1)))
