#!/usr/bin/env node
// Checks, before the tests or the daemon run, what a clean machine may lack,
// and says in one line what to install. No side effects.
import { accessSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';

const purpose = process.argv[2] ?? 'test';
const tools = {
  ip: 'iproute2',
  ...(purpose === 'test' || purpose === 'bench' ? { iperf3: 'iperf3', ping: 'iputils-ping' } : {}),
  ...(purpose === 'test' ? { nc: 'netcat-openbsd', python3: 'python3', tcpdump: 'tcpdump', ethtool: 'ethtool', nft: 'nftables', tshark: 'tshark', vagrant: 'vagrant', prometheus: 'prometheus' } : {}),
};

function onPath(cmd) {
  // npm puts node_modules/.bin first on PATH, and a JavaScript "nft" lives there: system tools only.
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env.PATH ?? '').split(':').filter((d) => !d.includes('node_modules'))]) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

const problems = [];
if (process.geteuid && process.geteuid() !== 0) problems.push(`the ${purpose === 'test' ? 'tests need' : 'daemon needs'} root (namespaces and TAP devices): run as root or with sudo -E`);
const missing = Object.entries(tools).filter(([cmd]) => !onPath(cmd));
if (missing.length) problems.push(`missing ${missing.map(([c]) => c).join(', ')}: install with \`apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}\``);
if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun does not exist: load the tun module with `modprobe tun`');
if (!existsSync(new URL('../native/vsw_native.node', import.meta.url))) problems.push('the native addon is not built: run `npm run build:native` (needs cargo)');
if (problems.length) {
  console.error(`vsw: ${problems.join('; ')}.`);
  process.exit(1);
}
