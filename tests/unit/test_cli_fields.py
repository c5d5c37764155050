"""Services name fields; the CLI words them as its options (cli/fields.py)."""

from __future__ import annotations

import pytest

from virtfleet.cli.fields import option_for, options_named, reword
from virtfleet.errors import Conflict, InvalidInput

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


def test_fields_an_error_names_in_its_text_are_worded_too() -> None:
    flags = {"destroy": "--destroy", "scope.all": "--all", "name": "NAME"}
    with pytest.raises(Conflict) as info, options_named(flags):
        raise Conflict("network 'lab' is active; destroy it first (or give `destroy`)",
                       host="hv1")
    assert info.value.message == ("hv1: network 'lab' is active; destroy it first (or give "
                                  "--destroy)")
    with pytest.raises(InvalidInput) as bad, options_named(flags):
        raise InvalidInput("scope.all", "do not combine it with `host`; see `getsebool x`")
    assert bad.value.message == "--all: do not combine it with `host`; see `getsebool x`"
    row = InvalidInput("name", "missing (or give `scope.all`)", host="hv2")
    reword(row, flags)
    assert (row.field, row.rule, row.in_row("hv2")) == (
        "NAME", "missing (or give --all)", "NAME: missing (or give --all)")
