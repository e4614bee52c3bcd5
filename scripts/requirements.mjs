// What vsw needs from the machine, in one table: `npm run setup` installs it
// (scripts/setup.mjs) and the preflight before the daemon and the tests checks
// it (scripts/preflight.mjs). A probe is a command on PATH or an absolute path;
// the package is Debian's.
import { accessSync, constants, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';

const daemon = [
  ['ip', 'iproute2'],
  ['nsenter', 'util-linux'],
  ['nft', 'nftables'],
];
const bench = [
  ['iperf3', 'iperf3'],
  ['ping', 'iputils-ping'],
  // The QEMU guests of the vhost-user tests and benchmark (scripts/vm/guest.ts): Debian's kernel with a busybox
  // initramfs that cpio packs (busybox also makes the runtimes' container images).
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['/bin/busybox', 'busybox-static'],
  ['cpio', 'cpio'],
  // /boot exists without a kernel, and slim images drop /usr/share/doc; a kernel package's postinst links /vmlinuz
  // to the kernel it installs (existsSync follows the link), so it is there exactly when a kernel is.
  ['/vmlinuz', 'linux-image-amd64'],
];
const test = [
  ...bench,
  ['nc', 'netcat-openbsd'],
  ['python3', 'python3'],
  ['tcpdump', 'tcpdump'],
  ['ethtool', 'ethtool'],
  // tshark reads the overlay tests' captures; vagrant validates the Vagrantfile; prometheus scrapes the metrics.
  ['tshark', 'tshark'],
  ['vagrant', 'vagrant'],
  ['prometheus', 'prometheus'],
  // The runtimes the CNI plugin and the docker driver are tested with (their containers are made of busybox, above).
  ['podman', 'podman'],
  ['runc', 'runc'],
  ['containerd', 'containerd'],
  ['dockerd', 'docker.io'],
  // The LAN of `scripts/lab up --lan` and its test: dnsmasq is the LAN's DHCP server (dnsmasq-base is the
  // program alone, without the system service the dnsmasq package would install and start).
  ['dnsmasq', 'dnsmasq-base'],
  // dig asks the networks' resolvers in the DNS test (over UDP and TCP, PTR included).
  ['dig', 'bind9-dnsutils'],
  // The network controller keeps its state in etcd; its tests run real members.
  ['etcd', 'etcd-server'],
  ['etcdctl', 'etcd-client'],
  // The controller's TLS test makes its CA and certificates with it.
  ['openssl', 'openssl'],
  ['/usr/lib/cni/loopback', 'containernetworking-plugins'],
  // libcni itself drives the plugin in the conformance test, built with Debian's go from Debian's sources.
  ['go', 'golang-go'],
  ['/usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go', 'golang-github-appc-cni-dev'],
];

/** [probe, package] pairs per purpose: `daemon` runs it, `bench` measures it, `test` passes the tests. */
export const REQUIREMENTS = { daemon, bench: [...daemon, ...bench], test: [...daemon, ...test] };

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export function present(probe) {
  if (probe.startsWith('/')) return existsSync(probe);
  // npm puts node_modules/.bin first on PATH, and a JavaScript "nft" lives there: system tools only.
  for (const dir of [...SYSTEM_DIRS, ...(process.env.PATH ?? '').split(':').filter((d) => d && !d.includes('node_modules'))]) {
    try {
      accessSync(join(dir, probe), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

function userHome(user) {
  try {
    return execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).split(':')[5];
  } catch {
    return undefined;
  }
}

/** cargo, also where PATH under `sudo -E` no longer looks (the invoking user's ~/.cargo/bin). */
export function findCargo() {
  const candidates = [process.env.CARGO];
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir) candidates.push(join(dir, 'cargo'));
  if (process.env.CARGO_HOME) candidates.push(join(process.env.CARGO_HOME, 'bin', 'cargo'));
  candidates.push(join(homedir(), '.cargo', 'bin', 'cargo'));
  const sudoHome = process.env.SUDO_USER ? userHome(process.env.SUDO_USER) : undefined;
  if (sudoHome) candidates.push(join(sudoHome, '.cargo', 'bin', 'cargo'));
  candidates.push('/usr/local/cargo/bin/cargo', '/usr/bin/cargo');
  for (const c of candidates) if (c && existsSync(c)) return { cargo: c, sudoHome };
  return { cargo: undefined, sudoHome };
}

/** The [probe, package] pairs of `purpose` this machine lacks. */
export function missing(purpose) {
  return REQUIREMENTS[purpose].filter(([probe]) => !present(probe));
}
