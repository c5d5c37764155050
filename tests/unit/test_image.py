"""`virtfleet image info|convert` on real small image files made with qemu-img."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.tools import require_tool
from virtfleet.errors import Conflict, InvalidInput
from virtfleet.fleet.images import _follow, convert, info

from .cli import run


@pytest.fixture(autouse=True)
def _qemu_img() -> None:
    require_tool("qemu-img", "qemu-utils")


def image(path: Path, fmt: str, size: str = "8M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return path


def with_data(path: Path) -> Path:
    """A qcow2 with a few written clusters, so conversions have something to carry."""
    image(path, "qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0xa5 5M 4k",
                    str(path)], check=True, capture_output=True)
    return path


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "qed", "vmdk", "vdi", "vpc", "vhdx"])
def test_info_reads_the_chapters_formats(tmp_path: Path, fmt: str) -> None:
    i = info(str(image(tmp_path / f"disk.{fmt}", fmt)))
    assert i.format == fmt and i.virtual_size >= 8 * 2**20


def test_qcow2_to_raw_and_back_is_identical_and_reports_progress(tmp_path: Path) -> None:
    src = with_data(tmp_path / "src.qcow2")
    seen: list[float] = []
    raw = convert(str(src), str(tmp_path / "disk.raw"), "raw", progress=seen.append)
    assert raw.format == "raw" and seen and seen[-1] == 100.0
    back = convert(raw.path, str(tmp_path / "back.qcow2"), "qcow2", compress=True)
    assert back.format == "qcow2"
    same = subprocess.run(["qemu-img", "compare", str(src), back.path], check=False)
    assert same.returncode == 0


def test_progress_lines_are_parsed_from_carriage_returns() -> None:
    r, w = os.pipe()
    os.write(w, b"    (0.00/100%)\r    (12.50/100%)\r    (100.00/100%)\r\n")
    os.close(w)
    seen: list[float] = []
    _follow(r, seen.append)
    os.close(r)
    assert seen == [0.0, 12.5, 100.0]


def test_convert_refusals_leave_nothing(tmp_path: Path) -> None:
    src = image(tmp_path / "a.qcow2", "qcow2")
    with pytest.raises(InvalidInput, match="to: 'vmdk' is not one of raw, qcow2"):
        convert(str(src), str(tmp_path / "b.vmdk"), "vmdk")
    with pytest.raises(InvalidInput, match="only a qcow2 target"):
        convert(str(src), str(tmp_path / "b.raw"), "raw", compress=True)
    (tmp_path / "taken.raw").write_text("x")
    with pytest.raises(Conflict, match="exists"):
        convert(str(src), str(tmp_path / "taken.raw"), "raw")
    with pytest.raises(InvalidInput, match="must differ from `src`"):
        convert(str(src), str(src), "raw", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qcow2", "taken.raw"]


def test_cli(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    src = with_data(tmp_path / "src.qcow2")
    r = run(db, "image", "info", str(src), "--json")
    assert r.code == 0 and r.json()["format"] == "qcow2"
    r = run(db, "image", "convert", str(src), str(tmp_path / "out.raw"), "--to", "raw")
    assert r.code == 0, r.err
    assert "qemu-img compare: identical" in r.out
    r = run(db, "image", "convert", str(src), str(tmp_path / "out.raw"), "--to", "raw")
    assert r.code == 4 and "exists (use --force" in r.err
    r = run(db, "image", "info", str(tmp_path / "missing"))
    assert r.code == 3
    bad = tmp_path / "bad.vmdk"
    bad.write_text("not a vmdk")
    r = run(db, "image", "info", str(bad), "--format", "vmdk")
    assert r.code == 1 and r.err.count("\n") == 1 and "qemu-img info: " in r.err
    r = run(db, "image", "info", str(src), "--format", "zip")
    assert r.code == 2 and "--format: 'zip' is not one of" in r.err
