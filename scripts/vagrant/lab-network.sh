#!/bin/bash
# Creates the vsw lab's networks on the local daemon once the daemon answers:
# the overlay network (VXLAN to the other VMs) and, when the VM has a LAN NIC
# (VSW_LAB_LAN_ADDRESS), the transparent network on that NIC; a network that
# exists already is left alone. Installed as
# /usr/local/libexec/vsw-lab-network by scripts/vagrant/services.sh and run by
# vsw.service after every daemon start (ExecStartPost): the first start
# creates the network; later starts find it in the daemon's saved state.
# Settings come from /etc/vsw/lab.env (or VSW_LAB_ENV); messages go to stderr,
# which is the journal under systemd (journalctl -u vsw).
set -euo pipefail

env_file=${VSW_LAB_ENV:-/etc/vsw/lab.env}
if [ -r "$env_file" ]; then
  set -a
  # shellcheck source=/dev/null
  . "$env_file"
  set +a
fi
network=${VSW_LAB_NETWORK:-blue}
subnet=${VSW_LAB_SUBNET:-10.10.0.0/24}
vni=${VSW_LAB_VNI:-4096}
vtep=${VSW_LAB_VTEP:-}
peers=${VSW_LAB_PEERS:-}
timeout=${VSW_LAB_TIMEOUT:-60}
vsw=${VSW_BIN:-/usr/local/bin/vsw}
# The LAN (all optional: a VM provisioned before the LAN existed has none of them).
lan_network=${VSW_LAB_LAN_NETWORK:-lan}
lan_address=${VSW_LAB_LAN_ADDRESS:-}
lan_subnet=${VSW_LAB_LAN_SUBNET:-}
lan_gateway=${VSW_LAB_LAN_GATEWAY:-}
lan_range=${VSW_LAB_LAN_RANGE:-}

log() { echo "vsw-lab: $*" >&2; }
die() { log "$*"; exit 1; }

[ -n "$vtep" ] || die "VSW_LAB_VTEP is not set in $env_file: provision the VM again (vagrant provision)."
deadline=$((SECONDS + timeout))

# The interface that has this IPv4 address (without its prefix length), or nothing.
interface_with() {
  ip -o -4 addr show | awk -v want="$1" '{ split($4, a, "/"); if (a[1] == want) { print $2; exit } }'
}

# The VTEP address is the VM's private network address: wait until it is up.
until [ -n "$(interface_with "$vtep")" ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "no interface has the VTEP address $vtep after ${timeout}s: check \`ip -br addr\` and the private network in the Vagrantfile."
  sleep 1
done

# The daemon answers once its socket is up.
until networks=$("$vsw" network ls --json 2>/dev/null); do
  [ "$SECONDS" -lt "$deadline" ] || die "the vsw daemon did not answer \`vsw network ls\` within ${timeout}s: see \`journalctl -u vsw\`."
  sleep 1
done

has_network() {
  printf '%s' "$networks" | python3 -c 'import json, sys; sys.exit(0 if any(n.get("name") == sys.argv[1] for n in json.load(sys.stdin)) else 1)' "$1"
}

if has_network "$network"; then
  log "network $network exists already: nothing to do for it."
else
  args=(network create -d overlay --subnet "$subnet" --vni "$vni" --vtep "$vtep")
  for peer in $peers; do args+=(--peer "$peer"); done
  args+=("$network")
  log "vsw ${args[*]}"
  "$vsw" "${args[@]}" >/dev/null || die "creating the overlay network $network failed (the line above says why)."
  log "created overlay network $network (VNI $vni, $subnet, vtep $vtep, peers ${peers:-none})."
fi

[ -n "$lan_address" ] || exit 0
for var in lan_subnet lan_gateway lan_range; do
  [ -n "${!var}" ] || die "VSW_LAB_LAN_ADDRESS is set but VSW_LAB_${var^^} is not, in $env_file: provision the VM again (vagrant provision)."
done
if has_network "$lan_network"; then
  log "network $lan_network exists already: nothing to do for it."
  exit 0
fi
# The LAN NIC is the one the Vagrantfile gave this address; its name depends on the box and the provider.
until uplink=$(interface_with "$lan_address") && [ -n "$uplink" ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "no interface has the LAN address $lan_address after ${timeout}s: check \`ip -br addr\` and the LAN's private network in the Vagrantfile."
  sleep 1
done
args=(network create -d transparent --uplink "$uplink" --subnet "$lan_subnet" --gateway "$lan_gateway" --ip-range "$lan_range" "$lan_network")
log "vsw ${args[*]}"
"$vsw" "${args[@]}" >/dev/null || die "creating the transparent network $lan_network on $uplink failed (the line above says why)."
log "created transparent network $lan_network on $uplink ($lan_subnet, gateway $lan_gateway, containers from $lan_range)."
