#!/usr/bin/env bash
# The virtfleet demo, on this machine (root, Debian 12; `make demo` installs what is missing):
#   three real libvirtd hypervisors in two pods, each in its own network namespace,
#   the lab's fleet file applied to the inventory, tiny real QEMU guests on every hypervisor,
#   then the fleet-wide views an operator starts with.
# The lab stays up afterwards; `.venv/bin/virtfleet lab down` removes every trace of it.
set -euo pipefail
cd "$(dirname "$0")/.."

VF=${VIRTFLEET:-.venv/bin/virtfleet}
LAB=${VIRTFLEET_DEMO_LAB:-lab}
PER_HOST=${VIRTFLEET_DEMO_GUESTS:-2}

step() {
  printf '\n\033[1m$ virtfleet %s\033[0m\n' "$*"
  "$VF" "$@"
}

if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (the lab creates network namespaces and starts libvirtd)" >&2
  exit 1
fi

# The demo applies the lab's fleet file, which replaces the inventory. If the store already
# holds hypervisors of a real estate, leave it alone and use a store of the demo's own.
others=$("$VF" host list --json | python3 -c \
  'import json, sys; print(sum(h["site"] != sys.argv[1] for h in json.load(sys.stdin)))' "$LAB")
if [ "$others" != 0 ]; then
  export VIRTFLEET_DB="/var/lib/virtfleet/lab/demo-$LAB.db"
  echo "demo: your store has $others other hypervisor(s); the demo uses VIRTFLEET_DB=$VIRTFLEET_DB"
fi

printf '\033[1m$ virtfleet lab up --hosts 3 --pods 2 --name %s\033[0m\n' "$LAB"
fleet=$("$VF" lab up --hosts 3 --pods 2 --name "$LAB")
echo "fleet file: $fleet"
cat "$fleet"

step apply -f "$fleet"
step lab guests --per-host "$PER_HOST" --name "$LAB"
step list
step host info
step lab status --name "$LAB"

cat <<EOF

The lab is still up. Next, for example:
  $VF list --json
  $VF host version
  $VF lab simulate            # the 1,500-hypervisor reference estate, over real RPC
  $VF lab down --name $LAB    # removes daemons, guests, namespaces, interfaces, state
EOF
