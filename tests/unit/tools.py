"""Tests that need a real checker (virt-xml-validate, qemu-img): skipped on a machine without
it, but failed under VIRTFLEET_REQUIRE_VALIDATORS=1 (CI), so CI never passes by not checking."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(tool: str, package: str) -> str:
    """The tool's path, or skip (fail in CI) naming the Debian package that has it."""
    path = shutil.which(tool)
    if path is None:
        why = f"{tool} is not installed ({package})"
        if os.environ.get("VIRTFLEET_REQUIRE_VALIDATORS") == "1":
            pytest.fail(f"VIRTFLEET_REQUIRE_VALIDATORS=1 but {why}", pytrace=False)
        pytest.skip(why)
    return path
