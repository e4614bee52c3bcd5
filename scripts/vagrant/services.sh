#!/bin/bash
# vsw lab provisioning, step 3 of 3 (Vagrantfile, provisioner "services"), as root:
# writes the lab's settings to /etc/vsw/lab.env, names the lab VMs in
# /etc/hosts, installs vsw.service (the daemon) and vsw-lab-network (creates
# the overlay network and the LAN's transparent network after every daemon
# start), restarts the daemon on the new build and checks that the networks
# exist. Idempotent.
set -euo pipefail

dir=${VSW_LAB_DIR:-/opt/vsw}

log() { echo "vsw-lab: $*"; }
die() { echo "vsw-lab: $*" >&2; exit 1; }

for var in VSW_LAB_NETWORK VSW_LAB_SUBNET VSW_LAB_VNI VSW_LAB_VTEP; do
  [ -n "${!var:-}" ] || die "$var is not set: this script runs from the Vagrantfile, which sets it."
done
[ -x /usr/local/bin/vsw ] || die "/usr/local/bin/vsw is missing: run the \"build\" provisioner first (vagrant provision --provision-with build)."

log "writing /etc/vsw/lab.env (vtep $VSW_LAB_VTEP, peers ${VSW_LAB_PEERS:-none}, LAN address ${VSW_LAB_LAN_ADDRESS:-none})"
install -d -m 0755 /etc/vsw
cat > /etc/vsw/lab.env <<ENV
# The vsw lab's overlay network (written by scripts/vagrant/services.sh from the Vagrantfile).
# Read by /usr/local/libexec/vsw-lab-network after every start of vsw.service.
VSW_LAB_NETWORK=$VSW_LAB_NETWORK
VSW_LAB_SUBNET=$VSW_LAB_SUBNET
VSW_LAB_VNI=$VSW_LAB_VNI
VSW_LAB_VTEP=$VSW_LAB_VTEP
VSW_LAB_PEERS="${VSW_LAB_PEERS:-}"
# The LAN on the VM's second private network: a transparent network on the NIC with VSW_LAB_LAN_ADDRESS.
VSW_LAB_LAN_NETWORK=${VSW_LAB_LAN_NETWORK:-}
VSW_LAB_LAN_ADDRESS=${VSW_LAB_LAN_ADDRESS:-}
VSW_LAB_LAN_SUBNET=${VSW_LAB_LAN_SUBNET:-}
VSW_LAB_LAN_GATEWAY=${VSW_LAB_LAN_GATEWAY:-}
VSW_LAB_LAN_RANGE=${VSW_LAB_LAN_RANGE:-}
ENV

# "192.168.56.11=vsw1 192.168.56.12=vsw2" -> /etc/hosts, between markers.
if [ -n "${VSW_LAB_HOSTS:-}" ]; then
  sed -i '/^# vsw lab begin$/,/^# vsw lab end$/d' /etc/hosts
  {
    echo '# vsw lab begin'
    for pair in $VSW_LAB_HOSTS; do echo "${pair%%=*} ${pair#*=}"; done
    echo '# vsw lab end'
  } >> /etc/hosts
fi

log "installing vsw.service and vsw-lab-network"
install -D -m 0755 "$dir/scripts/vagrant/lab-network.sh" /usr/local/libexec/vsw-lab-network
install -m 0644 "$dir/scripts/vagrant/vsw.service" /etc/systemd/system/vsw.service
systemctl daemon-reload
systemctl enable vsw.service
# Restart, not start: a re-provision brings a new build, and the daemon must run it.
systemctl restart vsw.service || die "vsw.service did not start: see \`journalctl -u vsw\`."

# ExecStartPost ran it already; run it again so that a failure fails the provisioning.
/usr/local/libexec/vsw-lab-network
/usr/local/bin/vsw network ls
