#!/usr/bin/env bash
# The virtfleet demo, on this machine (root, Debian 12; `make demo` installs what is missing):
#   three real libvirtd hypervisors in two pods, each in its own network namespace;
#   the lab's fleet file applied (inventory, each hypervisor's `default` NAT network) and each
#   pod's shared storage made a pool on its hypervisors;
#   then the main job: a tiny VM made with `vm create`, sealed into a template with
#   virt-sysprep, linked clones started across a pod (each takes the hostname it is handed and
#   asks its hypervisor's network for an address), a snapshot, and the fleet view.
# The lab stays up afterwards; `.venv/bin/virtfleet lab down` removes every trace of it.
set -euo pipefail
cd "$(dirname "$0")/.."

VF=${VIRTFLEET:-.venv/bin/virtfleet}
LAB=${VIRTFLEET_DEMO_LAB:-lab}
PER_HOST=${VIRTFLEET_DEMO_GUESTS:-0}  # lab-made tiny guests on every host, beside the clones
CLONES=${VIRTFLEET_DEMO_CLONES:-3}
# KVM guests hang on the machines virtfleet is built on: TCG for the VMs and for libguestfs'
# appliance. Where KVM works, run with VIRTFLEET_VIRT_TYPE=auto.
export VIRTFLEET_VIRT_TYPE=${VIRTFLEET_VIRT_TYPE:-qemu}

# Show each command as one could paste it: words with spaces or quotes in single quotes.
step() {
  local shown=virtfleet arg
  for arg in "$@"; do
    if [[ $arg =~ [[:space:]\'\"\$] ]]; then shown+=" '${arg//\'/\'\\\'\'}'"; else shown+=" $arg"; fi
  done
  printf '\n\033[1m$ %s\033[0m\n' "$shown"
  "$VF" "$@"
}

# The same, the output also kept in $out/NAME (for the next commands' arguments).
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
keep() {
  local name=$1
  shift
  step "$@" | tee "$out/$name"
}
# The last word of the line whose first word is KEY (or KEY:) in $out/NAME.
field() { awk -v key="$2" '$1 == key ":" || $1 == key { print $NF }' "$out/$1"; }

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

pod=$LAB-pod1
host=$LAB-hv1
pool=$pod-shared   # the pod's storage pool: the fleet file's `storage:`, named <pod>-shared

step apply -f "$fleet"              # the inventory, and each hypervisor's `default` network
step sync                           # the store's view of the fresh lab: an earlier run's VMs forgotten
step pool apply-pod --all           # each pod's shared directory, a pool on its hypervisors
if [ "$PER_HOST" != 0 ]; then
  step lab guests --per-host "$PER_HOST" --name "$LAB"
fi

# The main job. The tiny guest's disk is a minimal Linux root (busybox, /etc) that libguestfs
# can inspect; its kernel and initramfs are booted directly.
keep image lab image
keep vol vol upload "$(field image disk)" demo-base.qcow2 --host "$host" --pool "$pool"
step vm create demo-base --host "$host" --memory 128M --vcpus 1 --disk "path=$(field vol Path)" \
  --kernel "$(field image kernel)" --initrd "$(field image initrd)" \
  --cmdline "console=ttyS0 quiet" --network network=default --no-start
step template create demo-tpl --from demo-base
# Lab hypervisors have 2 CPUs each; tiny guests need almost none of them.
step vm clone demo-tpl demo --count "$CLONES" --pod "$pod" --start --cpu-ratio 4

# Each clone, once booted, asks its hypervisor's dnsmasq for a lease under the hostname it
# was handed through SMBIOS: its lease is the proof that it runs, named and on the network.
clones=$(seq -f "demo-%g" 1 "$CLONES")
printf '\nwaiting for the clones to boot and take their leases'
leased=0
for _ in $(seq 1 60); do
  # $clones unquoted: one argument per clone name
  leased=$("$VF" net dhcp-leases default --pod "$pod" --json | python3 -c \
    'import json, sys; print(len(set(sys.argv[1:]) & {x["hostname"] for x in json.load(sys.stdin)}))' \
    $clones)
  [ "$leased" -ge "$CLONES" ] && break
  printf '.'
  sleep 2
done
echo
step net dhcp-leases default --pod "$pod"
if [ "$leased" -lt "$CLONES" ]; then
  echo "demo: only $leased of $CLONES clones took a lease; see 'virtfleet vm console demo-1'" >&2
  exit 1
fi
step snapshot create demo-2 --name before-deploy
step list

db_line=""
[ -n "${VIRTFLEET_DB:-}" ] && db_line="  export VIRTFLEET_DB=$VIRTFLEET_DB
"
cat <<EOF

The lab is still up. Next, for example:
${db_line}  export VIRTFLEET_VIRT_TYPE=$VIRTFLEET_VIRT_TYPE
  $VF vm console demo-1          # a shell on its serial console (try: hostname); Ctrl+] leaves
  $VF snapshot list demo-2
  $VF vm clone demo-tpl more --count 2 --pod $pod --start --cpu-ratio 4
  $VF template delete demo-tpl   # refused (exit 4): its linked clones need its image
  $VF pool list; $VF net list; $VF host info
  $VF lab simulate --name $LAB   # the 1,500-hypervisor reference estate, over real RPC
  $VF lab down --name $LAB       # removes daemons, guests, pools, volumes, networks, namespaces, state
EOF
