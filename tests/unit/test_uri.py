import pytest

from virtfleet.errors import InvalidInput
from virtfleet.inventory.uri import parse_uri


@pytest.mark.parametrize("uri", [
    "qemu:///system",
    "qemu:///session",
    "qemu+ssh://virtfleet@hv1.or.example.com/system",
    "qemu+tls://hv1.or.example.com:16514/system",
    "qemu+tcp://10.250.0.11/system",
    "qemu+tcp://[fd00::11]:16509/system",
    "test:///default",
    "test:///srv/sim/hv-0001.xml",
    "test+tcp://127.0.0.2/srv/sim/hv-0001.xml",
])
def test_valid_uris_round_trip(uri: str) -> None:
    assert parse_uri(uri).render() == uri


@pytest.mark.parametrize("uri,words", [
    ("qemu+ssh://hv1/system?command=/bin/sh", "parameters"),
    ("qemu+ssh://hv1/system?socket=/tmp/evil", "parameters"),
    ("qemu+tls://hv1/system?no_verify=1", "parameters"),
    ("qemu+ext://hv1/system", "scheme"),
    ("xen://hv1/", "scheme"),
    ("qemu+ssh:///system", "needs a host"),
    ("qemu://hv1/system", "takes no host"),
    ("qemu+ssh://hv1/root", "/system or /session"),
    ("qemu+ssh://hv1;rm -rf/system", "spaces"),
    ("qemu+ssh://hv1$(id)/system", "not a valid name"),
    ("qemu+ssh://user:pw@hv1/system", "password"),
    ("qemu+ssh://hv1:99999/system", "port"),
    ("qemu+ssh://hv1:0/system", "port"),
    ("test:///../etc/passwd", "node file"),
    ("test:///a b.xml", "spaces"),
    ("qemu+ssh://hv1/system#frag", "fragment"),
    ("", "libvirt URI"),
])
def test_bad_uris_name_the_rule(uri: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_uri(uri)
    assert exc.value.field.startswith("uri")
    assert words in str(exc.value)
