"""`virtfleet boot ...`: network installs of hypervisors (PXE/iPXE, Kickstart, DHCP)."""

from __future__ import annotations

import logging
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli.context import app_context
from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json, Site
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import InvalidInput, VirtfleetError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy configs; the "
                  "provisioning server.")


@app.callback()
def boot() -> None:
    """Network installs: DHCP, PXE/iPXE/GRUB, Kickstart, HAProxy configs."""


class ValidationFailed(VirtfleetError):
    """A generated file did not pass its real validator (a virtfleet bug: please report)."""


def _checker(tree: Path) -> None:
    from virtfleet.boot import validators

    for kind, pattern in (("dhcpd", "*/dhcpd/*.conf"), ("kea", "*/kea/*.json"),
                          ("haproxy", "*/haproxy/haproxy.cfg")):
        for path in sorted(tree.glob(pattern)):
            verdict = validators.check(kind, path)
            if not verdict.ok:
                last = (verdict.output.splitlines() or ["(no output)"])[-1]
                raise ValidationFailed(f"{path.relative_to(tree)}: "
                                       f"{validators.COMMANDS[kind][0]} refused it: {last}")
            if kind == "haproxy":
                _check_fd_limit(path, tree)


def _check_fd_limit(path: Path, tree: Path) -> None:
    """`haproxy -c` passes a maxconn whose descriptors the limit cannot hold; `haproxy -f`
    then refuses to start. Compare with this machine's hard limit, which it cannot exceed."""
    import resource

    from virtfleet.boot import haproxy

    text = path.read_text()
    need = haproxy.fds_needed(text)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and need > hard:
        found = re.search(r"^\s*maxconn\s+(\d+)", text, re.M)
        raise ValidationFailed(
            f"{path.relative_to(tree)}: haproxy needs {need} file descriptors for maxconn "
            f"{found.group(1) if found else '?'}, but this machine allows {hard} (ulimit -Hn); "
            "raise haproxy's limit (LimitNOFILE=) or install fewer hosts per site")


@app.command("render")
def render(
    file: Annotated[Path, typer.Option("-f", "--file", help="Fleet file (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the tree into "
                                      "(replaced as a whole if an earlier render made it).")],
    site: Site = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Run dhcpd -t, kea-dhcp4 -t and haproxy -c on the files before "
        "publishing the tree, and check HAProxy's file descriptors against this machine's "
        "limit.")] = False,
    json: Json = False,
) -> None:
    """Write every generated boot file (dhcpd, Kea, HAProxy, PXELINUX, GRUB, iPXE, kickstarts).

    Everything is validated and generated first; nothing is written if any input is invalid.
    """
    from virtfleet.boot.render import render_fleet, write_tree
    from virtfleet.inventory.fleetfile import load_fleet

    fleet = load_fleet(file)
    with options_named({"site": "--site", "out": "--out"}):
        files = render_fleet(fleet, site=site)
        paths = write_tree(files, out, before_publish=_checker if check else None)
    if json:
        emit_json([{"path": str(p), "kind": f.kind} for p, f in zip(paths, files, strict=True)])
    else:
        emit(table(["Kind", "File"], [(f.kind, str(p)) for p, f in zip(paths, files,
                                                                      strict=True)]))
        emit(f"{len(files)} files written under {out.absolute()}\n")


# ServeRequest's fields as `boot serve` names them.
SERVE_FLAGS = {"fleet_file": "--fleet", "files": "--files", "listen": "--listen", "port": "--port",
               "token_ttl": "--token-ttl", "check_wait": "--check-wait", "tftp": "--tftp",
               "tftp_port": "--tftp-port", "public_url": "--public-url",
               "trusted_proxies": "--trusted-proxy", "guess_limit": "--guess-limit",
               "client_timeout": "--client-timeout", "tls_cert": "--tls-cert",
               "tls_key": "--tls-key"}


def _ttl(value: str, field: str = "--token-ttl", least: int = 1) -> timedelta:
    """3600, 90s, 30m, 2h or 1d; from `least` seconds to seven days."""
    m = re.fullmatch(r"([0-9]{1,7})([smhd]?)", value.strip())
    if m is None:
        raise InvalidInput(field, f"{value!r} must be a number of seconds or like "
                           "90s, 30m, 2h, 1d")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not least <= seconds <= 7 * 86400:
        raise InvalidInput(field, f"{value!r} must be between {least} "
                           f"second{'' if least == 1 else 's'} and 7 days")
    return timedelta(seconds=seconds)


