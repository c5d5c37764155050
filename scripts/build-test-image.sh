#!/bin/bash
# A small Debian image for the template tests: debootstrap (minbase, plus openssh-server so the
# image has real SSH host keys for virt-sysprep to remove) packed into a qcow2 with virt-make-fs.
# Built once, like the apt packages, and cached: the tests themselves never touch the network.
set -euo pipefail
OUT_DIR=${VIRTFLEET_IMAGE_CACHE:-/var/cache/virtfleet/images}
OUT=$OUT_DIR/debian-minbase.qcow2
[ -s "$OUT" ] && exit 0
for tool in debootstrap virt-make-fs; do
    command -v "$tool" >/dev/null || { echo "build-test-image: $tool is missing" >&2; exit 1; }
done
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /var/tmp/virtfleet-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "build-test-image: debootstrap bookworm (minbase) into $WORK (about a minute, once)"
debootstrap --variant=minbase --include=openssh-server bookworm "$WORK/root" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
# What an installed system has and a template must not keep.
systemd-id128 new >"$WORK/root/etc/machine-id" 2>/dev/null \
    || od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/root/etc/machine-id"
echo "virtfleet-template-source" >"$WORK/root/etc/hostname"
echo "ls -la /root" >"$WORK/root/root/.bash_history"
rm -rf "$WORK/root/var/cache/apt/archives"/*.deb
export LIBGUESTFS_BACKEND=direct
if [ "${VIRTFLEET_VIRT_TYPE:-qemu}" = qemu ]; then export LIBGUESTFS_BACKEND_SETTINGS=force_tcg; fi
virt-make-fs --format=qcow2 --type=ext4 --size=+96M "$WORK/root" "$WORK/image.qcow2"
mv "$WORK/image.qcow2" "$OUT"
echo "build-test-image: $OUT ready"
