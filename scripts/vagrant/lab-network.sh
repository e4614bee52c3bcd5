#!/bin/bash
# Creates the vsw lab's overlay network on the local daemon once the daemon
# answers, and does nothing if the network exists. Installed as
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

log() { echo "vsw-lab: $*" >&2; }
die() { log "$*"; exit 1; }

[ -n "$vtep" ] || die "VSW_LAB_VTEP is not set in $env_file: provision the VM again (vagrant provision)."
deadline=$((SECONDS + timeout))

# The VTEP address is the VM's private network address: wait until it is up.
until ip -o -4 addr show | grep -qF " inet $vtep/"; do
  [ "$SECONDS" -lt "$deadline" ] || die "no interface has the VTEP address $vtep after ${timeout}s: check \`ip -br addr\` and the private network in the Vagrantfile."
  sleep 1
done

# The daemon answers once its socket is up.
until networks=$("$vsw" network ls --json 2>/dev/null); do
  [ "$SECONDS" -lt "$deadline" ] || die "the vsw daemon did not answer \`vsw network ls\` within ${timeout}s: see \`journalctl -u vsw\`."
  sleep 1
done

if printf '%s' "$networks" | python3 -c 'import json, sys; sys.exit(0 if any(n.get("name") == sys.argv[1] for n in json.load(sys.stdin)) else 1)' "$network"; then
  log "network $network exists already: nothing to do."
  exit 0
fi

args=(network create -d overlay --subnet "$subnet" --vni "$vni" --vtep "$vtep")
for peer in $peers; do args+=(--peer "$peer"); done
args+=("$network")
log "vsw ${args[*]}"
"$vsw" "${args[@]}" >/dev/null || die "creating the overlay network $network failed (the line above says why)."
log "created overlay network $network (VNI $vni, $subnet, vtep $vtep, peers ${peers:-none})."
