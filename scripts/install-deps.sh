#!/usr/bin/env bash
# Install the Debian packages virtfleet needs (only those missing), then check that every program
# in scripts/programs.txt is there. Run by `make deps`, so by every `make test`: when nothing is
# missing it asks dpkg once, looks each program up, and changes nothing.
#   install-deps.sh --check   only check the programs (as any user; installs nothing)
#
# Packages are installed by name with --no-install-recommends, so what a tool only Recommends
# (libvirt's dnsmasq-base and libxml2-utils, for two) is installed only if it is named:
#   - a package that provides a program someone runs: add the program to scripts/programs.txt
#     (its package is installed from there, and the program is checked after every install);
#   - a package that is not a program (headers, a library, a driver module, data): add it below.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFEST="$ROOT/scripts/programs.txt"

pkgs=(
  # building the venv: python3 -m venv, and pip compiling libvirt-python against libvirt
  python3-venv
  python3-dev
  libvirt-dev
  # libvirtd as a system service: its config, default network and nwfilter definitions
  libvirt-daemon-system
  # libvirtd's QEMU driver (a module, not a program)
  libvirt-daemon-driver-qemu
  # the store tests' PostgreSQL server (its programs are checked from programs.txt)
  postgresql
  # libosinfo for `vm create --os-variant` (design/osinfo.py): the typelib and the OS database,
  # and the headers PyGObject and its pycairo dependency build against in the venv
  gir1.2-libosinfo-1.0
  osinfo-db
  libgirepository1.0-dev
  libcairo2-dev
)

# programs.txt: program, package, who runs it, why. Blank lines and # comments are skipped.
progs=()
prog_pkgs=()
read_manifest() {
  local prog pkg rest
  while read -r prog pkg rest; do
    [[ -z "$prog" || "$prog" == \#* ]] && continue
    if [[ -z "$pkg" || -z "$rest" ]]; then
      echo "virtfleet: $MANIFEST: '$prog': want program, package, who runs it, why" >&2
      exit 1
    fi
    progs+=("$prog")
    prog_pkgs+=("$pkg")
  done <"$MANIFEST"
}

install_missing() {
  local -A want=() installed=()
  local p name status missing=()
  for p in "${pkgs[@]}" "${prog_pkgs[@]}"; do want[$p]=1; done
  # One dpkg-query for all of them; a package dpkg has never seen is simply not listed.
  while read -r name status; do
    [[ "$status" == "install ok installed" ]] && installed[$name]=1
  done < <(dpkg-query -W -f='${Package} ${Status}\n' "${!want[@]}" 2>/dev/null || true)
  for p in "${!want[@]}"; do
    [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0

  if [ "$(id -u)" != 0 ]; then
    echo "virtfleet: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "virtfleet: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installing dhcpd, Kea, HAProxy or PostgreSQL must not start their system services: virtfleet
  # only runs their config checkers and its own private instances. Deny service starts for the
  # length of the install unless the machine already has a policy.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # A fresh machine's unattended-upgrades (or another install) may hold dpkg's lock for a
  # while: wait for it (up to 10 minutes) rather than fail at once.
  local wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${wait[@]}" update -qq
  apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Every promised program, found where the code looks for it (PATH, then sbin). A package that is
# installed but lacks the program (a wrong package in programs.txt, a file removed by hand) fails.
check_programs() {
  local i prog absent=()
  local PATH="$PATH:/usr/sbin:/sbin"
  for i in "${!progs[@]}"; do
    prog="${progs[$i]}"
    if [[ "$prog" == /* ]]; then
      compgen -G "$prog" >/dev/null || absent+=("$prog (package ${prog_pkgs[$i]})")
    else
      command -v "$prog" >/dev/null || absent+=("$prog (package ${prog_pkgs[$i]})")
    fi
  done
  if ((${#absent[@]})); then
    printf 'virtfleet: missing %s\n' "${absent[@]}" >&2
    echo "virtfleet: (scripts/programs.txt lists what is needed and why)" >&2
    exit 1
  fi
}

case "${1:-}" in
  "") read_manifest; install_missing; check_programs ;;
  --check) read_manifest; check_programs ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
