#!/bin/bash
# vsw lab provisioning, step 2 of 3 (Vagrantfile, provisioner "build"), as root:
# copies the synced checkout (VSW_LAB_SRC, /vagrant) to VSW_LAB_DIR (/opt/vsw)
# and builds it there with `npm ci` (the Rust addon with cargo, then tsc), so
# the host's build artefacts and the VM's never mix. Installs /usr/local/bin/vsw.
# After changing the code on the host: `vagrant rsync && vagrant provision --provision-with build,services`.
set -euo pipefail

src=${VSW_LAB_SRC:-/vagrant}
dir=${VSW_LAB_DIR:-/opt/vsw}

log() { echo "vsw-lab: $*"; }
die() { echo "vsw-lab: $*" >&2; exit 1; }

if [ ! -f "$src/package.json" ] || [ ! -f "$src/native/Cargo.toml" ]; then
  die "no vsw checkout in $src: is the synced folder there? (\`vagrant rsync\` copies it)"
fi
command -v npm >/dev/null || die "npm is missing: run the \"deps\" provisioner first (vagrant provision --provision-with deps)."

log "copying $src to $dir"
mkdir -p "$dir"
# No -o/-g: the copy belongs to root, whoever owns the synced files.
# Excluded paths are neither copied nor deleted: a rebuild reuses native/target.
rsync -rlpt --delete \
  --exclude=/.git/ --exclude=/.vagrant/ --exclude=/node_modules/ --exclude=/dist/ \
  --exclude=/native/target/ --exclude='/native/*.node' --exclude=/native/Cargo.lock \
  --exclude=/bench-results/ \
  "$src/" "$dir/"

log "building vsw in $dir (npm ci: cargo build --release, then tsc)"
cd "$dir"
export HOME=/root CARGO=/usr/bin/cargo
npm ci --no-audit --no-fund

for built in dist/src/cli/main.js native/vsw_native.node; do
  [ -f "$dir/$built" ] || die "npm ci finished but $dir/$built is missing."
done

cat > /usr/local/bin/vsw <<WRAPPER
#!/bin/sh
# The vsw CLI built in $dir (written by scripts/vagrant/build.sh).
exec /usr/local/bin/node $dir/dist/src/cli/main.js "\$@"
WRAPPER
chmod 0755 /usr/local/bin/vsw
log "installed /usr/local/bin/vsw, version $(/usr/local/bin/vsw --version)"
