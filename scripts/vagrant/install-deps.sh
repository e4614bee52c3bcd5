#!/bin/bash
# vsw lab provisioning, step 1 of 3 (Vagrantfile, provisioner "deps"), as root:
# Debian packages (tools, Rust) and Node.js 20. Idempotent.
#
# Rust: Debian 12's rustc and cargo (1.63) build the addon (no external
# crates), so no rustup and no network installer.
# Node.js: vsw needs 20+ and Debian 12 ships 18, so the official nodejs.org
# build, pinned here and checked against its SHA-256 (the values of the
# release's SHASUMS256.txt), goes to /opt/node-v<version>-linux-<arch> with
# node, npm and npx linked from /usr/local/bin. To move to another release,
# change NODE_VERSION and both hashes together.
set -euo pipefail

NODE_VERSION=20.19.5
NODE_SHA256_X64=315046739a513a70e03a4a55a8afda8cf979f30852e576075c340084e3f8ac0f
NODE_SHA256_ARM64=d462267863ae8ee556039ebdf559055a8ec562c633889ef1403f3adb449ba1dd

log() { echo "vsw-lab: $*"; }
die() { echo "vsw-lab: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
log "installing Debian packages"
apt-get update -q
apt-get install -y -q --no-install-recommends \
  iproute2 iperf3 ethtool tcpdump iputils-ping netcat-openbsd python3 nftables \
  build-essential rustc cargo rsync curl ca-certificates xz-utils

case "$(dpkg --print-architecture)" in
  amd64) node_arch=x64 node_sha256=$NODE_SHA256_X64 ;;
  arm64) node_arch=arm64 node_sha256=$NODE_SHA256_ARM64 ;;
  *) die "no pinned Node.js build for $(dpkg --print-architecture) in $0: use an amd64 or arm64 box." ;;
esac
node_name=node-v$NODE_VERSION-linux-$node_arch
node_dir=/opt/$node_name

if [ "$("$node_dir/bin/node" --version 2>/dev/null || true)" = "v$NODE_VERSION" ]; then
  log "Node.js $NODE_VERSION is already in $node_dir"
else
  log "installing Node.js $NODE_VERSION from nodejs.org"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL --retry 3 -o "$tmp/node.tar.xz" "https://nodejs.org/dist/v$NODE_VERSION/$node_name.tar.xz"
  echo "$node_sha256  $tmp/node.tar.xz" | sha256sum --check --status \
    || die "$node_name.tar.xz from nodejs.org does not match its pinned SHA-256 $node_sha256: not installing it."
  tar -xJf "$tmp/node.tar.xz" -C "$tmp" --no-same-owner
  rm -rf "$node_dir"
  mv "$tmp/$node_name" "$node_dir"
fi
for tool in node npm npx; do ln -sfn "$node_dir/bin/$tool" "/usr/local/bin/$tool"; done

log "node $(/usr/local/bin/node --version), npm $(/usr/local/bin/npm --version), $(rustc --version), $(cargo --version), $(iperf3 --version | head -1)"