@app.command("serve")
def serve(
    ctx: typer.Context,
    fleet_file: Annotated[Path, typer.Option("-f", "--fleet", help="Fleet file (YAML): the "
                                             "hypervisors with a provision section.")],
    files: Annotated[Path | None, typer.Option(
        "--files", help="Directory served under /files/ (kernels, initrds, install trees).")]
    = None,
    listen: Annotated[str, typer.Option("--listen", help="Address to listen on.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port, printed).",
                                      min=0, max=65535)] = 8069,
    token_ttl: Annotated[str, typer.Option(
        "--token-ttl", help="How long a host's install token lasts after it fetched its "
        "script, and again after its kickstart: seconds, or 90s, 30m, 2h, 1d.")] = "2h",
    check_wait: Annotated[str, typer.Option(
        "--check-wait", help="After the callback, retry `host check` this long until the "
        "installed host answers (it calls back before its reboot).")] = "30m",
    tftp: Annotated[Path | None, typer.Option(
        "--tftp", help="Also serve this directory read-only over TFTP, for legacy PXE ROMs "
        "(e.g. boot render's <site>/tftp).")] = None,
    tftp_port: Annotated[int, typer.Option("--tftp-port", help="UDP port for --tftp "
                                           "(0: any free port, printed).", min=0,
                                           max=65535)] = 69,
    public_url: Annotated[str | None, typer.Option(
        "--public-url", help="Base URL installers reach this server by (default: the address "
        "each request came to), e.g. http://ks.example.com/.")] = None,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        "--trusted-proxy", help="Address or network of a proxy (HAProxy) whose "
        "X-Forwarded-For names the client; repeat for several. Nobody else's is read.")]
    = None,
    guess_limit: Annotated[int, typer.Option(
        "--guess-limit", min=1, max=10000, help="Refused requests per client, and wrong "
        "tokens per host, allowed in any minute; past it, 429.")] = 10,
    client_timeout: Annotated[str, typer.Option(
        "--client-timeout", help="How long a client may take to send a whole request "
        "(slowloris): seconds, or 10s, 1m.")] = "10s",
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="Serve HTTPS with this certificate (PEM; with --tls-key).")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", help="The certificate's private key (PEM, readable by its owner "
        "only).")] = None,
) -> None:
    """Serve network installs over HTTP: iPXE scripts, kickstarts with per-host tokens,
    install files, and the callback that enrols the installed hypervisor."""
    from virtfleet.boot.run import BootServer, ServeRequest

    req = ServeRequest(fleet_file, files, listen, port, _ttl(token_ttl),
                       _ttl(check_wait, "--check-wait", least=0), tftp, tftp_port, public_url,
                       tuple(trusted_proxy or ()), guess_limit,
                       _ttl(client_timeout, "--client-timeout"), tls_cert, tls_key)
    with options_named(SERVE_FLAGS):
        server = BootServer.open(req, app_context(ctx).store)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_escape_controls)
    # Before the Serving line: clients that come at once find every kickstart ready.
    server.prepare()
    emit(f"Serving network installs on {server.url} ({len(server.service.by_name)} hosts, "
         f"{server.new} newly planned)\n")
    if server.proxies:
        emit(f"Trusting X-Forwarded-For from {', '.join(str(p) for p in server.proxies)}\n")
    if server.tftp_address is not None:
        emit(f"Serving {tftp} over TFTP on {server.tftp_address} (read-only)\n")
    sys.stdout.flush()
    # SIGTERM ends it like Ctrl-C (uvicorn stops taking requests and finishes the running ones).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


def _escape_controls(record: logging.LogRecord) -> bool:
    """Nothing a request carried reaches the log raw: control characters escaped."""
    from virtfleet.boot.text import printable

    message = record.getMessage()
    escaped = printable(message)
    if escaped != message:
        record.msg, record.args = escaped, None
    return True


@app.command("status")
def status(ctx: typer.Context, json: Json = False) -> None:
    """Every network install `boot serve` knows: its state, when it got there, any error."""
    from virtfleet.cli.bootstatus import show

    show(app_context(ctx), json=json)
