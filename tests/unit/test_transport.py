"""The transport layer without a lab: the URIs virtfleet opens, the ssh configuration it gives
ssh (checked by ssh itself), its known_hosts, the transport directory's rules, TLS files,
ssh's failures said in one line, qemu+tcp refused outside pods that allow it, and the cap on
concurrent qemu+ssh connections."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.unit.cli import run
from tests.unit.nodes import host, node_uri, refused_port
from tests.unit.tools import require_tool
from virtfleet.errors import HostUnavailable, InvalidInput
from virtfleet.inventory.fleetfile import parse_fleet
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store
from virtfleet.transport import diagnose
from virtfleet.transport.connect import check_pki, connect_uri
from virtfleet.transport.hostkeys import BadKey, HostKey, KnownHosts
from virtfleet.transport.paths import TransportDir
from virtfleet.transport.pinning import UNREACHABLE, plan_pins
from virtfleet.transport.sshconfig import ensure_ssh_files, render_config
from virtfleet.virt.fanout import ConnectionPool, fan_out
from virtfleet.virt.host import Host


@pytest.fixture
def td(tmp_path: Path) -> TransportDir:
    root = tmp_path / "transport"
    return TransportDir(root).ensure()


def keypair(where: Path, name: str = "key") -> Path:
    require_tool("ssh-keygen", "openssh-client")
    path = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)
    return path


# ----------------------------------------------------------------- the URIs virtfleet opens


def test_ssh_and_tls_uris_get_virtfleets_own_parameters_and_nothing_else(
        td: TransportDir) -> None:
    ssh = urlsplit(connect_uri("qemu+ssh://root@hv1.example.com:2222/system", "hv1", td))
    assert (ssh.scheme, ssh.netloc, ssh.path) == ("qemu+ssh", "root@hv1.example.com:2222",
                                                   "/system")
    assert parse_qs(ssh.query) == {"command": [str(td.ssh_wrapper)], "no_tty": ["1"]}
    for name in ("cacert.pem", "clientcert.pem", "clientkey.pem"):
        (td.root / "pki").mkdir(mode=0o700, exist_ok=True)
        (td.pki / name).write_text("x")
    os.chmod(td.pki / "clientkey.pem", 0o600)
    tls = urlsplit(connect_uri("qemu+tls://hv1.example.com/system", "hv1", td))
    assert parse_qs(tls.query) == {"pkipath": [str(td.pki)]}
    for uri in ("qemu+tcp://10.0.0.1/system", "qemu:///system", "test:///tmp/x.xml"):
        assert connect_uri(uri, "h", td) == uri  # opened as given
    with pytest.raises(InvalidInput, match="URI parameters"):
        connect_uri("qemu+ssh://hv1/system?no_verify=1", "hv1", td)


def test_the_ssh_config_is_strict_and_ssh_itself_reads_it_so(td: TransportDir,
                                                             tmp_path: Path) -> None:
    require_tool("ssh", "openssh-client")
    key = keypair(td.root, "id_ed25519")
    wrapper = ensure_ssh_files(td)
    assert stat.S_IMODE(os.stat(td.ssh_config).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(wrapper).st_mode) == 0o700
    text = td.ssh_config.read_text()
    assert "StrictHostKeyChecking no" not in text and "accept-new" not in text
    # ssh -G prints the configuration ssh would use; run through the wrapper libvirt runs.
    out = subprocess.run([str(wrapper), "-G", "-p", "2222", "root@hv1.example.com"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    effective = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert effective["stricthostkeychecking"] == "true"
    assert effective["userknownhostsfile"] == str(td.known_hosts)
    assert effective["globalknownhostsfile"] == "/dev/null"
    assert effective["batchmode"] == "yes"
    assert effective["passwordauthentication"] == "no"
    assert effective["identitiesonly"] == "yes"
    assert effective["identityfile"] == str(key)
    assert effective["forwardagent"] == "no" and effective["controlmaster"] == "false"
    assert effective["port"] == "2222" and effective["user"] == "root"


def test_a_user_key_outside_the_directory_is_used_when_named(td: TransportDir,
                                                            tmp_path: Path) -> None:
    key = keypair(tmp_path)
    assert f"IdentityFile {key}\n" in render_config(replace(td, key_override=key), key)
    assert "IdentityFile" not in render_config(td, None)  # else ssh's defaults and the agent


def test_the_transport_directory_must_be_ours_and_closed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o770)
    os.chmod(open_dir, 0o770)
    with pytest.raises(InvalidInput, match="mode 0770; it must be 0700") as e:
        TransportDir(open_dir).ensure()
    assert e.value.field == "VIRTFLEET_TRANSPORT_DIR"
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(InvalidInput, match="belongs to uid 65534"):
            TransportDir(theirs).ensure()
    monkeypatch.setenv("VIRTFLEET_TRANSPORT_DIR", str(tmp_path / "with space"))
    with pytest.raises(InvalidInput, match="VIRTFLEET_TRANSPORT_DIR: .*absolute path"):
        TransportDir.from_env()
    monkeypatch.setenv("VIRTFLEET_TRANSPORT_DIR", str(tmp_path / "100%"))
    with pytest.raises(InvalidInput):
        TransportDir.from_env()


def test_the_cli_refuses_an_open_transport_directory(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    r = run(tmp_path / "db", "hostkey", "list", env={"VIRTFLEET_TRANSPORT_DIR": str(open_dir)})
    assert r.code == 2
    assert r.err.strip() == (f"virtfleet: error: VIRTFLEET_TRANSPORT_DIR: {open_dir} has mode "
                             f"0755; it must be 0700 (chmod 700 {open_dir})")


# ----------------------------------------------------------------- known_hosts


def test_known_hosts_pins_one_entry_per_host_and_forgets_it(td: TransportDir,
                                                            tmp_path: Path) -> None:
    a = HostKey.parse(*(keypair(tmp_path, "a").with_suffix(".pub").read_text().split()[:2]))
    b = HostKey.parse(*(keypair(tmp_path, "b").with_suffix(".pub").read_text().split()[:2]))
    kh = KnownHosts(td.known_hosts)
    td.known_hosts.write_text("|1|hashed= ssh-ed25519 AAAA\n@revoked * ssh-rsa AAAA\n# note\n")
    kh.add("10.0.0.1", 22, a)
    kh.add("10.0.0.1", 22, a)  # twice: one line
    kh.add("hv2.example.com", 2222, b)
    lines = td.known_hosts.read_text().splitlines()
    assert lines[3:] == [f"10.0.0.1 ssh-ed25519 {a.data}",
                         f"[hv2.example.com]:2222 ssh-ed25519 {b.data}"]
    assert kh.keys_for("10.0.0.1", 22) == [a] and kh.keys_for("hv2.example.com", 22) == []
    assert stat.S_IMODE(os.stat(td.known_hosts).st_mode) == 0o600
    assert kh.forget("10.0.0.1", 22) == 1
    assert kh.keys_for("10.0.0.1", 22) == [] and kh.keys_for("hv2.example.com", 2222) == [b]
    assert td.known_hosts.read_text().splitlines()[:3] == lines[:3]  # not ours: kept


def test_fingerprints_are_the_ones_ssh_keygen_prints(tmp_path: Path) -> None:
    pub = keypair(tmp_path).with_suffix(".pub")
    key = HostKey.parse(*pub.read_text().split()[:2])
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    assert key.fingerprint == out[1] and f"({key.short_type})" == out[-1]


@pytest.mark.parametrize("kind,data,words", [
    ("ssh-dss", "AAAAB3NzaC1kc3MAAACBAP", "is not one of"),
    ("ssh-ed25519", "not base64!", "not base64"),
    ("ssh-ed25519", "AAAAB3NzaC1yc2EAAAADAQAB", "not a ssh-ed25519 key"),
    ("ssh-ed25519", "", "empty"),
])
def test_bad_keys_are_refused(kind: str, data: str, words: str) -> None:
    with pytest.raises(BadKey, match=words):
        HostKey.parse(kind, data)


def test_a_host_that_does_not_answer_is_not_pinned(td: TransportDir) -> None:
    require_tool("ssh-keyscan", "openssh-client")
    port = refused_port()
    plan = plan_pins([("dead", f"qemu+ssh://root@127.0.0.1:{port}/system"),
                      ("local", "qemu:///system")], accept_new=True, td=td, timeout=2)
    assert [(r.host, r.state) for r in plan.results] == [("dead", UNREACHABLE)]
    plan.require_decided()  # nothing to refuse
    plan.commit()
    assert td.known_hosts.read_text() == ""


def test_host_add_refuses_an_ssh_host_whose_key_cannot_be_fetched(tmp_path: Path) -> None:
    """Regression: `host add` of a qemu+ssh host that did not answer added it with no pinned
    key. A host added alone is refused (exit 1, one line, nothing added or pinned); `apply`
    still declares not-yet-installed hosts, unpinned and named (docs/transports.md)."""
    require_tool("ssh-keyscan", "openssh-client")
    db, td = tmp_path / "s.db", tmp_path / "transport"
    env = {"VIRTFLEET_TRANSPORT_DIR": str(td)}
    uri = f"qemu+ssh://root@127.0.0.1:{refused_port()}/system"
    r = run(db, "host", "add", "hv9", "--uri", uri, "--site", "s", "--pod", "p",
            "--accept-new", env=env)
    assert r.code == 1 and r.out == "" and r.err.count("\n") == 1, r.err
    assert r.err.startswith("virtfleet: error: hv9: its ssh host key could not be fetched "
                            "(127.0.0.1:"), r.err
    assert "nothing was added" in r.err
    assert run(db, "host", "list", "--json").json() == []
    assert not (td / "known_hosts").exists() or (td / "known_hosts").read_text() == ""
    # A name the inventory has already is said first: the store answers before any host.
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(_fleet("qemu+tcp://10.0.0.1/system", True)))
    assert run(db, "apply", "-f", str(tmp_path / "f.yaml"), env=env).code == 0
    r = run(db, "host", "add", "hv1", "--uri", uri, "--site", "s", "--pod", "p", env=env)
    assert (r.code, r.err) == (4, "virtfleet: error: hypervisor 'hv1' is already in the "
                               "inventory\n"), r.err


# ----------------------------------------------------------------- TLS files


def test_tls_needs_all_three_files_and_a_private_key(td: TransportDir) -> None:
    td.pki.mkdir(mode=0o700)
    with pytest.raises(HostUnavailable, match="TLS: no CA certificate: .*cacert.pem is missing"):
        check_pki(td.pki, "hv1")
    (td.pki / "cacert.pem").write_text("x")
    with pytest.raises(HostUnavailable, match="TLS: no client certificate: "):
        check_pki(td.pki, "hv1")
    (td.pki / "clientcert.pem").write_text("x")
    with pytest.raises(HostUnavailable, match="TLS: no client key: "):
        check_pki(td.pki, "hv1")
    (td.pki / "clientkey.pem").write_text("x")
    os.chmod(td.pki / "clientkey.pem", 0o644)
    with pytest.raises(HostUnavailable, match="mode 0644; the client key must be readable by "
                                              "its owner only") as e:
        check_pki(td.pki, "hv1")
    assert e.value.host == "hv1"
    os.chmod(td.pki / "clientkey.pem", 0o600)
    check_pki(td.pki, "hv1")


def test_opening_a_tls_host_without_a_client_certificate_fails_before_connecting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTFLEET_TRANSPORT_DIR", str(tmp_path / "t"))
    with pytest.raises(HostUnavailable) as e:
        Host.open(f"qemu+tls://127.0.0.1:{refused_port()}/system", label="hv1")
    assert e.value.message.startswith("hv1: TLS: no CA certificate: ")


# ----------------------------------------------------------------- ssh's failures in one line

# What libvirt 9.0 reported when ssh failed, as seen on the lab (its lines joined by \r\n).
BANNER = ("Cannot recv data: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
          "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
          "The fingerprint for the ED25519 key sent by the remote host is\n"
          "SHA256:QgB+4I/TTvpRfv7yboi2UM1JLqwU/snq+j7UwD1vTFg.\r\n"
          "Host key for 10.250.62.11 has changed and you have requested strict checking.\r\n"
          "Host key verification failed.: Connection reset by peer")


@pytest.mark.parametrize("message,said", [
    (BANNER, "ssh host key CHANGED since it was pinned; it now offers ED25519 "
             "SHA256:QgB+4I/TTvpRfv7yboi2UM1JLqwU/snq+j7UwD1vTFg (a reinstalled host"),
    ("Cannot recv data: No ED25519 host key is known for 10.250.62.11 and you have requested "
     "strict checking.\r\nHost key verification failed.: Connection reset by peer",
     "ssh host key of 10.250.62.11 is not pinned"),
    ("Cannot recv data: root@10.250.62.11: Permission denied (publickey).: Connection reset "
     "by peer", "ssh refused our key as root (Permission denied (publickey))"),
    ("Cannot recv data: ssh: connect to host 10.250.62.11 port 2222: Connection refused: "
     "Connection reset by peer", "ssh: cannot connect to 10.250.62.11 port 2222: Connection "
                                 "refused"),
    ("Cannot recv data: sh: 1: nc: not found: Connection reset by peer",
     "the host has neither virt-ssh-helper"),
    ("Cannot recv data: Value too large for defined data type",
     "ssh failed and said more than libvirt keeps"),
])
def test_ssh_failures_come_out_as_one_clear_line(message: str, said: str) -> None:
    line = diagnose.ssh_failure(message, "hv1")
    assert line is not None and line.startswith(said) and "\n" not in line, line


# ----------------------------------------------------------------- qemu+tcp only where allowed


def _fleet(uri: str, insecure: bool | None) -> dict[str, object]:
    pod: dict[str, object] = {"name": "p1", "hypervisors": [{"name": "hv1", "uri": uri}]}
    if insecure is not None:
        pod["insecure_transport"] = insecure
    return {"sites": [{"name": "s1", "pods": [pod]}]}


@pytest.mark.parametrize("uri", ["qemu+tcp://10.0.0.1/system", "test+tcp://10.0.0.1/n/h.xml"])
def test_plain_tcp_is_refused_unless_the_pod_allows_it(uri: str) -> None:
    for insecure in (None, False):
        with pytest.raises(InvalidInput) as e:
            parse_fleet(_fleet(uri, insecure))
        assert e.value.field == "sites[0].pods[0].hypervisors[0].uri"
        assert "set insecure_transport: true on pod 'p1'" in e.value.rule
    assert parse_fleet(_fleet(uri, True)).sites[0].pods[0].insecure_transport


@pytest.mark.parametrize("uri", ["qemu+ssh://hv1/system", "qemu+tls://hv1/system",
                                 "qemu:///system"])
def test_secure_and_local_uris_need_no_leave(uri: str) -> None:
    parse_fleet(_fleet(uri, None))


def test_the_store_keeps_the_leave_and_host_add_obeys_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(_fleet("qemu+tcp://10.0.0.1/system", True)))
    unused = tmp_path / "transport"
    assert run(db, "apply", "-f", str(tmp_path / "f.yaml"),
               env={"VIRTFLEET_TRANSPORT_DIR": str(unused)}).code == 0
    assert not unused.exists()  # no qemu+ssh host: nothing made for one
    with Store(f"sqlite:///{db}") as store:
        assert store.fleet().sites[0].pods[0].insecure_transport
    # Into the pod that allows it: fine. Into a new pod: refused, naming the option.
    assert run(db, "host", "add", "hv2", "--uri", "qemu+tcp://10.0.0.2/system", "--site",
               "s1", "--pod", "p1").code == 0
    r = run(db, "host", "add", "hv3", "--uri", "qemu+tcp://10.0.0.3/system", "--site", "s1",
            "--pod", "p2")
    assert r.code == 2 and r.err.startswith("virtfleet: error: --uri: qemu+tcp is neither "
                                            "encrypted nor authenticated"), r.err
    assert [h["name"] for h in run(db, "host", "list", "--json").json()] == ["hv1", "hv2"]
    # A fleet file that drops the leave is refused as a whole.
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(_fleet("qemu+tcp://10.0.0.1/system", None)))
    r = run(db, "apply", "-f", str(tmp_path / "f.yaml"))
    assert r.code == 2 and "sites[0].pods[0].hypervisors[0].uri: qemu+tcp" in r.err, r.err


# ----------------------------------------------------------------- ssh's cost, bounded


class _AsIfSsh(ConnectionPool):
    """Hosts whose inventory URI is qemu+ssh, each served by a test-driver node file here."""

    def __init__(self, nodes: dict[str, str]) -> None:
        super().__init__(one_shot=True)
        self.nodes = nodes

    def get(self, record: HostRecord, inline: bool = False) -> Host:
        return super().get(replace(record, uri=self.nodes[record.name]), inline)

    def release(self, record: HostRecord) -> None:
        super().release(replace(record, uri=self.nodes[record.name]))


def test_at_most_ssh_concurrency_qemu_ssh_hosts_are_worked_on_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTFLEET_SSH_CONCURRENCY", "3")
    hosts, nodes, over_ssh = [], {}, set()
    for i in range(12):
        name = f"cap{i}"
        nodes[name] = node_uri(tmp_path, "empty.xml", f"{name}.xml")
        if i % 4:  # 9 over ssh; cap0, cap4, cap8 local
            over_ssh.add(name)
        hosts.append(host(name, f"qemu+ssh://root@{name}.example.com/system"
                          if name in over_ssh else nodes[name]))
    entered = threading.Condition()
    inside: set[str] = set()
    peak = 0
    gate = threading.Event()  # every host's work holds here until the test has looked

    def work(h: Host) -> str:
        nonlocal peak
        with entered:
            inside.add(h.label)
            peak = max(peak, len(inside & over_ssh))
            entered.notify_all()
        gate.wait(timeout=60)
        with entered:
            inside.discard(h.label)
        return h.label

    def started() -> set[str]:
        """The hosts whose fan-out thread exists (fan_out names them; Thread.start returns
        only once the thread runs)."""
        return {t.name.removeprefix("fanout ") for t in threading.enumerate()
                if t.name.startswith("fanout cap")}

    box: dict[str, list[object]] = {}
    with _AsIfSsh(nodes) as pool:
        runner = threading.Thread(target=lambda: box.setdefault(
            "results", list(fan_out(hosts, work, pool, concurrency=8))))
        runner.start()
        try:
            # The scheduler goes in host order: cap8 (local) is handed out after it decided on
            # cap5-7 (ssh). Once the six it may start are all working (a worker names itself
            # before it opens the host, so wait for the work itself: the opens may finish in
            # any order), any ssh host beyond the cap would have a worker too.
            first = {"cap0", "cap1", "cap2", "cap3", "cap4", "cap8"}
            with entered:
                assert entered.wait_for(lambda: first <= inside, timeout=60), inside
            assert started() == first
        finally:
            gate.set()
            runner.join(timeout=120)
    results = box["results"]
    assert [r.error for r in results] == [None] * 12  # type: ignore[attr-defined]
    assert peak == 3  # capped at 3 throughout, and the cap was reached
