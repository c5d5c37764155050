"""Services name fields; the CLI words them as its options (cli/fields.py)."""

from __future__ import annotations

import pytest

from virtfleet.cli.fields import option_for, options_named
from virtfleet.errors import InvalidInput

FLAGS = {"vm": "NAME", "disks": "--disk", "max_downtime_ms": "--max-downtime"}


@pytest.mark.parametrize(("field", "option"), [
    ("vm", "NAME"),
    ("max_downtime_ms", "--max-downtime"),
    ("disks", "--disk"),
    ("disks[1].size", "--disk size"),
    ("disks.pool", "--disk pool"),
    ("disks[0]", "--disk"),
    ("memory", "memory"),            # not this command's: left as the service named it
    ("bmc.password_file", "bmc.password_file"),
])
def test_option_for(field: str, option: str) -> None:
    assert option_for(field, FLAGS) == option


def test_options_named_rewords_and_keeps_the_subject() -> None:
    with pytest.raises(InvalidInput) as info, options_named(FLAGS):
        raise InvalidInput("disks[0].size", "must fit the pool's 229 GiB free", host="hv1")
    assert info.value.field == "--disk size"
    assert info.value.host == "hv1"
    assert info.value.message == "hv1: --disk size: must fit the pool's 229 GiB free"


def test_options_named_leaves_unknown_fields_and_other_errors_alone() -> None:
    original = InvalidInput("vcpus", "must be 1 to 512")
    with pytest.raises(InvalidInput) as info, options_named(FLAGS):
        raise original
    assert info.value is original
    with pytest.raises(KeyError), options_named(FLAGS):
        raise KeyError("x")
