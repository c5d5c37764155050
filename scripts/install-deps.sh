#!/usr/bin/env bash
# Install the Debian packages virtfleet needs, only those that are missing.
set -euo pipefail
pkgs=(
  python3-venv python3-dev gcc pkg-config
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils ipxe-qemu
  busybox-static cpio iproute2 dpkg-dev
  e2fsprogs  # mkfs.ext4 -d: the lab's tiny root disk
  postgresql
  isc-dhcp-server kea-dhcp4-server haproxy
  libguestfs-tools linux-image-cloud-amd64 debootstrap
  virtinst  # virt-clone: bench/clone's baseline
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
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
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
